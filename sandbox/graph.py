"""Microsoft Graph v1.0, mail part: messages, mail folders, move/delete, and the dispatcher.

Every Graph operation is one entry of `OPERATIONS`; a direct HTTP request and a `$batch` item
go through the same `dispatch()` (route match, permission, mailbox, throttle, operation), so
the rules exist once. Group expansion lives in graph_directory.py, `$batch` in graph_batch.py.

Wire choices the docs leave open are listed in sandbox/README.md (DELETE lands in Recoverable
Items Deletions; the plain message list does not see Recoverable Items).
"""
from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import quote, urlencode

from aiohttp import web

from sandbox.entra import issuer
from sandbox.tenant import Copy, Mailbox

PREFIX = "/v1.0"
MAIL_READ = frozenset({"Mail.Read", "Mail.ReadWrite"})
MAIL_WRITE = frozenset({"Mail.ReadWrite"})

# canonical folder -> (Graph well-known name, displayName)
FOLDER_NAMES = {
    "inbox": ("inbox", "Inbox"),
    "junk": ("junkemail", "Junk Email"),
    "trash": ("deleteditems", "Deleted Items"),
    "soft_delete": ("recoverableitemsdeletions", "Deletions"),
    "archive": ("archive", "Archive"),
}
WELL_KNOWN = {graph: canonical for canonical, (graph, _) in FOLDER_NAMES.items()}
LISTED_FOLDERS = ("inbox", "junk", "trash", "archive")  # what /users/{u}/messages sees

MESSAGE_FIELDS = ("id", "receivedDateTime", "subject", "isRead", "parentFolderId",
                  "internetMessageId", "from")
FOLDER_FIELDS = ("id", "displayName", "parentFolderId", "childFolderCount", "unreadItemCount",
                 "totalItemCount", "isHidden")
RAOP = ("Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly "
        "AccessPolicy settings.")
ACCESS_DENIED = "Access is denied. Check credentials and try again."
NOT_FOUND = "The specified object was not found in the store."
PREFER_IMMUTABLE = re.compile(r'IdType\s*=\s*"?ImmutableId"?', re.IGNORECASE)


# -- calls and results ---------------------------------------------------------------------------
@dataclass
class GraphCall:
    method: str
    path: str  # percent-decoded, relative to /v1.0, starting with "/"
    query: Dict[str, str]
    headers: Dict[str, str]  # lower-case names
    body: Any
    claims: Dict[str, Any]
    base_url: str  # https://host:port/v1.0
    params: Dict[str, str] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return self.claims.get("appid", "")

    @functools.cached_property
    def immutable_ids(self) -> bool:  # asked by the operation and again by _finish
        return bool(PREFER_IMMUTABLE.search(self.headers.get("prefer", "")))


@dataclass
class GraphResult:
    status: int
    body: Any = None
    headers: Dict[str, str] = field(default_factory=dict)


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_result(sandbox, call_headers: Dict[str, str], err: GraphError) -> GraphResult:
    context = sandbox.error_context(headers=call_headers)
    headers = {"Content-Type": "application/json", "request-id": context["request-id"],
               "client-request-id": context["client-request-id"]}
    headers.update(err.headers)
    return GraphResult(err.status, {"error": {"code": err.code, "message": err.message,
                                              "innerError": context}}, headers)


# -- ids ---------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def new_message_id() -> str:
    return "AAMkAG" + _b64(uuid.uuid4().bytes + uuid.uuid4().bytes[:8])


def immutable_id(copy: Copy) -> str:
    if not copy.immutable_id:
        copy.immutable_id = "AAkALgAA" + _b64(uuid.uuid4().bytes + uuid.uuid4().bytes[:6])
    return copy.immutable_id


_FOLDER_IDS: Dict[Tuple[str, str], str] = {}


def folder_id(tenant_id: str, address: str, folder: str) -> str:
    key = (address.lower(), folder)
    found = _FOLDER_IDS.get(key)
    if found is None:
        digest = hashlib.sha256(("%s|%s|%s" % (tenant_id, key[0], folder)).encode()).digest()
        found = _FOLDER_IDS[key] = "AQMkA" + _b64(digest)[:43] + "AAAA=="
        if len(_FOLDER_IDS) > 100000:
            _FOLDER_IDS.clear()
    return found


