"""Gmail multipart batches over httplib2: transport, execution and error parsing.

googleapiclient's `BatchHttpRequest` serialises each part with the part's own credentials
(`request.http.credentials`), so one batch mixes mailboxes (subjects). The batch goes to
`batch_uri` from the config (never `new_batch_http_request()`, which targets Google's host
whatever `api_endpoint` says). The library never retries a part: callers get every part's
answer or error and retry what deserves it.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple

# Gmail/Google error `reason`s that mean "slow down": retried with backoff.
THROTTLE_REASONS = frozenset(("rateLimitExceeded", "userRateLimitExceeded",
                              "concurrentLimitExceeded", "backendError"))
HTTP_TIMEOUT_S = 60


class ThreadLocalHttp:
    """One httplib2.Http per thread: httplib2 objects are not thread-safe, but each keeps its
    connections alive, so a worker thread reuses its connection from batch to batch."""

    def __init__(self, ca_file: str = "", timeout: float = HTTP_TIMEOUT_S):
        self._local = threading.local()
        self._ca_file = ca_file or None
        self._timeout = timeout
        self._all: List[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        http = getattr(self._local, "http", None)
        if http is None:
            # Production: httplib2's own CA handling (https), unless a private CA is set.
            http = _http_class()(timeout=self._timeout, ca_certs=self._ca_file)
            http.redirect_codes = http.redirect_codes - {308}  # as googleapiclient does
            self._local.http = http
            with self._lock:
                self._all.append(http)
        return http

    def close(self) -> None:
        with self._lock:
            conns = list(self._all)
            self._all = []
        for http in conns:
            for conn in list(http.connections.values()):
                conn.close()


_NODELAY_HTTP = None


def _http_class() -> Any:
    """httplib2.Http whose connections set TCP_NODELAY.

    http.client writes a POST's headers and body in two send() calls; with Nagle's algorithm
    on, the body waits for the ACK of the headers, which the server delays (up to 40 ms on
    Linux) on a kept-alive connection. Every token request and every batch is a small POST:
    measured on loopback, 2,000 token requests took 8.5 s instead of 2.2 s with 16 threads."""
    global _NODELAY_HTTP
    if _NODELAY_HTTP is None:
        import httplib2

        def nodelay(base: Any) -> Any:
            class NoDelay(base):
                def connect(self) -> None:
                    super().connect()
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return NoDelay

        types = {"http": nodelay(httplib2.HTTPConnectionWithTimeout),
                 "https": nodelay(httplib2.HTTPSConnectionWithTimeout)}

        class NoDelayHttp(httplib2.Http):
            def request(self, uri: str, method: str = "GET", body: Any = None,
                        headers: Any = None, redirections: int = httplib2.DEFAULT_MAX_REDIRECTS,
                        connection_type: Any = None) -> Any:
                if connection_type is None:
                    connection_type = types.get(uri.split(":", 1)[0].lower())
                return super().request(uri, method, body, headers, redirections,
                                       connection_type)

        _NODELAY_HTTP = NoDelayHttp
    return _NODELAY_HTTP


class PartError:
    """One failed HTTP answer (a batch part, or a whole batch/transport failure)."""

    __slots__ = ("status", "code", "message", "retry_after")

    def __init__(self, status: int, code: str, message: str,
                 retry_after: Optional[float] = None):
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return (self.status in (0, 429) or self.status >= 500
                or (self.status == 403 and self.code in THROTTLE_REASONS))

    def __repr__(self) -> str:
        return "PartError(%d, %s, %s)" % (self.status, self.code, self.message)


# Gmail's per-user quota answer carries no Retry-After header, only the time in the message:
# "User-rate limit exceeded.  Retry after 2024-05-01T10:00:00.000Z".
_RETRY_AT_RE = re.compile(r"Retry after (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z")
MAX_RETRY_AFTER_S = 120.0


def _retry_after(resp: Any, message: str) -> Optional[float]:
    value = resp.get("retry-after") if resp is not None else None
    if value is not None:
        try:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
        except ValueError:
            pass  # an HTTP date: rare from Google; use the message or our own backoff
    match = _RETRY_AT_RE.search(message)
    if match:
        at = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
        at += timedelta(seconds=float("0." + (match.group(2) or "0")))
        wait = (at - datetime.now(timezone.utc)).total_seconds()
        return min(MAX_RETRY_AFTER_S, max(0.0, wait))
    return None


def http_error(exc: Any) -> PartError:
    """A googleapiclient HttpError as a PartError: Google's envelope
    {"error": {"code", "message", "errors": [{"reason"}], "status"}}."""
    resp = getattr(exc, "resp", None)
    status = int(getattr(resp, "status", 0) or 0)
    code, message = str(status), ""
    try:
        content = exc.content
        body = json.loads(content.decode("utf-8") if isinstance(content, bytes) else content)
        error = body.get("error", {}) if isinstance(body, dict) else {}
        if isinstance(error, dict):
            errors = error.get("errors") or [{}]
            code = str(errors[0].get("reason") or error.get("status") or status)
            message = str(error.get("message") or "")
        elif isinstance(error, str):  # OAuth-style {"error": "...", "error_description"}
            code, message = error, str(body.get("error_description") or "")
    except (ValueError, AttributeError, TypeError, IndexError):
        pass
    if not message:
        message = str(getattr(resp, "reason", "") or "HTTP %d" % status)
    return PartError(status, code, message[:500], _retry_after(resp, message))


def transport_error(exc: BaseException) -> PartError:
    """A failure of the HTTP exchange itself (dropped connection, timeout, bad multipart)."""
    from googleapiclient.errors import BatchError, HttpError

    if isinstance(exc, HttpError):  # the batch request as a whole was answered with an error
        return http_error(exc)
    if isinstance(exc, BatchError):
        return PartError(0, "batch_error", str(exc)[:300])
    name = type(exc).__name__
    return PartError(0, "transport_error", ("%s: %s" % (name, exc))[:300])


def execute(batch_uri: str, http: Any, parts: List[Tuple[Any, Any]]
            ) -> Dict[int, Tuple[Optional[dict], Optional[PartError]]]:
    """Send `parts` ([(HttpRequest, credentials)]) as one batch over `http`.

    Returns {index: (response, None) | (None, PartError)} for every part. Raises on a failure
    of the whole batch (transport error, error status, unparsable multipart, a missing part,
    or a token refresh the library attempted after a part's 401)."""
    import google_auth_httplib2
    from googleapiclient.errors import HttpError

    results: Dict[int, Tuple[Optional[dict], Optional[PartError]]] = {}

    def collect(request_id: str, response: Any, exception: Any) -> None:
        if exception is None:
            results[int(request_id)] = (response or {}, None)
        elif isinstance(exception, HttpError):
            results[int(request_id)] = (None, http_error(exception))
        else:
            results[int(request_id)] = (None, transport_error(exception))

    batch = _batch_class()(callback=collect, batch_uri=batch_uri)
    for index, (request, credentials) in enumerate(parts):
        # The part's own Authorization header comes from request.http.credentials; the
        # transport is `http` below, shared by the whole batch.
        request.http = google_auth_httplib2.AuthorizedHttp(credentials, http=http)
        batch.add(request, request_id=str(index))
    batch.execute(http=http)  # KeyError if the server left a part out: a batch failure
    return results


_LEAN_BATCH = None


def _batch_class() -> Any:
    """`BatchHttpRequest` with a plain-string wire writer.

    The library writes each part through `email.generator` (header folding, MIME objects):
    about 0.14 ms of CPU per part, the largest cost of a Gmail run once tokens are cached.
    This subclass writes the same bytes (`application/http` parts, LF line ends, one
    `Content-ID` per part, the part's own Authorization) with string formatting, and keeps
    everything else of the library: 401 refresh-and-redo, callbacks. It also reads the answer
    without `email.feedparser` (see `_multipart_parts`)."""
    global _LEAN_BATCH
    if _LEAN_BATCH is None:
        from googleapiclient import _auth
        from googleapiclient.errors import HttpError
        from googleapiclient.http import BatchHttpRequest

        class LeanBatchHttpRequest(BatchHttpRequest):
            def _serialize_request(self, request: Any) -> str:
                # (request target, host): RequestCache sets them on the requests it makes
                # (urlsplit of a new URI costs ~15 us); any other request is split here.
                target, host = getattr(request, "wire_target", None) or wire_target(request.uri)
                headers = dict(request.headers)
                credentials = _auth.get_credentials_from_http(request.http)
                if credentials is not None:
                    _auth.apply_credentials(credentials, headers)
                content_type = headers.pop("content-type", "application/json")
                lines = ["%s %s HTTP/1.1" % (request.method, target),
                         "Content-Type: %s" % content_type, "MIME-Version: 1.0"]
                for name, value in headers.items():
                    line = "%s: %s" % (name, value)
                    if "\r" in line or "\n" in line:
                        line = "%s: %s" % (_header(name), _header(value))
                    lines.append(line)
                lines.append("Host: %s" % host)
                body = request.body
                if isinstance(body, bytes):
                    body = body.decode("utf-8")
                if body is not None:
                    lines.append("content-length: %d" % len(body))
                return "\n".join(lines) + "\n\n" + (body or "")

            def _id_to_header(self, id_: str) -> str:
                # The library's "<base + id>", its UUID formatted once per batch, not per part.
                base = getattr(self, "_base_header", None)
                if base is None:
                    if self._base_id is None:
                        self._base_id = uuid.uuid4()
                    base = self._base_header = "<%s + " % self._base_id
                return base + urllib.parse.quote(id_) + ">"

            def _execute(self, http: Any, order: List[str], requests: Dict[str, Any]) -> None:
                boundary = "batch_" + uuid.uuid4().hex
                chunks = []
                for request_id in order:
                    chunks.append(
                        "--%s\nContent-Type: application/http\nMIME-Version: 1.0\n"
                        "Content-Transfer-Encoding: binary\nContent-ID: %s\n\n%s\n"
                        % (boundary, self._id_to_header(request_id),
                           self._serialize_request(requests[request_id])))
                chunks.append("--%s--\n" % boundary)
                content_type = 'multipart/mixed; boundary="%s"' % boundary
                resp, content = http.request(self._batch_uri, method="POST",
                                             body="".join(chunks),
                                             headers={"content-type": content_type})
                if resp.status >= 300:
                    raise HttpError(resp, content, uri=self._batch_uri)
                self._parse(resp, content)

            def _parse(self, resp: Any, content: bytes) -> None:
                from googleapiclient.errors import BatchError

                parts = _multipart_parts(resp["content-type"], content.decode("utf-8"))
                if parts is None:
                    raise BatchError("Response not in multipart/mixed format.", resp=resp,
                                     content=content)
                for headers, payload in parts:
                    request_id = self._header_to_id(_get_header(headers, "content-id"))
                    response, body = _deserialize_response(payload)
                    if isinstance(body, str):
                        body = body.encode("utf-8")
                    self._responses[request_id] = (response, body)

        _LEAN_BATCH = LeanBatchHttpRequest
    return _LEAN_BATCH


def wire_target(uri: str) -> Tuple[str, str]:
    """(request target, host) of a URI, as a batch part's request line and Host name them."""
    parsed = urllib.parse.urlsplit(uri)
    return parsed.path + ("?" + parsed.query if parsed.query else ""), parsed.netloc


def _header(text: Any) -> str:
    """A header name or value on one line: no CR/LF can end it early."""
    return str(text).replace("\r", " ").replace("\n", " ")


# -- reading the multipart answer ---------------------------------------------------------------
# The library reads the answer with email.feedparser twice (the multipart, then each part's
# HTTP head): about 0.1 ms of CPU per part, for what is a boundary split and a few header lines
# (requests-toolbelt's MultipartDecoder would still run email's parser per part, and is one more
# dependency). So the answer is read here by the same rules, with regular expressions:
# delimiter lines as feedparser finds them ("--boundary", optional "--", blanks, line end; the
# line end before a delimiter belongs to it), headers as compat32 reads them (name up to the
# first ":", value without leading blanks, folded lines joined, the last of a repeated name
# wins in httplib2.Response), and each part's status line and body split exactly as
# BatchHttpRequest._deserialize_response splits them. A malformed answer still fails the batch.
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")
# Header lines (feedparser's headerRE, then the rest of the line) up to the first other line.
_HEAD_RE = re.compile(r"(?:(?:From |[\041-\071\073-\176]*:|[\t ])[^\r\n]*(?:\r\n|\r|\n|\Z))*")
# What follows "--boundary" on a delimiter line (feedparser's boundaryre, less the boundary:
# one regular expression for all batches, as compiling one per boundary costs ~0.4 ms).
_DELIMITER_END_RE = re.compile(r"(--)?[ \t]*(?:\r\n|\r|\n|\Z)")
_EOL_RE = re.compile(r"(?:\r\n|\r|\n)\Z")


def _boundary(content_type: str) -> Optional[str]:
    """The boundary of a multipart content type, parameters read by the email package."""
    from email.message import Message

    header = Message()
    header["content-type"] = content_type
    if header.get_content_maintype() != "multipart":
        return None
    return header.get_boundary()


def _multipart_parts(content_type: str, text: str) -> Optional[List[Tuple[List[Tuple[str, str]],
                                                                          str]]]:
    """[(part headers, part payload)] of a multipart body; None when it is not one (no
    multipart content type, no boundary, no opening delimiter), as feedparser decides."""
    boundary = _boundary(content_type)
    if boundary is None:
        return None
    marker = "--" + boundary
    delimiters = []  # (start, end, closing) of each delimiter line, line end before it included
    at = text.find(marker)
    while at >= 0:
        end = _DELIMITER_END_RE.match(text, at + len(marker)) if (
            at == 0 or text[at - 1] in "\r\n") else None
        if end is None:
            at = text.find(marker, at + 1)
            continue
        start = at - 2 if text[at - 2:at] == "\r\n" else at - 1 if at else at
        delimiters.append((start, end.end(), end.group(1) is not None))
        at = text.find(marker, end.end())
    if not delimiters or delimiters[0][2]:  # no part opened
        return None
    parts = []
    for index, (_, end, closing) in enumerate(delimiters):
        if closing:
            break
        if index + 1 < len(delimiters):
            body = text[end:delimiters[index + 1][0]]
        else:  # no closing delimiter: the part runs to the end, less its last line end
            body = _EOL_RE.sub("", text[end:])
        parts.append(_head_and_body(body))
    return parts


def _head_and_body(text: str) -> Tuple[List[Tuple[str, str]], str]:
    """(headers, rest) of a MIME part or an HTTP head, as feedparser's _parsegen and
    _parse_headers read them: header lines up to a blank line (dropped) or the first line that
    is not a header (kept in the rest)."""
    pos = _HEAD_RE.match(text).end()
    lines = _LINE_RE.findall(text, 0, pos)[:-1] if pos else []
    if text[pos:pos + 2] == "\r\n":  # the blank line ending the headers is dropped
        pos += 2
    elif text[pos:pos + 1] in ("\n", "\r") and pos < len(text):
        pos += 1
    headers: List[Tuple[str, str]] = []
    folds = False  # whether a folded line continues the last header
    for number, line in enumerate(lines):
        if line[0] in " \t":
            if folds:
                headers[-1] = (headers[-1][0], headers[-1][1] + line)
            continue
        folds = False
        if line.startswith("From "):  # a Unix envelope line, not a header
            if number == len(lines) - 1 and number:  # probably the body's first line
                return _finish(headers), line + text[pos:]
            continue
        name, value = line.split(":", 1)
        if name:
            headers.append((name, value.lstrip(" \t")))
            folds = True
    return _finish(headers), text[pos:]


def _finish(headers: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    return [(name, value.rstrip("\r\n")) for name, value in headers]


def _get_header(headers: List[Tuple[str, str]], name: str) -> Optional[str]:
    for key, value in headers:  # the first one, as Message.get
        if key.lower() == name:
            return value
    return None


def _deserialize_response(payload: str) -> Tuple[Any, str]:
    """BatchHttpRequest._deserialize_response without feedparser: (httplib2.Response, body)."""
    import httplib2

    status_line, payload = payload.split("\n", 1)
    protocol, status, reason = status_line.split(" ", 2)
    info = {name.lower(): value for name, value in _head_and_body(payload)[0]}
    info["status"] = status
    resp = httplib2.Response(info)
    resp.reason = reason
    resp.version = int(protocol.split("/", 1)[1].replace(".", ""))
    content = payload.split("\r\n\r\n", 1)[1]
    return resp, content
