"""Gmail API v1 (`/gmail/v1/users/{userId}/messages...`) over the sandbox tenant.

Every handler is a plain function from an `ApiRequest` to an `ApiResponse`; the aiohttp routes
and the multipart batch executor (sandbox/gmail_batch.py) both call them through one `Router`,
so a batch part is answered by exactly the code that answers a single call.

Labels come from the canonical folder: inbox -> INBOX, junk -> SPAM, trash/soft_delete -> TRASH,
archive -> none, plus UNREAD while unread. As in Gmail, labels are independent: `trash` adds
TRASH and keeps INBOX (kept in `Copy.extra_labels`, so `untrash` brings the copy back to the
inbox); adding SPAM keeps INBOX too (the pack removes it explicitly); SPAM and TRASH exclude each
other (adding one removes the other). The folder is derived with TRASH > SPAM > INBOX > archive.
Label ids other than INBOX, SPAM, TRASH and UNREAD are refused with 400 (the sandbox stores no
others). A label set that is empty leaves `labelIds` out of the message, as Google's JSON does.

Checks, in order: bearer token (401), scope (403 insufficientPermissions), a subject at all
(400 failedPrecondition), userId vs token subject (403 "Delegation denied for <subject>"),
per-user quota (429 userRateLimitExceeded; Google also uses 403 for it, the sandbox picks 429),
mailbox licensed (400 failedPrecondition "Mail service not enabled"), then the method itself.
"""
from __future__ import annotations

import base64
import datetime
import functools
import json
import re
import urllib.parse
from email.utils import format_datetime
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

from aiohttp import web
from multidict import CIMultiDict, MultiDict

from sandbox import gmail_search
from sandbox.google_oauth import (WWW_AUTHENTICATE, Grant, GoogleState, api_error_body,
                                  insufficient_scopes_body, state_of, unauthenticated_body)
from sandbox.tenant import utc_now

MAIL = "https://mail.google.com/"
MODIFY = "https://www.googleapis.com/auth/gmail.modify"
READONLY = "https://www.googleapis.com/auth/gmail.readonly"
METADATA = "https://www.googleapis.com/auth/gmail.metadata"
READ_SCOPES = frozenset({MAIL, MODIFY, READONLY, METADATA})
WRITE_SCOPES = frozenset({MAIL, MODIFY})
DELETE_SCOPES = frozenset({MAIL})

# quota units per method (Gmail API usage limits)
UNITS = {"list": 5, "get": 5, "trash": 5, "untrash": 5, "modify": 5, "delete": 10,
         "batchModify": 50, "batchDelete": 50}
SYSTEM_LABELS = ("INBOX", "SPAM", "TRASH", "UNREAD")
_ID = re.compile(r"^[0-9a-f]{1,32}$")


