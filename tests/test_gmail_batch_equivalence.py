"""The Gmail fast paths against googleapiclient itself, the oracle.

`gmail_batch`'s LeanBatchHttpRequest reads the multipart answer with regular expressions and
writes parts with string formatting; `gmail_copy`'s RequestCache builds HttpRequests from cached
shapes. Both must do exactly what the library does: BatchHttpRequest (its feedparser reading, its
`_deserialize_response`, its MIME writer) and the discovery methods (`messages.list(...)`).
Replies and requests are generated from fixed seeds, hostile ones included; a failure names the
case. The library's own `_execute` runs over a loopback server (no mocks); the bulk of the
replies goes through the library's parsing steps called directly, tied to `_execute` by a test
that runs both on the same replies.
"""
import random
import threading
import uuid
from email.parser import FeedParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import google_auth_httplib2
import httplib2
import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import BatchError
from googleapiclient.http import BatchHttpRequest

from retraction.model import Destination
from retraction.providers import gmail_batch
from retraction.providers.base import Target
from retraction.providers.gmail_copy import (MAX_SHAPES, Call, CopyTask, RequestCache,
                                             next_action)

LEAN = gmail_batch._batch_class()
BASE_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


# -- loopback server: answers each POST with the reply set for it, records what it got --------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else delayed ACKs make each exchange ~40 ms

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.seen.append((self.path, self.headers.get("content-type"), body))
        content_type, reply = self.server.reply
        head = "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(reply)
        if content_type is not None:
            head += "Content-Type: %s\r\n" % content_type
        self.wfile.write(head.encode("latin-1") + b"\r\n" + reply)

    def log_message(self, *args):
        pass


class Loopback:
    """A ThreadingHTTPServer on a thread of this process. Under StackStorm's eventlet patching
    that thread is a green thread: it serves only because tests/conftest.py patches before
    `socketserver` is first imported (imported earlier, socketserver keeps a blocking poll
    selector, serve_forever never yields, and the client waits forever)."""

    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.seen = []
        self.server.reply = (None, b"")
        self.url = "http://127.0.0.1:%d/batch/gmail/v1" % self.server.server_port
        self.http = httplib2.Http(timeout=10)
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def run(self, batch, content_type, reply, order=(), requests=None):
        """The batch's own `_execute` against `reply`: ("ok", responses) or ("err", ...)."""
        self.server.reply = (content_type, reply)
        return _outcome(lambda: batch._execute(self.http, list(order), requests or {})
                        or _responses(batch))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def loopback():
    server = Loopback()
    yield server
    server.close()


def _responses(batch):
    return {request_id: (dict(resp), resp.status, resp.reason, resp.version, type(body), body)
            for request_id, (resp, body) in batch._responses.items()}


def _outcome(function):
    try:
        return ("ok", function())
    except Exception as exc:  # the failure must be the same failure
        return ("err", type(exc).__name__, str(exc))


# -- the two readers ------------------------------------------------------------------------
_REF = BatchHttpRequest(batch_uri="http://127.0.0.1/batch")


def library_read(content_type, reply):
    """What BatchHttpRequest._execute does with an answer after its status check: the same
    feedparser calls, then the library's own `_header_to_id` and `_deserialize_response`
    (`test_library_reading_is_execute_itself` holds this to `_execute`)."""
    def read():
        resp = httplib2.Response({"status": "200", "content-type": content_type})
        parser = FeedParser()
        parser.feed("content-type: %s\r\n\r\n" % resp["content-type"])
        content = reply.decode("utf-8")
        parser.feed(content)
        message = parser.close()
        if not message.is_multipart():
            raise BatchError("Response not in multipart/mixed format.", resp=resp,
                             content=content)
        batch = BatchHttpRequest(batch_uri=_REF._batch_uri)
        for part in message.get_payload():
            request_id = _REF._header_to_id(part["Content-ID"])
            response, body = _REF._deserialize_response(part.get_payload())
            if isinstance(body, str):
                body = body.encode("utf-8")
            batch._responses[request_id] = (response, body)
        return _responses(batch)
    return _outcome(read)


