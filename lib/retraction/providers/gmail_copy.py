"""One copy in a Gmail run: its state, its API calls, and the Gmail label rules.

Gmail has no folders: INBOX, SPAM and TRASH are labels, and independent ones (a trashed message
may keep INBOX, so `untrash` puts it back in the inbox). The canonical folder is read with
TRASH > SPAM > INBOX > archive; `next_action` gives the one call that brings a copy closer to
the destination (the DESIGN mapping), repeated until `in_destination` holds.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, List, Optional, Tuple

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
