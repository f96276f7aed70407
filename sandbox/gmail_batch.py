"""Google's multipart batch: `POST /batch/gmail/v1` (Gmail parts) and `POST /batch` (the legacy
global endpoint: Gmail and Directory parts).

Request: `multipart/mixed; boundary=...`; each part `Content-Type: application/http` with a
`Content-ID` and an HTTP request (request line, headers, blank line, body). googleapiclient
writes parts with bare LF line ends; CRLF is accepted too. Headers of the outer request apply to
every part unless the part sets them (Google's documented rule), so a part without its own
Authorization uses the outer one; parts may carry different bearer tokens (several subjects).

Response: `multipart/mixed` whose parts are `Content-Type: application/http`,
`Content-ID: <response-ID>` for request `Content-ID: <ID>`, and an inner
`HTTP/1.1 <status> <reason>\\r\\n<headers>\\r\\n\\r\\n<body>` framed with CRLF, as
googleapiclient's `BatchHttpRequest._deserialize_response` requires (it splits the body off at
the first CRLF CRLF).

Each part runs through the same Router and handlers as a single call; per part the executor asks
`Faults.decide("gmail", write)` and counts the part under its own route name. An injected 429/5xx
answers the part without running it. An injected drop runs the part and then loses its answer
(the part reads 503 backendError), which is what a dropped connection does to a write; a lost
reply (`rate_lost_reply`, write parts only) does the same and reads 504.
More than 100 parts, or none: 400 for the whole batch.
"""
from __future__ import annotations

import email.parser
import email.policy
import functools
import http
import re
import secrets
import urllib.parse
from typing import List, Optional, Tuple

from aiohttp import web
from multidict import CIMultiDict, MultiDict

from sandbox import directory, gmail
from sandbox.faults import WRITE_METHODS, Fault, fault_body
from sandbox.gmail import ApiRequest, ApiResponse, Router

MAX_PARTS = 100
_PART_SKIPPED_OUTER = ("content-type", "content-length", "content-id",
                       "content-transfer-encoding", "host", "mime-version")


class BatchFormatError(ValueError):
    pass


class BatchPart(object):
    def __init__(self, content_id: Optional[str], request: Optional[ApiRequest],
                 problem: str = ""):
        self.content_id = content_id
        self.request = request
        self.problem = problem


# -- parsing -----------------------------------------------------------------------------------
def parse_batch(content_type: str, body: bytes, outer_headers: CIMultiDict) -> List[BatchPart]:
    if not content_type.lower().startswith("multipart/"):
        raise BatchFormatError("Batch requests must be multipart/mixed.")
    split = _split_plain(content_type, body)
    parts = []
    for content_id, raw in (_split_mime(content_type, body) if split is None else split):
        try:
            request = parse_inner_request(raw, outer_headers)
        except BatchFormatError as exc:
            parts.append(BatchPart(content_id, None, str(exc)))
            continue
        parts.append(BatchPart(content_id, request))
    return parts


RawParts = List[Tuple[Optional[str], bytes]]