def resolve_folder(tenant_id: str, box: Mailbox, name_or_id: str) -> Optional[str]:
    """Canonical folder for a well-known name or this mailbox's opaque folder id."""
    canonical = WELL_KNOWN.get(name_or_id.lower())
    if canonical:
        return canonical
    for canonical in FOLDER_NAMES:
        if folder_id(tenant_id, box.address, canonical) == name_or_id:
            return canonical
    return None


# -- OData -------------------------------------------------------------------------------------
_FILTER = re.compile(r"^\s*(\w+)\s+eq\s+'((?:[^']|'')*)'\s*$")


def parse_eq_filter(text: str, properties: Tuple[str, ...]) -> Tuple[str, str]:
    """`<property> eq '<literal>'` -> (property, value). The literal is an OData string: `''`
    is one quote; anything else (or, and, functions, a lone quote) is refused, so a crafted
    value can only ever be compared for exact equality."""
    match = _FILTER.match(text)
    if not match:
        raise GraphError(400, "BadRequest", "Invalid filter clause")
    prop = next((p for p in properties if p.lower() == match.group(1).lower()), None)
    if prop is None:
        raise GraphError(400, "BadRequest", "Invalid filter clause")
    return prop, match.group(2).replace("''", "'")


@functools.lru_cache(maxsize=None)
def _by_lower_name(allowed: Tuple[str, ...]) -> Dict[str, str]:
    index: Dict[str, str] = {}
    for name in allowed:
        index.setdefault(name.lower(), name)  # the first of equal names, as a scan finds it
    return index


def parse_select(call: GraphCall, allowed: Tuple[str, ...], type_name: str
                 ) -> Optional[List[str]]:
    raw = call.query.get("$select")
    if raw is None:
        return None
    chosen = []
    index = _by_lower_name(allowed)
    for part in raw.split(","):
        name = part.strip()
        match = index.get(name.lower())
        if match is None:
            raise GraphError(400, "RequestBroker--ParseUri", "Could not find a property named "
                             "'%s' on type '%s'." % (name, type_name))
        chosen.append(match)
    return chosen


def _int_option(call: GraphCall, name: str, default: int, low: int, high: int) -> int:
    raw = call.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not low <= value <= high:
        raise GraphError(400, "BadRequest", "Invalid value '%s' for query option '%s'."
                         % (raw, name))
    return value


SUPPORTED_OPTIONS = ("$filter", "$select", "$top", "$skip", "$skiptoken", "$count", "$orderby")


def check_options(call: GraphCall) -> None:
    for name in call.query:
        if name.startswith("$") and name not in SUPPORTED_OPTIONS:
            raise GraphError(400, "BadRequest", "Query option '%s' is not supported." % name)
    if "$orderby" in call.query and call.query["$orderby"].strip() not in (
            "receivedDateTime desc", "receivedDateTime DESC"):
        raise GraphError(400, "BadRequest", "The sandbox orders by receivedDateTime desc only.")


def page(call: GraphCall, items: List[Any], default_top: int = 10, max_top: int = 1000,
         skiptoken: bool = False) -> Tuple[List[Any], Optional[str]]:
    """One page of `items` and the @odata.nextLink of the next one: `$skip` for mail (as
    Outlook does), an opaque `$skiptoken` for directory objects."""
    top = _int_option(call, "$top", default_top, 1, max_top)
    if skiptoken:
        skip = _decode_skiptoken(call.query.get("$skiptoken"))
    else:
        skip = _int_option(call, "$skip", 0, 0, 10 ** 9)
    chunk = items[skip:skip + top]
    if skip + top >= len(items):
        return chunk, None
    query = dict(call.query)
    if skiptoken:
        query["$skiptoken"] = "RFNwdAoAAQAAA" + _b64(("offset:%d" % (skip + top)).encode())
    else:
        query["$skip"] = str(skip + top)
    link = "%s%s?%s" % (call.base_url, quote(call.path, safe="/@"),
                        urlencode(query, quote_via=quote, safe="$"))
    return chunk, link


def _decode_skiptoken(token: Optional[str]) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token[len("RFNwdAoAAQAAA"):].encode()).decode()
        return int(text.split(":", 1)[1])
    except (ValueError, IndexError):
        raise GraphError(400, "Request_BadRequest", "Invalid skip token.")


