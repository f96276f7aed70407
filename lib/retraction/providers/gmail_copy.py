"""One copy in a Gmail run: its state, its API calls, and the Gmail label rules.

Gmail has no folders: INBOX, SPAM and TRASH are labels, and independent ones (a trashed message
may keep INBOX, so `untrash` puts it back in the inbox). The canonical folder is read with
TRASH > SPAM > INBOX > archive; `next_action` gives the one call that brings a copy closer to
the destination (the DESIGN mapping), repeated until `in_destination` holds.
"""
from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any, Dict, Iterable, List, Optional, Tuple

from retraction.model import Destination
from retraction.providers.base import Target

MAX_HITS = 10  # a Message-ID names one message; more hits than this is a widened query
MAX_STEPS = 3  # untrash + modify is the longest path to a destination
GMAIL_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def folder_of(labels: Iterable[str]) -> str:
    """The canonical folder of a Gmail message from its system labels."""
    labels = set(labels)
    if "TRASH" in labels:
        return "trash"
    if "SPAM" in labels:
        return "junk"
    if "INBOX" in labels:
        return "inbox"
    return "archive"  # received mail without INBOX/SPAM/TRASH is archived


def in_destination(labels: Iterable[str], destination: Destination) -> bool:
    labels = set(labels)
    if destination == Destination.INBOX:
        return "INBOX" in labels and not labels & {"SPAM", "TRASH"}
    if destination == Destination.JUNK:
        return "SPAM" in labels and "TRASH" not in labels
    if destination in (Destination.TRASH, Destination.SOFT_DELETE):
        return "TRASH" in labels  # Gmail has no dumpster: soft delete is the trash
    return False  # hard_delete: a copy that can still be listed is not deleted


def next_action(labels: Iterable[str], destination: Destination
                ) -> Optional[Tuple[str, Optional[dict]]]:
    """(method, body) that brings a copy with `labels` closer to `destination`; None if there."""
    labels = set(labels)
    if in_destination(labels, destination):
        return None
    if destination == Destination.HARD_DELETE:
        return "delete", None
    if destination in (Destination.TRASH, Destination.SOFT_DELETE):
        return "trash", None
    if "TRASH" in labels:  # out of the trash first: modify does not touch TRASH reliably
        return "untrash", None
    if destination == Destination.INBOX:
        return "modify", {"addLabelIds": ["INBOX"], "removeLabelIds": ["SPAM"]}
    return "modify", {"addLabelIds": ["SPAM"], "removeLabelIds": ["INBOX"]}


def message_id_header(response: dict) -> Optional[str]:
    for header in (response.get("payload") or {}).get("headers") or []:
        if str(header.get("name", "")).lower() == "message-id":
            return str(header.get("value", "")).strip()
    return None


class CopyTask:
    """One copy (target) in flight."""

    __slots__ = ("target", "subject", "deadline", "attempts", "creds", "pending", "hits",
                 "matches", "was_read", "source_folder", "done")

    def __init__(self, target: Target, deadline: float):
        self.target = target
        self.subject = target.recipient
        self.deadline = deadline
        self.attempts = 1
        self.creds: Any = None
        self.pending = 0  # gets, then moves, still outstanding
        self.hits: List[str] = []
        self.matches: List[Tuple[str, List[str]]] = []
        self.was_read: Optional[bool] = None
        self.source_folder: Optional[str] = None
        self.done = False


class Call:
    """One Gmail API call of one task: a batch part."""

    __slots__ = ("task", "method", "gmail_id", "body", "tries", "steps")

    def __init__(self, task: CopyTask, method: str, gmail_id: str = "",
                 body: Optional[dict] = None, steps: int = 0):
        self.task = task
        self.method = method
        self.gmail_id = gmail_id
        self.body = body
        self.tries = 1
        self.steps = steps

    def build(self, messages: Any, query: str) -> Any:
        user = self.task.subject
        if self.method == "list":
            return messages.list(userId=user, q=query, includeSpamTrash=True,
                                 maxResults=MAX_HITS)
        if self.method == "get":
            return messages.get(userId=user, id=self.gmail_id, format="metadata",
                                metadataHeaders=["Message-ID"])
        if self.method == "modify":
            return messages.modify(userId=user, id=self.gmail_id, body=self.body)
        return getattr(messages, self.method)(userId=user, id=self.gmail_id)


MAX_SHAPES = 64
# Stand-ins for the path values while a request shape is built: unreserved characters only, so
# the library leaves them as they are and each one is found once in the URI.
_PATH_STANDINS = {"userId": "zq7userIdStandIn", "id": "zq7idStandIn"}
# A value for the check that the shape quotes as the library does: every character an address
# may hold, and more (the check runs once per shape).
_PROBE = "a.b!$&'*+-=^_`~|/?#%:;,[] \u00e9@x-y.example"