def lean_read(content_type, reply):
    def read():
        batch = LEAN(batch_uri=_REF._batch_uri)
        batch._parse(httplib2.Response({"status": "200", "content-type": content_type}), reply)
        return _responses(batch)
    return _outcome(read)


# -- generated replies --------------------------------------------------------------------------
class _Picker:
    """Choices for one reply: the well-formed option, or with probability `hostility` one of
    the hostile ones (so that most replies are batches, each with a few odd details)."""

    def __init__(self, rnd, hostility):
        self.rnd = rnd
        self.hostility = hostility

    def __call__(self, good, hostile):
        if hostile and self.rnd.random() < self.hostility:
            return self.rnd.choice(hostile)
        return good


def _part_headers(pick, i):
    cid = "<response-%s + %d>" % (BASE_ID, i)
    return pick(["Content-Type: application/http", "Content-ID: " + cid], [
        ["content-id:   %s  " % cid],                       # blanks around the value
        ["Content-ID: <response-abc", " + %d>" % i],         # folded value
        ["From x", "Content-ID: " + cid],                    # envelope line first
        ["Content-ID: " + cid, "From y"],                    # envelope line last
        [":bad", "Content-ID: " + cid],                      # empty header name
        [],                                                  # no headers: no Content-ID
        ["From x", " folded", "Content-ID: " + cid],
        ["A: 1", ":bad", " folded", "Content-ID: " + cid, "From q", "\tfold2"],
        ["X: 1", "Content-ID: " + cid, "Content-ID: <r + 99>"],  # repeated: the first wins
        ["Content-ID: <r + %d>" % i, "CONTENT-ID: <r + 7>"],
        ["Content-ID: r + %d" % i],                          # no angle brackets
        ["Content-ID: <r%d>" % i],                           # no " + "
        ["Content-ID: <r + %%2B%d%%20x>" % i],               # quoted id
        ["Content-ID:<r + %d>" % i, "Content-Transfer-Encoding: binary"],
        ["not a header line", "Content-ID: <r + %d>" % i],   # ends the headers
        ["Content-ID: <r + %d>" % i, "\u00e9t\u00e9: x"],
    ])


_STATUSES = ["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 204 No Content",
             "HTTP/1.1 429 Too Many Requests", "HTTP/1.0 200", "HTTP/1.1 200  OK ", "garbage",
             "HTTP/x 200 OK", "HTTP/1.1 abc OK", "HTTP/2 503 Service Unavailable", "",
             "HTTP/1.1 200 OK\r"]
_INNER = [["Content-Type: application/json; charset=UTF-8", "Vary: Origin", "Vary: X-Origin"],
          ["Retry-After: 2"], [], ["ETag: \"x\"", "  folded"], ["Status: 500", "A:b"],
          ["From z", "A: b"], ["A: b", ":x", " y", "From q", " z", "C: d"],
          ["A: b", " c", "\td"], ["content-type: text/plain", "Content-Type: a/b"],
          ["X-Long: " + "v" * 300], ["A: b", "no colon", "C: d"], [" leading fold", "A: b"]]
_BODIES = ['{"id": "x%d"}', "", '{"error": {"code": 404, "message": "Not Found"}}',
           "line1\r\nline2\r\n\r\nmore", "\u00e9 \u00fc \u2028", "--XX\r\nnot a delimiter",
           "HTTP/1.1 200 OK\r\n\r\n{}", "{\n \"labelIds\": [\"INBOX\"]\n}\n"]