def project(data: Dict[str, Any], fields: Optional[List[str]]) -> Dict[str, Any]:
    if fields is None:
        return data
    keep = {"@odata.etag", "id"}.union(fields)
    return {k: v for k, v in data.items() if k in keep}


# -- representations -----------------------------------------------------------------------------
def _utc_text(value: datetime) -> str:
    """receivedDateTime, cached: a campaign's copies share one delivery time. The offset is
    part of the key (one instant in two zones: equal datetimes, different text)."""
    return _strftime(value, value.utcoffset())


@functools.lru_cache(maxsize=1024)
def _strftime(value: datetime, offset: Optional[timedelta]) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def message_json(tenant_id: str, box: Mailbox, copy: Copy, immutable: bool) -> Dict[str, Any]:
    sender = copy.sender or ""
    return {
        "@odata.etag": 'W/"CQAAABYAAAA%s"' % hashlib.md5(
            ("%s%s%s" % (copy.id, copy.folder, copy.is_read)).encode()).hexdigest()[:20],
        "id": immutable_id(copy) if immutable else copy.id,
        "receivedDateTime": _utc_text(copy.received_at),
        "subject": copy.subject,
        "isRead": copy.is_read,
        "parentFolderId": folder_id(tenant_id, box.address, copy.folder),
        "internetMessageId": copy.message_id,
        "from": {"emailAddress": {"name": sender.split("@")[0], "address": sender}},
    }


def folder_json(tenant_id: str, box: Mailbox, folder: str) -> Dict[str, Any]:
    copies = [c for c in box.copies.values() if c.folder == folder]
    return {
        "id": folder_id(tenant_id, box.address, folder),
        "displayName": FOLDER_NAMES[folder][1],
        "parentFolderId": folder_id(tenant_id, box.address, "msgfolderroot"),
        "childFolderCount": 0,
        "unreadItemCount": sum(1 for c in copies if not c.is_read),
        "totalItemCount": len(copies),
        "isHidden": folder == "soft_delete",
    }


def _context(call: GraphCall, entity: str, fields: Optional[List[str]]) -> str:
    selected = "(%s)" % ",".join(fields) if fields else ""
    return "%s%s%s" % (_users_context(call.base_url, call.params.get("upn", "")), entity,
                       selected)


@functools.lru_cache(maxsize=4096)
def _users_context(base_url: str, upn: str) -> str:
    """A mailbox's @odata.context prefix, asked by each of its calls (quote() is slow)."""
    base = base_url.rsplit("/v1.0", 1)[0]
    return "%s/v1.0/$metadata#users('%s')/" % (base, quote(upn, safe=""))


# -- mailbox resolution ------------------------------------------------------------------------
def resolve_mailbox(sandbox, upn: str) -> Mailbox:
    tenant = sandbox.tenant
    box = tenant.mailbox(upn)
    if box is None or box.provider != "microsoft":
        raise GraphError(404, "ErrorInvalidUser", "The requested user '%s' is invalid." % upn)
    if box.kind == "unlicensed":
        raise GraphError(404, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, "
                         "soft-deleted, or is hosted on-premise.")
    if box.kind == "not_discoverable":
        raise GraphError(404, "ResourceNotFound", "Resource could not be discovered.")
    if box.kind == "policy_blocked":
        raise GraphError(403, "ErrorAccessDenied", RAOP)
    return box


def find_copy(box: Mailbox, copy_id: str) -> Copy:
    copy = box.copies.get(copy_id)
    if copy is None:
        copy = next((c for c in box.copies.values() if c.immutable_id == copy_id), None)
    if copy is None or copy.folder == "purged":
        raise GraphError(404, "ErrorItemNotFound", NOT_FOUND)
    return copy


# -- operations (run under tenant.lock, after permission, mailbox and throttle checks) ------------
def op_list_messages(sandbox, call: GraphCall, box: Mailbox) -> GraphResult:
    tenant_id = sandbox.tenant.tenant_id
    check_options(call)
    fields = parse_select(call, MESSAGE_FIELDS, "Microsoft.OutlookServices.Message")
    if "folder" in call.params:
        folder = resolve_folder(tenant_id, box, call.params["folder"])
        if folder is None:
            raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
        folders: Tuple[str, ...] = (folder,)
    else:
        folders = LISTED_FOLDERS
    wanted = None
    if "$filter" in call.query:
        _, wanted = parse_eq_filter(call.query["$filter"], ("internetMessageId",))
    copies = [c for c in box.copies.values() if c.folder in folders
              and (wanted is None or c.message_id == wanted)]
    copies.sort(key=lambda c: (c.received_at, c.id), reverse=True)
    chunk, next_link = page(call, copies)
    immutable = call.immutable_ids
    body: Dict[str, Any] = {"@odata.context": _context(call, "messages", fields),
                            "value": [project(message_json(tenant_id, box, c, immutable), fields)
                                      for c in chunk]}
    if next_link:
        body["@odata.nextLink"] = next_link
    return GraphResult(200, body)