class Shape:
    """One request shape (method and its fixed arguments) cut into the text around its path
    values, for the URI and for the part's request target; None as `uri` when the shape cannot
    be reproduced exactly (see `RequestCache`), None as `target` when its URI must be split."""

    __slots__ = ("uri", "target", "host", "names", "template")

    def __init__(self, names: List[str], template: Any):
        self.uri: Optional[List[str]] = None
        self.target: Optional[List[str]] = None
        self.host = ""
        self.names = names
        self.template = template


class RequestCache:
    """The HttpRequest of a Call, the discovery method's work done once per shape.

    googleapiclient's `Resource.method` checks the arguments, serialises the body, encodes the
    query and expands the path on every call (about 0.1-0.2 ms of CPU). Only the path values
    (the mailbox and the message id) differ from call to call of a run: the query (the
    Message-ID search), the body and the headers are the library's own output for the shape,
    made once. Each path value is percent-encoded as uritemplate does it for googleapiclient
    (`quote(value.encode("utf-8"), safe="")`, the simple `{var}` expansion); a shape whose
    library URI for a probe value differs from ours, and any value that is not a str, go
    through the library's method instead."""

    def __init__(self, messages: Any):
        self._messages = messages
        self._shapes: Dict[Tuple[str, ...], Shape] = {}

    def build(self, call: "Call", query: str) -> Any:
        key: Tuple[str, ...] = (call.method, query) if call.method == "list" else (call.method,)
        if call.body is not None:
            key += (json.dumps(call.body),)
        shape = self._shapes.get(key)
        if shape is None:
            if len(self._shapes) >= MAX_SHAPES:  # a list shape per Message-ID: stay bounded
                self._shapes.clear()
            shape = self._shapes[key] = self._shape(call, query)
        values = [call.task.subject, call.gmail_id][:len(shape.names)]
        if shape.uri is None or any(type(value) is not str for value in values):
            return call.build(self._messages, query)
        return self._request(shape, values)

    @staticmethod
    def _request(shape: Shape, values: List[str]) -> Any:
        from googleapiclient.http import HttpRequest

        quoted = [urllib.parse.quote(value.encode("utf-8"), safe="") for value in values]
        t = shape.template
        request = HttpRequest(t.http, t.postproc, _fill(shape.uri, quoted), method=t.method,
                              body=t.body, headers=dict(t.headers), methodId=t.methodId,
                              resumable=t.resumable)
        if shape.target is not None:  # read by the batch writer (gmail_batch)
            request.wire_target = (_fill(shape.target, quoted), shape.host)
        return request

    def _shape(self, call: "Call", query: str) -> Shape:
        from retraction.providers.gmail_batch import wire_target

        names = ["userId"] if call.method == "list" else ["userId", "id"]
        shape = Shape(names, self._library(call, query, [_PATH_STANDINS[n] for n in names]))
        uri = _cut(shape.template.uri, [_PATH_STANDINS[n] for n in names])
        target, host = wire_target(shape.template.uri)
        target_pieces = _cut(target, [_PATH_STANDINS[n] for n in names])
        if uri is None:
            return shape
        probe = self._library(call, query, [_PROBE] * len(names))
        shape.uri, shape.target, shape.host = uri, target_pieces, host
        mine = self._request(shape, [_PROBE] * len(names))
        if not (all(getattr(probe, name) == getattr(mine, name) for name in (
                "uri", "method", "body", "headers", "methodId", "resumable"))
                and _model_of(probe.postproc) == _model_of(mine.postproc)):
            shape.uri = shape.target = None
        elif getattr(mine, "wire_target", None) != wire_target(probe.uri):
            shape.target = None
        return shape

    def _library(self, call: "Call", query: str, values: List[str]) -> Any:
        stand_in = Call(CopyTask(Target(values[0], None), 0.0), call.method,
                        values[1] if len(values) > 1 else "", call.body)
        return stand_in.build(self._messages, query)


def _model_of(postproc: Any) -> Tuple[Any, Any]:
    """A request's response model (`delete` gets a new RawModel per call): function and type."""
    return getattr(postproc, "__func__", postproc), type(getattr(postproc, "__self__", None))


def _cut(text: str, stand_ins: List[str]) -> Optional[List[str]]:
    """`text` cut around each stand-in (each found exactly once, in order), or None."""
    pieces = [text]
    for stand_in in stand_ins:
        split = pieces.pop().split(stand_in)
        if len(split) != 2:
            return None
        pieces.extend(split)
    return pieces


def _fill(pieces: List[str], values: List[str]) -> str:
    if len(values) == 1:
        return pieces[0] + values[0] + pieces[1]
    return pieces[0] + values[0] + pieces[1] + values[1] + pieces[2]