def _part(rnd, pick, i, eol):
    headers = _part_headers(pick, i)
    inner_eol = pick("\r\n", [eol, "\n", "\r"])
    inner = rnd.choice(_INNER)
    body = rnd.choice(_BODIES).replace("%d", str(i))
    head = eol.join(headers) + (eol if headers else "") + pick(eol, ["", "\n", "\r\n"])
    return (head + pick(rnd.choice(_STATUSES[:4]), _STATUSES[4:]) + inner_eol
            + inner_eol.join(inner) + (inner_eol if inner else "") + pick(inner_eol, [""])
            + body)


def generated_replies(seed, count):
    """[(content type or None, reply bytes)]: mostly batches with hostile details (CR/LF mixes,
    quoted boundaries, missing or extra delimiters, folded and repeated headers, bad status
    lines, parts left out or answered twice), some not a batch at all."""
    rnd = random.Random(seed)
    replies = []
    for _ in range(count):
        pick = _Picker(rnd, rnd.choice([0.0, 0.03, 0.1, 0.3, 0.7]))
        eol = pick("\r\n", ["\n", "\r", "\r\n"])
        boundary = rnd.choice(["batch_abc", "XX", "a.b+c", "=_x'y", "batch_" + "f" * 32, "b d"])
        content_type = pick('multipart/mixed; boundary="%s"' % boundary, [
            'multipart/mixed; boundary=%s' % boundary,
            'Multipart/Mixed; charset=x; boundary="%s"' % boundary,
            "multipart/mixed; boundary*=''%s" % boundary,
            "multipart/related; boundary=%s" % boundary,
            "application/json; charset=UTF-8", "multipart/mixed", "", None])
        parts = [_part(rnd, pick, i, eol) for i in range(rnd.choice([1, 2, 2, 3, 5, 8]))]
        if pick(False, [True]):
            del parts[rnd.randrange(len(parts))]  # a part left out
        if parts and pick(False, [True]):
            parts.append(parts[0])  # a part answered twice
        text = pick("", ["preamble" + eol, "--%sx%s" % (boundary, eol),
                         "--%s--%s" % (boundary, eol), eol])
        for part in parts:
            opener = "--" + boundary + pick(eol, [" " + eol, "\t \n", "--" + eol, "x" + eol,
                                                  ""])
            text += pick("", [" "]) + opener + part + pick(eol, ["", eol + eol, "\r", "\n"])
        text += pick("--%s--%s" % (boundary, eol), [
            "--%s--" % boundary, "", "--%s-- \t%sepilogue" % (boundary, eol),
            "--%s" % boundary, "--%s--%s--%s--" % (boundary, eol, boundary)])
        if pick(False, [True]):
            text = text.replace(eol, rnd.choice(["\r", "\n", "\r\n\r\n"]), 1)
        reply = text.encode("utf-8")
        if rnd.random() < 0.01:
            reply += b"\xff"  # not UTF-8
        replies.append((content_type, reply))
    return replies


HAND_WRITTEN = [
    ("multipart/mixed; boundary=XX", b""),
    ("multipart/mixed; boundary=XX", b"--XX--\r\n"),
    ("multipart/mixed; boundary=XX", b"--XX\r\n\r\nHTTP/1.1 200 OK\r\n\r\n{}\r\n--XX--"),
    ("multipart/mixed; boundary=XX",
     b"--XX\r\nContent-ID: <a + 1>\r\n\r\nHTTP/1.1 200 OK\r\nA: b\r\n\r\n{}\r\n--XX--"),
    ('multipart/mixed; boundary="XX"',
     b"--XX\nContent-ID: <a + 1>\n\nHTTP/1.1 200 OK\nA: b\n\n{}\n--XX--\n"),
    ("multipart/mixed; boundary=XX",
     b"--XX\r\nContent-ID: <a + 1>\r\n\r\nHTTP/1.1 200 OK\nA: b\n\n{}\r\n--XX--"),
    ("multipart/mixed; boundary=XX",
     b"--XX\r\nContent-ID: <a + 1>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n{}\r\n"),  # no closing
    ("multipart/mixed; boundary=XX",
     b"--XX\r\nContent-ID: <a + 1>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n{}\r\n--XXY\r\n--XX--"),
    ("multipart/mixed; boundary=XX",
     b"--XX\r\nContent-ID: <a + 1>\r\n\r\nHTTP/1.1 200\r\n\r\n{}\r\n--XX--"),  # no reason
    ("multipart/mixed; boundary=XX",
     b"--XX\r\nContent-ID: <a + 1>\r\n\r\nHTTP/1.1 200 OK\r\nA: b\r\n{}\r\n--XX--"),
    ("multipart/mixed; boundary=XX",
     b"--XX\r\nContent-ID: <a + 1>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n\xc3\xa9\r\n--XX--"),
    ("multipart/mixed; boundary=XX", b"\xff--XX--"),
    ("text/plain", b"--XX\r\n\r\n"),
]