def op_get_message(sandbox, call: GraphCall, box: Mailbox) -> GraphResult:
    fields = parse_select(call, MESSAGE_FIELDS, "Microsoft.OutlookServices.Message")
    copy = find_copy(box, call.params["id"])
    data = project(message_json(sandbox.tenant.tenant_id, box, copy, call.immutable_ids),
                   fields)
    data["@odata.context"] = _context(call, "messages/$entity", fields)
    return GraphResult(200, data)


def op_get_folder(sandbox, call: GraphCall, box: Mailbox) -> GraphResult:
    tenant_id = sandbox.tenant.tenant_id
    fields = parse_select(call, FOLDER_FIELDS, "Microsoft.OutlookServices.MailFolder")
    folder = resolve_folder(tenant_id, box, call.params["folder"])
    if folder is None:
        raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
    data = project(folder_json(tenant_id, box, folder), fields)
    data["@odata.context"] = _context(call, "mailFolders/$entity", fields)
    return GraphResult(200, data)


def op_move(sandbox, call: GraphCall, box: Mailbox) -> GraphResult:
    tenant = sandbox.tenant
    body = call.body if isinstance(call.body, dict) else None
    if body is None:
        raise GraphError(400, "ErrorInvalidRequest", "Empty Payload. JSON content expected.")
    copy = find_copy(box, call.params["id"])
    destination = body.get("destinationId")
    folder = (resolve_folder(tenant.tenant_id, box, destination)
              if isinstance(destination, str) else None)
    if folder is None:
        raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
    if folder != copy.folder:
        tenant.change(call.actor, box, copy, "move", folder=folder,
                      new_copy_id=new_message_id())
    data = message_json(tenant.tenant_id, box, copy, call.immutable_ids)
    data["@odata.context"] = _context(call, "messages/$entity", None)
    return GraphResult(201, data)


def op_permanent_delete(sandbox, call: GraphCall, box: Mailbox) -> GraphResult:
    copy = find_copy(box, call.params["id"])
    sandbox.tenant.change(call.actor, box, copy, "purge", folder="purged")
    return GraphResult(204)


def op_delete(sandbox, call: GraphCall, box: Mailbox) -> GraphResult:
    # Soft delete: into Recoverable Items Deletions (from there, into Purges).
    copy = find_copy(box, call.params["id"])
    target = "purged" if copy.folder == "soft_delete" else "soft_delete"
    sandbox.tenant.change(call.actor, box, copy, "delete", folder=target)
    return GraphResult(204)


def op_update(sandbox, call: GraphCall, box: Mailbox) -> GraphResult:
    body = call.body if isinstance(call.body, dict) else None
    if not body:
        raise GraphError(400, "ErrorInvalidRequest", "Empty Payload. JSON content expected.")
    unsupported = sorted(set(body) - {"isRead"})
    if unsupported or not isinstance(body.get("isRead"), bool):
        raise GraphError(400, "ErrorInvalidPropertyRequest", "The sandbox can update isRead "
                         "(a boolean) only; got %s." % ", ".join(sorted(body)))
    copy = find_copy(box, call.params["id"])
    if copy.is_read != body["isRead"]:
        sandbox.tenant.change(call.actor, box, copy, "modify", is_read=body["isRead"])
    data = message_json(sandbox.tenant.tenant_id, box, copy, call.immutable_ids)
    data["@odata.context"] = _context(call, "messages/$entity", None)
    return GraphResult(200, data)


# -- the operation table -----------------------------------------------------------------------
@dataclass(frozen=True)
class Operation:
    method: str
    pattern: Any  # compiled regex over the decoded path relative to /v1.0
    name: str  # route name: counters key
    handler: Callable[..., Any]
    permissions: frozenset
    mailbox: bool = True  # runs against /users/{upn}: mailbox checks and throttle
    route_path: str = ""  # aiohttp path (canonical casing) for direct requests
    denied: Optional[Tuple[str, str]] = None  # (code, message) when permissions are missing