def _split_mime(content_type: str, body: bytes) -> RawParts:
    """(Content-ID, decoded payload) of each part, as the email package reads them."""
    parser = email.parser.BytesParser(policy=email.policy.compat32)
    message = parser.parsebytes(b"Content-Type: " + content_type.encode("latin-1")
                                + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise BatchFormatError("Batch request is not a valid multipart/mixed body.")
    return [(part.get("Content-ID"), part.get_payload(decode=True) or b"")
            for part in message.get_payload()]


# What googleapiclient (and the pack) send: a simple boundary, one kind of line end, parts
# with plain `Name: value` headers and a payload that needs no decoding.
_PLAIN_TYPE = re.compile(r'multipart/mixed; boundary=(?:"([0-9A-Za-z_.=+-]{1,70})"'
                         r"|([0-9A-Za-z_.-]{1,70}))")
_PLAIN_HEADER = re.compile(rb"([A-Za-z0-9-]+):[ \t]*(.*)")
_PLAIN_ENCODINGS = (None, b"", b"binary", b"7bit", b"8bit")


def _split_plain(content_type: str, body: bytes) -> Optional[RawParts]:
    """`_split_mime`'s answer for a batch in the plain form, without the email package (its
    parser compiles a regex per boundary and reads line by line: most of a batch's CPU);
    None for anything else, which `_split_mime` then reads."""
    match = _PLAIN_TYPE.fullmatch(content_type)
    if match is None or not body.isascii():
        return None
    eol = b"\r\n" if b"\r" in body else b"\n"
    if eol == b"\r\n" and not body.count(b"\r") == body.count(b"\n") == body.count(eol):
        return None  # mixed line ends
    separator = b"--" + (match.group(1) or match.group(2)).encode("ascii")
    # Every line that starts with the separator begins a piece; the line end before it
    # belongs to the boundary (RFC 2046). The first piece is the preamble.
    pieces = (eol + body).split(eol + separator)
    parts: RawParts = []
    for piece in pieces[1:]:
        rest, has_eol, text = piece.partition(eol)
        rest = rest.rstrip(b" \t")  # blanks may follow a boundary
        if rest == b"--":  # the close boundary: what follows is the epilogue
            return parts or None
        if rest or not has_eol:  # not a boundary, two in a row, or no close boundary
            return None
        part = _plain_part(text, eol)
        if part is None:
            return None
        parts.append(part)
    return None  # no close boundary


def _plain_part(text: bytes, eol: bytes) -> Optional[Tuple[Optional[str], bytes]]:
    """(Content-ID, payload) of one part; None unless its headers are plain."""
    if not text or text.startswith(eol):  # no headers
        head, payload = b"", text[len(eol):]
    else:
        at = text.find(eol + eol)
        if at >= 0:
            head, payload = text[:at], text[at + 2 * len(eol):]
        elif text.endswith(eol):  # the blank line ends the part
            head, payload = text[:-len(eol)], b""
        else:
            return None  # no blank line after the headers
    content_id, encoding = None, None
    for line in head.split(eol) if head else ():
        header = _PLAIN_HEADER.fullmatch(line)
        if header is None:
            return None
        name, value = header.group(1).lower(), header.group(2)
        if name == b"content-id" and content_id is None:
            content_id = value.decode("ascii")
        elif name == b"content-transfer-encoding" and encoding is None:
            encoding = value.lower()
        elif name == b"content-type" and (b"message" in value.lower()
                                          or b"multipart" in value.lower()):
            return None  # the email package would read a nested message
    if encoding not in _PLAIN_ENCODINGS:
        return None  # quoted-printable, base64, ...: decoded by the email package
    return content_id, payload


def parse_inner_request(raw: bytes, outer_headers: CIMultiDict) -> ApiRequest:
    """One `application/http` part -> ApiRequest (outer headers fill in missing ones)."""
    raw = raw.lstrip(b"\r\n")
    line, _, rest = raw.partition(b"\n")
    pieces = line.decode("latin-1").strip().split(" ")
    if len(pieces) < 2:
        raise BatchFormatError("Invalid request line in batch part.")
    method, target = pieces[0].upper(), pieces[1]
    head, body = _split_head(rest)
    headers = CIMultiDict()
    name = None
    for text in head.decode("latin-1").splitlines():
        if not text.strip():
            continue
        if text[0] in " \t" and name is not None:  # folded header line
            headers[name] = headers[name] + " " + text.strip()
            continue
        name, sep, value = text.partition(":")
        if not sep:
            raise BatchFormatError("Invalid header line in batch part.")
        name = name.strip()
        headers.add(name, value.strip())
    for key, value in outer_headers.items():
        if key.lower() not in _PART_SKIPPED_OUTER and key not in headers:
            headers[key] = value
    split = urllib.parse.urlsplit(target)
    query = MultiDict(_query_pairs(split.query))
    return ApiRequest(method, split.path, query, headers, body)


@functools.lru_cache(maxsize=1024)
def _query_pairs(query: str) -> Tuple[Tuple[str, str], ...]:
    """parse_qsl (slow: tens of us) once per query: a campaign's parts repeat a few queries."""
    return tuple(urllib.parse.parse_qsl(query, keep_blank_values=True))


def _split_head(rest: bytes) -> Tuple[bytes, bytes]:
    """Headers and body of a part, whichever blank line (LF LF or CRLF CRLF) comes first."""
    if rest.startswith(b"\r\n") or rest.startswith(b"\n"):
        return b"", rest.split(b"\n", 1)[1]
    ends = [(rest.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n")]
    ends = [(at, sep) for at, sep in ends if at >= 0]
    if not ends:
        return rest, b""
    at, sep = min(ends)
    return rest[:at], rest[at + len(sep):]


# -- serialising -------------------------------------------------------------------------------
def response_content_id(content_id: Optional[str]) -> Optional[str]:
    if not content_id:
        return None
    inner = content_id.strip()
    if inner.startswith("<") and inner.endswith(">"):
        inner = inner[1:-1]
    return "<response-%s>" % inner


def serialize_batch(answers: List[Tuple[Optional[str], ApiResponse]],
                    boundary: Optional[str] = None) -> Tuple[str, bytes]:
    """(Content-Type, body) of a batch response; every line end is CRLF."""
    boundary = boundary or "batch_" + secrets.token_hex(12)
    chunks = []
    for content_id, answer in answers:
        head = ["--" + boundary, "Content-Type: application/http"]
        response_id = response_content_id(content_id)
        if response_id:
            head.append("Content-ID: " + response_id)
        payload = answer.payload()
        reason = _reason(answer.status)
        inner = ["HTTP/1.1 %d %s" % (answer.status, reason)]
        if answer.body is not None:
            inner.append("Content-Type: application/json; charset=UTF-8")
        for key, value in answer.headers.items():
            inner.append("%s: %s" % (key, value))
        # always at least one header line: the client splits the body off at CRLF CRLF
        inner.append("Content-Length: %d" % len(payload))
        chunks.append(("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(inner) + "\r\n\r\n")
                      .encode("utf-8") + payload + b"\r\n")
    body = b"".join(chunks) + ("--%s--\r\n" % boundary).encode("ascii")
    return "multipart/mixed; boundary=%s" % boundary, body


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


# -- executing ---------------------------------------------------------------------------------
def _unknown_part() -> ApiResponse:
    return gmail.error(404, "Not Found", "notFound")


def run_part(sandbox, router: Router, part: BatchPart) -> ApiResponse:
    if part.request is None:
        return gmail.error(400, part.problem or "Invalid batch part.", "badRequest")
    resolved = router.resolve(part.request.method, part.request.path)
    if resolved is None:
        sandbox.counters.hit("gmail.batch.unrouted", 404)
        return _unknown_part()
    name, handler, params = resolved
    part.request.params = params
    service = "directory" if name.startswith("directory.") else "gmail"
    fault = sandbox.faults.decide(service, part.request.method in WRITE_METHODS)
    if fault is not None and fault.kind not in LOST_ANSWER:
        status, headers, body = fault_body(service, fault)
        answer = ApiResponse(status, body, headers)
    else:
        answer = handler(sandbox, part.request)
        if fault is not None:  # the work is done, the answer is lost
            status, headers, body = fault_body(service, LOST_ANSWER[fault.kind])
            answer = ApiResponse(status, body, headers)
    sandbox.counters.hit(name, answer.status)
    return answer


# What a part whose answer was lost reads instead (both kinds have run).
LOST_ANSWER = {"drop": Fault("5xx", 503), "lost_reply": Fault("5xx", 504)}


def execute(sandbox, router: Router, content_type: str, body: bytes,
            outer_headers: CIMultiDict) -> web.Response:
    try:
        parts = parse_batch(content_type, body, outer_headers)
    except BatchFormatError as exc:
        return gmail.to_web(gmail.error(400, str(exc), "badRequest"))
    if not parts:
        return gmail.to_web(gmail.error(400, "Batch request contains no parts.", "badRequest"))
    if len(parts) > MAX_PARTS:
        return gmail.to_web(gmail.error(
            400, "Too many requests in batch: %d (at most %d)." % (len(parts), MAX_PARTS),
            "badRequest"))
    answers = [(part.content_id, run_part(sandbox, router, part)) for part in parts]
    content_type, payload = serialize_batch(answers)
    return web.Response(status=200, body=payload, headers={"Content-Type": content_type})


GMAIL_ONLY = gmail.ROUTER
GLOBAL = Router()
GLOBAL.entries = list(gmail.ROUTER.entries) + list(directory.ROUTER.entries)


def routes(sandbox) -> List[web.RouteDef]:
    def endpoint(router: Router):
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            return execute(sandbox, router, request.headers.get("Content-Type", ""), body,
                           CIMultiDict(request.headers))
        return handle

    return [web.post("/batch/gmail/v1", endpoint(GMAIL_ONLY), name="gmail.batch"),
            web.post("/batch", endpoint(GLOBAL), name="gmail.legacy.batch")]