# -- reading --------------------------------------------------------------------------------
def test_lean_reading_matches_the_library_on_generated_replies():
    replies = HAND_WRITTEN + generated_replies(seed=20261127, count=1500)
    outcomes, bad = [], []
    for index, (content_type, reply) in enumerate(replies):
        want, got = library_read(content_type, reply), lean_read(content_type, reply)
        outcomes.append(want)
        if want != got:
            bad.append("#%d %r %r\n  library: %r\n  ours:    %r"
                       % (index, content_type, reply, want, got))
    assert not bad, "%d of %d replies read differently:\n%s" % (
        len(bad), len(replies), "\n".join(bad[:5]))
    # The set must exercise both sides: many multi-part answers, and failures of every kind.
    multi = sum(1 for o in outcomes if o[0] == "ok" and len(o[1]) >= 2)
    kinds = {o[1] for o in outcomes if o[0] == "err"}
    assert multi >= 250, multi
    assert {"BatchError", "ValueError", "IndexError", "TypeError",
            "UnicodeDecodeError"} <= kinds, kinds


def test_library_reading_is_execute_itself(loopback):
    """The stand-in for the library's reading gives what BatchHttpRequest._execute gives over
    HTTP, and so does the lean batch's own `_execute`."""
    replies = HAND_WRITTEN + generated_replies(seed=7, count=120)
    bad = []
    for index, (content_type, reply) in enumerate(replies):
        want = loopback.run(BatchHttpRequest(batch_uri=loopback.url), content_type, reply)
        read = library_read(content_type, reply)
        lean = loopback.run(LEAN(batch_uri=loopback.url), content_type, reply)
        if content_type is None:  # no header: both fail on resp["content-type"]
            read = want
        if not want == read == lean:
            bad.append("#%d %r %r\n  _execute: %r\n  read:     %r\n  lean:     %r"
                       % (index, content_type, reply, want, read, lean))
    assert not bad, "\n".join(bad[:5])


# -- building -------------------------------------------------------------------------------
_CHARS = "abcXYZ019.!$&'*+-=^_`~|/?#%:;,[]{} @\u00e9\u2028\"<>\\\t\u00a0\U0001f600"


def _tricky(rnd, fixed, count, longest):
    return fixed + ["".join(rnd.choice(_CHARS) for _ in range(rnd.randint(0, longest)))
                    for _ in range(count)]


@pytest.fixture(scope="module")
def resources():
    """users().messages() as the provider builds it, for two endpoints."""
    def messages(endpoint):
        service = build("gmail", "v1", http=httplib2.Http(), static_discovery=True,
                        cache_discovery=False, client_options={"api_endpoint": endpoint})
        return service.users().messages()
    return [messages("https://gmail.googleapis.com/"),
            messages("http://127.0.0.1:8443/sandbox/gmail/")]


def _request_facts(request):
    model = request.postproc.__self__
    return (request.uri, request.method, request.body, request.headers, request.methodId,
            request.resumable, request.body_size, request.response_callbacks,
            type(model), request.postproc.__func__, vars(model))