def _op(method, regex, name, handler, permissions, route_path, mailbox=True, denied=None):
    return Operation(method, re.compile("^" + regex + "$", re.IGNORECASE), name, handler,
                     frozenset(permissions), mailbox, route_path, denied)


USER = r"/users/(?P<upn>[^/]+)"
OPERATIONS: List[Operation] = [
    _op("GET", USER + r"/messages", "graph.messages.list", op_list_messages, MAIL_READ,
        "/users/{upn}/messages"),
    _op("GET", USER + r"/mailFolders/(?P<folder>[^/]+)/messages",
        "graph.folder_messages.list", op_list_messages, MAIL_READ,
        "/users/{upn}/mailFolders/{folder}/messages"),
    _op("GET", USER + r"/mailFolders/(?P<folder>[^/]+)", "graph.folders.get", op_get_folder,
        MAIL_READ, "/users/{upn}/mailFolders/{folder}"),
    _op("GET", USER + r"/messages/(?P<id>[^/]+)", "graph.messages.get", op_get_message,
        MAIL_READ, "/users/{upn}/messages/{id}"),
    _op("PATCH", USER + r"/messages/(?P<id>[^/]+)", "graph.messages.update", op_update,
        MAIL_WRITE, "/users/{upn}/messages/{id}"),
    _op("DELETE", USER + r"/messages/(?P<id>[^/]+)", "graph.messages.delete", op_delete,
        MAIL_WRITE, "/users/{upn}/messages/{id}"),
    _op("POST", USER + r"/messages/(?P<id>[^/]+)/move", "graph.messages.move", op_move,
        MAIL_WRITE, "/users/{upn}/messages/{id}/move"),
    _op("POST", USER + r"/messages/(?P<id>[^/]+)/permanentDelete",
        "graph.messages.permanent_delete", op_permanent_delete, MAIL_WRITE,
        "/users/{upn}/messages/{id}/permanentDelete"),
]


MAIL_OPERATIONS = list(OPERATIONS)


def register(operation: Operation) -> None:
    """Other Graph modules (graph_directory) add their operations to the dispatcher here."""
    if all(op.name != operation.name for op in OPERATIONS):
        OPERATIONS.append(operation)


def resolve(method: str, path: str) -> Tuple[Optional[Operation], Dict[str, str]]:
    """(operation, path params) or (None, {}). A known path with another method -> 405."""
    path_known = False
    for op in OPERATIONS:
        match = op.pattern.match(path)
        if match:
            if op.method == method.upper():
                return op, match.groupdict()
            path_known = True
    if path_known:
        raise GraphError(405, "BadRequest", "The HTTP method '%s' is not allowed for this "
                         "resource." % method.upper())
    return None, {}


def _unknown_segment(path: str) -> GraphError:
    if path.lower() == "/me" or path.lower().startswith("/me/"):
        return GraphError(400, "BadRequest", "/me request is only valid with delegated "
                          "authentication flow.")
    segments = [s for s in path.split("/") if s]
    known = ("users", "groups", "messages", "mailfolders", "move", "permanentdelete",
             "transitivemembers")
    for index, segment in enumerate(segments):
        if index % 2 == 0 and segment.lower() not in known:
            return GraphError(400, "BadRequest", "Resource not found for the segment '%s'."
                              % segment)
    return GraphError(400, "BadRequest", "Resource not found for the segment '%s'."
                      % (segments[-1] if segments else ""))


def _permitted(claims: Dict[str, Any], needed: frozenset) -> bool:
    roles = claims.get("roles") or ()
    return any(role in needed for role in roles)