# -- request/response model shared by single calls and batch parts ---------------------------
class ApiRequest(object):
    def __init__(self, method: str, path: str, query: MultiDict, headers: CIMultiDict,
                 body: bytes = b""):
        self.method = method.upper()
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.params: Dict[str, str] = {}

    def flag(self, name: str) -> bool:
        return str(self.query.get(name, "")).lower() == "true"

    def json(self) -> dict:
        if not self.body.strip():
            return {}
        data = json.loads(self.body.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("body is not an object")
        return data


class ApiResponse(object):
    def __init__(self, status: int, body: Optional[dict] = None,
                 headers: Optional[Dict[str, str]] = None):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})

    def payload(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode("utf-8")


def error(code: int, message: str, reason: str, status: Optional[str] = None,
          headers: Optional[Dict[str, str]] = None, **extra: str) -> ApiResponse:
    return ApiResponse(code, api_error_body(code, message, reason, status, **extra), headers)


Handler = Callable[[object, ApiRequest], ApiResponse]


class Router(object):
    """(method, path template) -> handler; feeds aiohttp and resolves batch parts."""

    def __init__(self) -> None:
        self.entries: List[Tuple[str, str, "re.Pattern", str, Handler]] = []

    def add(self, method: str, template: str, name: str, handler: Handler) -> None:
        pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")
        self.entries.append((method, template, pattern, name, handler))

    def resolve(self, method: str, path: str) -> Optional[Tuple[str, Handler, Dict[str, str]]]:
        for entry_method, _, pattern, name, handler in self.entries:
            match = pattern.match(path)
            if match and entry_method == method.upper():
                params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
                return name, handler, params
        return None

    def aiohttp_routes(self, sandbox) -> List[web.RouteDef]:
        defs = []
        for method, template, _, name, handler in self.entries:
            defs.append(web.route(method, template, _adapter(sandbox, handler), name=name))
        return defs


def _adapter(sandbox, handler: Handler):
    async def handle(request: web.Request) -> web.Response:
        api_request = ApiRequest(request.method, request.path, MultiDict(request.query),
                                 CIMultiDict(request.headers), await request.read())
        api_request.params = dict(request.match_info)
        return to_web(handler(sandbox, api_request))
    return handle


def to_web(response: ApiResponse) -> web.Response:
    if response.body is None:
        return web.Response(status=response.status, headers=response.headers)
    headers = dict(response.headers)
    headers["Content-Type"] = "application/json; charset=UTF-8"
    return web.Response(status=response.status, body=response.payload(), headers=headers)


# -- labels ----------------------------------------------------------------------------------
def label_set(copy) -> FrozenSet[str]:
    """INBOX/SPAM/TRASH of a copy (UNREAD aside)."""
    labels = set()
    if copy.folder == "inbox":
        labels.add("INBOX")
    elif copy.folder == "junk":
        labels.add("SPAM")
    elif copy.folder in ("trash", "soft_delete"):
        labels.add("TRASH")
    if copy.folder in ("junk", "trash", "soft_delete") and "INBOX" in copy.extra_labels:
        labels.add("INBOX")
    return frozenset(labels)


def label_ids(copy) -> List[str]:
    labels = [] if copy.is_read else ["UNREAD"]
    present = label_set(copy)
    return labels + [name for name in ("INBOX", "SPAM", "TRASH") if name in present]


def folder_for(labels: FrozenSet[str], current: str) -> str:
    if "TRASH" in labels:
        return "soft_delete" if current == "soft_delete" else "trash"
    if "SPAM" in labels:
        return "junk"
    if "INBOX" in labels:
        return "inbox"
    return "archive"


class LabelChangeError(ValueError):
    pass


def plan_labels(copy, add: List[str], remove: List[str]) -> Tuple[FrozenSet[str], bool]:
    """The INBOX/SPAM/TRASH set and read state after adding/removing label ids."""
    for name in list(add) + list(remove):
        if name not in SYSTEM_LABELS:
            raise LabelChangeError("Invalid label: %s" % name)
    if set(add) & set(remove):
        raise LabelChangeError("Cannot both add and remove the same label.")
    if "SPAM" in add and "TRASH" in add:
        raise LabelChangeError("Cannot add both SPAM and TRASH.")
    labels = set(label_set(copy))
    labels -= set(remove)
    for name in add:
        if name == "TRASH":
            labels.discard("SPAM")
        elif name == "SPAM":
            labels.discard("TRASH")
        if name != "UNREAD":
            labels.add(name)
    is_read = copy.is_read
    if "UNREAD" in add:
        is_read = False
    if "UNREAD" in remove:
        is_read = True
    labels.discard("UNREAD")
    return frozenset(labels), is_read


def apply_labels(ctx: "Context", copy, labels: FrozenSet[str], is_read: bool,
                 action: str) -> bool:
    """Put `copy` in the state `labels`/`is_read` through Tenant.change; False if unchanged."""
    if labels == label_set(copy) and is_read == copy.is_read:
        return False
    folder = folder_for(labels, copy.folder)
    tenant = ctx.tenant
    with tenant.lock:
        # INBOX survives under SPAM/TRASH as an extra label; set before the audited change
        if "INBOX" in labels and folder != "inbox":
            copy.extra_labels.add("INBOX")
        else:
            copy.extra_labels.discard("INBOX")
        tenant.change(ctx.grant.actor, ctx.mailbox, copy, action, folder=folder,
                      is_read=is_read)
    ctx.state.touch(copy.id)
    return True


# -- request context and the common checks ---------------------------------------------------
class Context(object):
    def __init__(self, sandbox, state: GoogleState, grant: Grant, mailbox):
        self.sandbox = sandbox
        self.tenant = sandbox.tenant
        self.state = state
        self.grant = grant
        self.mailbox = mailbox


def open_request(sandbox, request: ApiRequest, scopes: FrozenSet[str],
                 method: str) -> Tuple[Optional[Context], Optional[ApiResponse]]:
    """Authenticate, authorise and charge quota; (context, None) or (None, error)."""
    state = state_of(sandbox)
    grant, why = state.authenticate(request.headers.get("Authorization"))
    if grant is None:
        return None, ApiResponse(401, unauthenticated_body(why), WWW_AUTHENTICATE)
    if not grant.scopes & scopes:
        return None, ApiResponse(403, insufficient_scopes_body())
    if method == "list" and request.query.get("q") and not grant.scopes & (scopes - {METADATA}):
        return None, error(403, "Metadata scope does not support 'q' parameter", "forbidden")
    if not grant.subject:
        return None, error(400, "Precondition check failed.", "failedPrecondition",
                           "FAILED_PRECONDITION")
    user_id = request.params.get("userId", "me")
    if user_id != "me" and user_id.lower() != grant.subject.lower():
        return None, error(403, "Delegation denied for %s" % grant.subject, "forbidden")
    wait = state.charge(grant.subject, UNITS[method])
    if wait is not None:
        return None, quota_exceeded(sandbox, wait)
    tenant = sandbox.tenant
    with tenant.lock:
        mailbox = tenant.mailbox(grant.subject)
    if mailbox is None or mailbox.provider != "google" or mailbox.kind == "unlicensed":
        return None, error(400, "Mail service not enabled", "failedPrecondition",
                           "FAILED_PRECONDITION")
    return Context(sandbox, state, grant, mailbox), None


def quota_exceeded(sandbox, wait_s: float) -> ApiResponse:
    """Gmail's wording for a user over quota; like Google, no Retry-After header (the time is
    in the message only)."""
    retry_at = utc_now() + datetime.timedelta(seconds=wait_s)
    message = "User-rate limit exceeded.  Retry after %s" % (
        retry_at.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (retry_at.microsecond // 1000))
    return error(429, message, "userRateLimitExceeded", domain="usageLimits")


def not_found() -> ApiResponse:
    return error(404, "Requested entity was not found.", "notFound")


def invalid(message: str) -> ApiResponse:
    return error(400, message, "invalidArgument")


def find_copy(ctx: Context, message_id: str) -> Tuple[Optional[object], Optional[ApiResponse]]:
    if not _ID.match(message_id):
        return None, invalid("Invalid id value")
    with ctx.tenant.lock:
        copy = ctx.mailbox.copies.get(message_id)
    if copy is None or copy.folder == "purged":
        return None, not_found()
    return copy, None


# -- message representations -----------------------------------------------------------------
def _rfc2822(value: datetime.datetime) -> str:
    """The Date header, cached: a campaign's copies share one delivery time. The offset is
    part of the key (one instant in two zones: equal datetimes, different text)."""
    return _format_datetime(value, value.utcoffset())


@functools.lru_cache(maxsize=1024)
def _format_datetime(value: datetime.datetime,
                     offset: Optional[datetime.timedelta]) -> str:
    return format_datetime(value)


def _headers(ctx: Context, copy) -> List[Dict[str, str]]:
    return [
        {"name": "Message-ID", "value": copy.message_id},
        {"name": "Date", "value": _rfc2822(copy.received_at)},
        {"name": "From", "value": copy.sender},
        {"name": "To", "value": ctx.mailbox.address},
        {"name": "Subject", "value": copy.subject},
    ]


def _raw(ctx: Context, copy) -> bytes:
    lines = ["%s: %s" % (h["name"], h["value"]) for h in _headers(ctx, copy)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def message_resource(ctx: Context, copy, fmt: str = "minimal",
                     wanted: Optional[List[str]] = None) -> dict:
    body = {"id": copy.id, "threadId": copy.thread_id or copy.id}
    labels = label_ids(copy)
    if labels:
        body["labelIds"] = labels
    if fmt == "short":  # what trash/untrash/modify answer
        return body
    raw = _raw(ctx, copy)
    body.update({
        "snippet": "",
        "sizeEstimate": len(raw),
        "historyId": ctx.state.history_id(copy.id),
        "internalDate": str(int(copy.received_at.timestamp() * 1000)),
    })
    if fmt == "raw":
        body["raw"] = base64.urlsafe_b64encode(raw).decode("ascii")
    elif fmt in ("metadata", "full"):
        headers = _headers(ctx, copy)
        if fmt == "metadata" and wanted:
            names = {w.lower() for w in wanted}
            headers = [h for h in headers if h["name"].lower() in names]
        body["payload"] = {"partId": "", "mimeType": "text/plain", "filename": "",
                           "headers": headers, "body": {"size": 0}}
    return body


# -- handlers --------------------------------------------------------------------------------
def messages_list(sandbox, request: ApiRequest) -> ApiResponse:
    ctx, failure = open_request(sandbox, request, READ_SCOPES, "list")
    if failure:
        return failure
    try:
        max_results = int(request.query.get("maxResults", "100"))
        offset = int(request.query.get("pageToken") or "0")
    except ValueError:
        return invalid("Invalid value for maxResults or pageToken")
    if max_results < 1 or offset < 0:
        return invalid("Invalid value for maxResults or pageToken")
    max_results = min(max_results, 500)  # Gmail caps maxResults at 500
    wanted_labels = set(request.query.getall("labelIds", []))
    with ctx.tenant.lock:
        copies = [c for c in ctx.mailbox.copies.values() if c.folder != "purged"]
        copies.sort(key=lambda c: (c.received_at, c.id), reverse=True)  # newest first
        threads = {c.id: c.thread_id or c.id for c in copies}
        candidates = [gmail_search.Candidate(c.id, c.message_id, c.subject, c.sender,
                                             ctx.mailbox.address, frozenset(label_ids(c)))
                      for c in copies]
    hits = gmail_search.search(request.query.get("q", ""), candidates,
                               include_spam_trash=request.flag("includeSpamTrash"))
    if wanted_labels:
        hits = [h for h in hits if wanted_labels <= h.labels]
    page = hits[offset:offset + max_results]
    body: dict = {}
    if page:
        body["messages"] = [{"id": h.key, "threadId": threads[h.key]} for h in page]
    if offset + max_results < len(hits):
        body["nextPageToken"] = str(offset + max_results)
    body["resultSizeEstimate"] = len(hits)
    return ApiResponse(200, body)


def messages_get(sandbox, request: ApiRequest) -> ApiResponse:
    ctx, failure = open_request(sandbox, request, READ_SCOPES, "get")
    if failure:
        return failure
    fmt = str(request.query.get("format", "full")).lower()
    if fmt not in ("minimal", "metadata", "full", "raw"):
        return invalid("Invalid value for format: %s" % fmt)
    if fmt in ("full", "raw") and not ctx.grant.scopes & (READ_SCOPES - {METADATA}):
        return error(403, "Metadata scope doesn't allow format %s" % fmt.upper(), "forbidden")
    copy, failure = find_copy(ctx, request.params["id"])
    if failure:
        return failure
    with ctx.tenant.lock:
        body = message_resource(ctx, copy, fmt, request.query.getall("metadataHeaders", []))
    return ApiResponse(200, body)


LabelLists = Callable[[ApiRequest], Tuple[List[str], List[str]]]


def _relabel(sandbox, request: ApiRequest, method: str, lists: LabelLists) -> ApiResponse:
    ctx, failure = open_request(sandbox, request, WRITE_SCOPES, method)
    if failure:
        return failure
    try:
        add, remove = lists(request)
    except ValueError:
        return error(400, "Invalid JSON payload received.", "badRequest")
    copy, failure = find_copy(ctx, request.params["id"])
    if failure:
        return failure
    with ctx.tenant.lock:
        try:
            labels, is_read = plan_labels(copy, add, remove)
        except LabelChangeError as exc:
            return invalid(str(exc))
        apply_labels(ctx, copy, labels, is_read, method)
        return ApiResponse(200, message_resource(ctx, copy, "short"))


def messages_trash(sandbox, request: ApiRequest) -> ApiResponse:
    return _relabel(sandbox, request, "trash", lambda _: (["TRASH"], []))


def messages_untrash(sandbox, request: ApiRequest) -> ApiResponse:
    return _relabel(sandbox, request, "untrash", lambda _: ([], ["TRASH"]))


def _label_lists(request: ApiRequest) -> Tuple[List[str], List[str]]:
    body = request.json()
    add = body.get("addLabelIds") or []
    remove = body.get("removeLabelIds") or []
    if not isinstance(add, list) or not isinstance(remove, list):
        raise ValueError("addLabelIds and removeLabelIds must be lists")
    return [str(x) for x in add], [str(x) for x in remove]


def messages_modify(sandbox, request: ApiRequest) -> ApiResponse:
    return _relabel(sandbox, request, "modify", _label_lists)


def messages_delete(sandbox, request: ApiRequest) -> ApiResponse:
    ctx, failure = open_request(sandbox, request, DELETE_SCOPES, "delete")
    if failure:
        return failure
    copy, failure = find_copy(ctx, request.params["id"])
    if failure:
        return failure
    _purge(ctx, copy)
    return ApiResponse(204)


def _purge(ctx: Context, copy) -> None:
    with ctx.tenant.lock:
        copy.extra_labels.discard("INBOX")
        ctx.tenant.change(ctx.grant.actor, ctx.mailbox, copy, "delete", folder="purged")
    ctx.state.touch(copy.id)


def _batch_ids(request: ApiRequest) -> List[str]:
    ids = request.json().get("ids") or []
    if not isinstance(ids, list) or not ids:
        raise ValueError("ids must be a non-empty list")
    if len(ids) > 1000:
        raise ValueError("Too many ids: at most 1000 per call.")
    ids = [str(x) for x in ids]
    if any(not _ID.match(i) for i in ids):
        raise ValueError("Invalid id value")
    return ids


def messages_batch_modify(sandbox, request: ApiRequest) -> ApiResponse:
    """Unknown (well-formed) ids are skipped, as Gmail's batch methods promise nothing per id."""
    ctx, failure = open_request(sandbox, request, WRITE_SCOPES, "batchModify")
    if failure:
        return failure
    try:
        add, remove = _label_lists(request)
        ids = _batch_ids(request)
    except ValueError as exc:
        return invalid(str(exc))
    with ctx.tenant.lock:
        copies = [ctx.mailbox.copies.get(i) for i in ids]
        copies = [c for c in copies if c is not None and c.folder != "purged"]
        try:
            plans = [(c, plan_labels(c, add, remove)) for c in copies]
        except LabelChangeError as exc:
            return invalid(str(exc))
        for copy, (labels, is_read) in plans:
            apply_labels(ctx, copy, labels, is_read, "modify")
    return ApiResponse(204)


def messages_batch_delete(sandbox, request: ApiRequest) -> ApiResponse:
    ctx, failure = open_request(sandbox, request, DELETE_SCOPES, "batchDelete")
    if failure:
        return failure
    try:
        ids = _batch_ids(request)
    except ValueError as exc:
        return invalid(str(exc))
    with ctx.tenant.lock:
        for message_id in ids:
            copy = ctx.mailbox.copies.get(message_id)
            if copy is not None and copy.folder != "purged":
                _purge(ctx, copy)
    return ApiResponse(204)


PREFIX = "/gmail/v1/users/{userId}/messages"
ROUTER = Router()
ROUTER.add("GET", PREFIX, "gmail.messages.list", messages_list)
ROUTER.add("POST", PREFIX + "/batchModify", "gmail.messages.batchModify",
           messages_batch_modify)
ROUTER.add("POST", PREFIX + "/batchDelete", "gmail.messages.batchDelete",
           messages_batch_delete)
ROUTER.add("GET", PREFIX + "/{id}", "gmail.messages.get", messages_get)
ROUTER.add("DELETE", PREFIX + "/{id}", "gmail.messages.delete", messages_delete)
ROUTER.add("POST", PREFIX + "/{id}/trash", "gmail.messages.trash", messages_trash)
ROUTER.add("POST", PREFIX + "/{id}/untrash", "gmail.messages.untrash", messages_untrash)
ROUTER.add("POST", PREFIX + "/{id}/modify", "gmail.messages.modify", messages_modify)


def routes(sandbox) -> List[web.RouteDef]:
    return ROUTER.aiohttp_routes(sandbox)