def _credentials(rnd):
    token = "ya29." + "".join(rnd.choice("abcXYZ0189-_.") for _ in range(rnd.randint(1, 300)))
    return Credentials(token=token)


def _serialized(batch_class, request, credentials):
    request.http = google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http())
    return batch_class(batch_uri="http://127.0.0.1/batch")._serialize_request(request)


def test_request_cache_builds_what_the_discovery_method_builds(resources):
    rnd = random.Random(1127)
    subjects = _tricky(rnd, ["carol@corp.example", "o'brien+tag@x-y.example", "",
                             "a!$&'*+-=^_`~b@c.example", "me", "%40", "a/b@c", "\u00e9@x.example",
                             "\ud800@x"], 60, 24)
    ids = _tricky(rnd, ["18c0ffee", "", "A-b_9", "..", "/", "%2F", "a b", "\ud800"], 30, 12)
    queries = _tricky(rnd, ["rfc822msgid:<a@b>", "rfc822msgid:<x.y+z%41/?#&=@[1.2.3.4]>",
                            "rfc822msgid:<zq7userIdStandIn@x>", "zq7idStandIn", ""], 80, 30)
    bodies = [next_action(["INBOX"], Destination.JUNK)[1],
              next_action(["SPAM"], Destination.INBOX)[1],
              {"addLabelIds": ["\u00e9"], "removeLabelIds": []}]
    odd_values = [None, 5, b"carol@x"]  # not str: the library's own path
    cases = bad = 0
    failures, shapes = [], set()
    for messages in resources:
        cache = RequestCache(messages)
        for round_ in range(600):
            method = rnd.choice(["list", "get", "modify", "trash", "untrash", "delete"])
            query = rnd.choice(queries[:5])
            if round_ % 3 == 0:  # every query in turn: more list shapes than the cache holds
                method, query = "list", queries[round_ // 3 % len(queries)]
            subject = rnd.choice(odd_values if rnd.random() < 0.02 else subjects)
            gmail_id = rnd.choice(odd_values if rnd.random() < 0.02 else ids)
            call = Call(CopyTask(Target(subject, None), 0), method, gmail_id,
                        rnd.choice(bodies) if method == "modify" else None)
            want = _outcome(lambda: call.build(messages, query))
            got = _outcome(lambda: cache.build(call, query))
            cases += 1
            shapes.add((method, query if method == "list" else "", repr(call.body)))
            if want[0] == got[0] == "ok":
                same = _request_facts(want[1]) == _request_facts(got[1])
                if same and type(subject) is str and type(gmail_id) is str:
                    # The part written for it: the library's MIME writer on its own request.
                    credentials = _credentials(rnd)
                    same = (_serialized(BatchHttpRequest, want[1], credentials)
                            == _serialized(LEAN, got[1], credentials))
            else:
                same = want == got
            if not same:
                bad += 1
                failures.append("%s %r %r %r\n  library: %r\n  ours:    %r" % (
                    method, subject, gmail_id, query,
                    want[1].uri if want[0] == "ok" else want,
                    got[1].uri if got[0] == "ok" else got))
        assert any(shape.uri is not None for shape in cache._shapes.values())
        assert len(shapes) > MAX_SHAPES, len(shapes)  # so the cache was emptied on the way
        shapes.clear()
    assert not bad, "%d of %d calls differ:\n%s" % (bad, cases, "\n".join(failures[:5]))


def test_batches_on_the_wire_match_the_library(loopback, resources):
    """A whole batch as the library writes it (discovery requests, BatchHttpRequest) and as
    the provider writes it (RequestCache, the lean batch): the same bytes once the random
    boundary is set aside."""
    rnd = random.Random(42)
    messages = resources[1]
    cache = RequestCache(messages)
    subjects = ["carol@corp.example", "o'brien+x@a-b.example", "a!$&'*+-=^_`~b@c.example",
                "\u00e9 x@y.example"]
    query = "rfc822msgid:<x.y+z%41/?&=@[1.2.3.4]>"
    bodies = [next_action(["INBOX"], Destination.JUNK)[1],
              next_action(["SPAM"], Destination.INBOX)[1]]
    reply = (b"--XX\r\nContent-ID: <r + 0>\r\n\r\nHTTP/1.1 200 OK\r\n"
             b"Content-Type: application/json\r\n\r\n{}\r\n--XX--\r\n")
    for trial in range(25):
        calls = []
        for _ in range(rnd.randint(1, 30)):
            method = rnd.choice(["list", "get", "modify", "trash", "untrash", "delete"])
            task = CopyTask(Target(rnd.choice(subjects), None), 0)
            task.creds = _credentials(rnd)
            calls.append(Call(task, method, "%x" % rnd.getrandbits(40),
                              rnd.choice(bodies) if method == "modify" else None))
        sent = []
        for batch_class, make in ((BatchHttpRequest, lambda c: c.build(messages, query)),
                                  (LEAN, lambda c: cache.build(c, query))):
            batch = batch_class(batch_uri=loopback.url)
            batch._base_id = BASE_ID
            order, requests = [], {}
            for index, call in enumerate(calls):
                request = make(call)
                request.http = google_auth_httplib2.AuthorizedHttp(call.task.creds,
                                                                   http=loopback.http)
                order.append(str(index))
                requests[str(index)] = request
            del loopback.server.seen[:]
            outcome = loopback.run(batch, "multipart/mixed; boundary=XX", reply, order, requests)
            assert outcome[0] == "ok", outcome
            ((path, content_type, body),) = loopback.server.seen
            boundary = content_type.split('boundary="', 1)[1][:-1]
            assert content_type == 'multipart/mixed; boundary="%s"' % boundary
            sent.append((path, body.replace(boundary.encode(), b"BOUNDARY")))
        assert sent[0] == sent[1], "trial %d:\n%s\n%s" % (
            trial, sent[0][1][:2000], sent[1][1][:2000])


def test_execute_agrees_with_the_library_when_parts_go_missing(loopback, resources):
    """execute() end to end: callbacks, and a part left out or answered twice."""
    messages = resources[1]
    cid = "<response-%s + %%s>" % BASE_ID
    ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"id\": \"%s\"}"
    missing = ("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n"
               "{\"error\": {\"code\": 404, \"message\": \"Not Found\"}}")

    def reply(answers):
        text = "".join("--XX\r\nContent-ID: %s\r\n\r\n%s\r\n" % (cid % i, body)
                       for i, body in answers)
        return (text + "--XX--").encode()

    replies = [reply([(0, ok % 0), (1, missing), (2, ok % 2)]),
               reply([(2, ok % 2), (0, ok % 0)]),                      # part 1 left out
               reply([(0, ok % 0), (1, ok % 1), (1, missing), (2, ok % 2)]),
               reply([(0, ok % 0), (1, ok % 1), (2, ok % 2), (7, ok % 7)])]
    kinds = set()
    for content in replies:
        outcomes = []
        for batch_class in (BatchHttpRequest, LEAN):
            seen = []

            def callback(request_id, response, exception):
                seen.append((request_id, response, type(exception).__name__,
                             getattr(exception, "status_code", None)))

            batch = batch_class(callback=callback, batch_uri=loopback.url)
            batch._base_id = BASE_ID
            for index in range(3):
                request = messages.get(userId="me", id="m%d" % index)
                request.http = google_auth_httplib2.AuthorizedHttp(
                    Credentials(token="ya29.x"), http=loopback.http)
                batch.add(request, request_id=str(index))
            loopback.server.reply = ("multipart/mixed; boundary=XX", content)
            outcomes.append((_outcome(lambda: batch.execute(http=loopback.http)), seen))
        assert outcomes[0] == outcomes[1], content
        kinds.add(outcomes[0][0][:2])
    assert kinds == {("ok", None), ("err", "KeyError")}, kinds