async def dispatch(sandbox, call: GraphCall, operation: Optional[Operation] = None,
                   item: bool = False) -> GraphResult:
    """Run one Graph call: route, permission, mailbox, throttle, operation. `item`: a $batch
    item, whose answer carries no request ids of its own."""
    try:
        if operation is None:
            operation, call.params = resolve(call.method, call.path)
            if operation is None:
                raise _unknown_segment(call.path)
        if not _permitted(call.claims, operation.permissions):
            code, message = operation.denied or ("ErrorAccessDenied", ACCESS_DENIED)
            raise GraphError(403, code, message)
        if not operation.mailbox:
            with sandbox.tenant.lock:
                return _finish(call, operation.handler(sandbox, call), item)
        upn = call.params["upn"]
        with sandbox.tenant.lock:
            resolve_mailbox(sandbox, upn)
        throttle = sandbox.graph_throttle
        refused = throttle.try_acquire(call.actor, upn)
        if refused is not None:
            message, retry_after = refused
            raise GraphError(429, "ApplicationThrottled", message,
                             {"Retry-After": _seconds(retry_after)})
        try:
            op_ms = sandbox.faults.setting("graph_op_ms")
            if op_ms > 0:
                await asyncio.sleep(op_ms / 1000.0)
            await sandbox.graph_gate(upn)
            with sandbox.tenant.lock:
                box = resolve_mailbox(sandbox, upn)  # the tenant may have been swapped
                return _finish(call, operation.handler(sandbox, call, box), item)
        finally:
            throttle.release(call.actor, upn)
    except GraphError as err:
        return error_result(sandbox, call.headers, err)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else ("%g" % value)


def _finish(call: GraphCall, result: GraphResult, item: bool = False) -> GraphResult:
    headers = result.headers
    if not item:  # a $batch item's ids are never sent: uuid4 is a good part of its CPU
        if "request-id" not in headers:
            headers["request-id"] = str(uuid.uuid4())
        if "client-request-id" not in headers:
            headers["client-request-id"] = (call.headers.get("client-request-id")
                                            or str(uuid.uuid4()))
    if result.body is not None:
        headers.setdefault("Content-Type", "application/json;odata.metadata=minimal;"
                           "odata.streaming=true;IEEE754Compatible=false;charset=utf-8")
    if call.immutable_ids:
        headers["Preference-Applied"] = 'IdType="ImmutableId"'
    return result


# -- HTTP glue -----------------------------------------------------------------------------------
def unauthorized(sandbox, headers: Dict[str, str], message: str) -> GraphResult:
    result = error_result(sandbox, headers, GraphError(401, "InvalidAuthenticationToken",
                                                       message))
    result.headers["WWW-Authenticate"] = (
        'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/'
        'authorize", client_id="00000003-0000-0000-c000-000000000000"')
    return result


def to_response(result: GraphResult) -> web.Response:
    if result.body is None:
        return web.Response(status=result.status, headers=result.headers)
    headers = dict(result.headers)
    content_type = headers.pop("Content-Type", "application/json")
    return web.Response(status=result.status, body=json.dumps(result.body).encode(),
                        headers=headers, content_type=content_type.split(";")[0],
                        charset="utf-8")


async def read_json_body(request: web.Request) -> Any:
    if request.method not in ("POST", "PATCH", "PUT"):
        return None
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload. Please ensure "
                         "Content-Type header is set and payload is of valid JSON format.")


def lower_headers(headers) -> Dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def route_defs(sandbox, operations: Optional[List[Operation]]) -> List[web.RouteDef]:
    """aiohttp routes for `operations`; None gives the catch-all."""
    tokens = issuer(sandbox)

    def make_handler(operation: Optional[Operation]):
        async def handler(request: web.Request) -> web.Response:
            headers = lower_headers(request.headers)
            claims, problem = tokens.verify(headers.get("authorization"))
            if claims is None:
                return to_response(unauthorized(sandbox, headers, problem))
            try:
                body = await read_json_body(request)
            except GraphError as err:
                return to_response(error_result(sandbox, headers, err))
            call = GraphCall(request.method, request.path[len(PREFIX):] or "/",
                             dict(request.query), headers, body, claims,
                             "https://%s%s" % (request.host, PREFIX))
            if operation is not None:
                match = operation.pattern.match(call.path)
                call.params = match.groupdict() if match else {}
                return to_response(await dispatch(sandbox, call, operation if match else None))
            return to_response(await dispatch(sandbox, call))
        return handler

    if operations is None:
        # Other casings, unknown segments and wrong methods take the same dispatcher.
        return [web.route("*", PREFIX + "/{tail:.*}", make_handler(None), name="graph.other")]
    return [web.route(op.method, PREFIX + op.route_path, make_handler(op), name=op.name)
            for op in operations if op.route_path]


def routes(sandbox) -> List[web.RouteDef]:
    return route_defs(sandbox, MAIL_OPERATIONS) + route_defs(sandbox, None)
