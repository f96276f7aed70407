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
    everything else of the library: 401 refresh-and-redo, response parsing, callbacks."""
    global _LEAN_BATCH
    if _LEAN_BATCH is None:
        from googleapiclient import _auth
        from googleapiclient.errors import HttpError
        from googleapiclient.http import BatchHttpRequest

        class LeanBatchHttpRequest(BatchHttpRequest):
            def _serialize_request(self, request: Any) -> str:
                parsed = urllib.parse.urlsplit(request.uri)
                target = parsed.path + ("?" + parsed.query if parsed.query else "")
                headers = dict(request.headers)
                credentials = _auth.get_credentials_from_http(request.http)
                if credentials is not None:
                    _auth.apply_credentials(credentials, headers)
                content_type = headers.pop("content-type", "application/json")
                lines = ["%s %s HTTP/1.1" % (request.method, target),
                         "Content-Type: %s" % content_type, "MIME-Version: 1.0"]
                lines.extend("%s: %s" % (_header(k), _header(v)) for k, v in headers.items())
                lines.append("Host: %s" % parsed.netloc)
                body = request.body
                if isinstance(body, bytes):
                    body = body.decode("utf-8")
                if body is not None:
                    lines.append("content-length: %d" % len(body))
                return "\n".join(lines) + "\n\n" + (body or "")

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
                from email.parser import FeedParser
                from googleapiclient.errors import BatchError

                parser = FeedParser()  # as the library does it
                parser.feed("content-type: %s\r\n\r\n" % resp["content-type"])
                parser.feed(content.decode("utf-8"))
                message = parser.close()
                if not message.is_multipart():
                    raise BatchError("Response not in multipart/mixed format.", resp=resp,
                                     content=content)
                for part in message.get_payload():
                    request_id = self._header_to_id(part["Content-ID"])
                    response, body = self._deserialize_response(part.get_payload())
                    if isinstance(body, str):
                        body = body.encode("utf-8")
                    self._responses[request_id] = (response, body)

        _LEAN_BATCH = LeanBatchHttpRequest
    return _LEAN_BATCH


def _header(text: Any) -> str:
    """A header name or value on one line: no CR/LF can end it early."""
    return str(text).replace("\r", " ").replace("\n", " ")
