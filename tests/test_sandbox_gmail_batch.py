"""The sandbox's Google multipart batch: wire format against googleapiclient's own parser, then
BatchHttpRequest end to end (several subjects, limits, per-part faults and quota)."""
import json
from email.parser import FeedParser

import pytest
import requests
from google.auth.transport.requests import AuthorizedSession, Request
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest
from multidict import CIMultiDict

from sandbox.gmail import ApiResponse
from sandbox.gmail_batch import (BatchFormatError, parse_batch, parse_inner_request,
                                 serialize_batch)

pytest_plugins = ["sandbox.pytest_plugin"]

MODIFY = "https://www.googleapis.com/auth/gmail.modify"
MEMBERS = "https://www.googleapis.com/auth/admin.directory.group.member.readonly"
ABC = "<abc@evil.example>"
CAROL, DAVE = "carol@corp-mail.example", "dave@corp-mail.example"


# -- wire format -----------------------------------------------------------------------------
def test_serialized_response_parses_with_googleapiclient():
    answers = [("<base-1 + 1>", ApiResponse(200, {"id": "abc", "labelIds": ["INBOX"]})),
               ("<base-1 + 2>", ApiResponse(204)),
               ("<base-1 + 3>", ApiResponse(429, {"error": {"code": 429}}, {"Retry-After": "2"}))]
    content_type, body = serialize_batch(answers)
    assert b"\n" not in body.replace(b"\r\n", b"")  # CRLF framing only
    # exactly what BatchHttpRequest._execute does with a response
    parser = FeedParser()
    parser.feed("content-type: %s\r\n\r\n" % content_type + body.decode("utf-8"))
    message = parser.close()
    assert message.is_multipart()
    batch = BatchHttpRequest(batch_uri="http://127.0.0.1/batch/gmail/v1")
    parsed = {}
    for part in message.get_payload():
        response, content = batch._deserialize_response(part.get_payload())
        parsed[batch._header_to_id(part["Content-ID"])] = (response.status, response, content)
    assert parsed["1"][0] == 200 and json.loads(parsed["1"][2]) == {"id": "abc",
                                                                    "labelIds": ["INBOX"]}
    assert parsed["2"][0] == 204 and parsed["2"][2] == ""
    assert parsed["3"][0] == 429 and parsed["3"][1]["retry-after"] == "2"


def test_parse_accepts_lf_and_crlf_parts_and_inherits_outer_headers():
    body = ("--XX\r\nContent-Type: application/http\r\nContent-ID: <a + 1>\r\n\r\n"
            "GET /gmail/v1/users/me/messages?q=rfc822msgid%3A%3Cx%40y%3E&alt=json HTTP/1.1\r\n"
            "Accept: application/json\r\n\r\n"
            "\r\n--XX\r\nContent-Type: application/http\r\nContent-ID: <a + 2>\r\n\r\n"
            "POST /gmail/v1/users/me/messages/0123/modify HTTP/1.1\n"
            "Content-Type: application/json\nAuthorization: Bearer part-token\n\n"
            '{"addLabelIds": ["SPAM"]}'
            "\r\n--XX--\r\n").encode()
    outer = CIMultiDict({"Authorization": "Bearer outer-token", "Content-Type": "x"})
    parts = parse_batch("multipart/mixed; boundary=XX", body, outer)
    assert [p.content_id for p in parts] == ["<a + 1>", "<a + 2>"]
    first, second = parts[0].request, parts[1].request
    assert (first.method, first.path, first.query["q"]) == ("GET", "/gmail/v1/users/me/messages",
                                                            "rfc822msgid:<x@y>")
    assert first.headers["Authorization"] == "Bearer outer-token"
    assert second.headers["Authorization"] == "Bearer part-token"
    assert json.loads(second.body) == {"addLabelIds": ["SPAM"]}


def test_parse_refuses_what_is_not_a_batch():
    with pytest.raises(BatchFormatError):
        parse_batch("application/json", b"{}", CIMultiDict())
    with pytest.raises(BatchFormatError):
        parse_inner_request(b"garbage", CIMultiDict())


# -- end to end ------------------------------------------------------------------------------
def gmail(sandbox, subject, scopes=(MODIFY,)):
    info = sandbox.credentials()["google"][0]["service_account_info"]
    creds = service_account.Credentials.from_service_account_info(info, scopes=list(scopes),
                                                                  subject=subject)
    return build("gmail", "v1", credentials=creds, static_discovery=True,
                 cache_discovery=False,
                 client_options={"api_endpoint": sandbox.urls["gmail_url"]})


def copy_id(sandbox, address, message_id=ABC):
    view = sandbox.mailbox_view(address)
    return next(c["id"] for c in view["copies"] if c["message_id"] == message_id)


def folder(sandbox, address, message_id=ABC):
    view = sandbox.mailbox_view(address)
    return next(c["folder"] for c in view["copies"] if c["message_id"] == message_id)


class Collector(object):
    def __init__(self):
        self.results = {}

    def __call__(self, request_id, response, exception):
        self.results[request_id] = (response, exception)


def run_batch(sandbox, calls, uri_key="gmail_batch_uri"):
    collector = Collector()
    batch = BatchHttpRequest(callback=collector, batch_uri=sandbox.urls[uri_key])
    for i, request in enumerate(calls):
        batch.add(request, request_id=str(i))
    batch.execute()
    return collector.results


def test_one_batch_carries_two_subjects_each_with_its_own_token(sandbox):
    carol, dave = gmail(sandbox, CAROL), gmail(sandbox, DAVE)
    results = run_batch(sandbox, [
        carol.users().messages().trash(userId="me", id=copy_id(sandbox, CAROL)),
        dave.users().messages().modify(userId="me", id=copy_id(sandbox, DAVE),
                                       body={"addLabelIds": ["INBOX"],
                                             "removeLabelIds": ["SPAM"]}),
        carol.users().messages().list(userId="me", q="rfc822msgid:%s" % ABC,
                                      includeSpamTrash=True),
    ])
    assert all(exc is None for _, exc in results.values())
    assert results["0"][0]["labelIds"] == ["INBOX", "TRASH"]
    assert results["1"][0]["labelIds"] == ["UNREAD", "INBOX"]
    assert results["2"][0]["resultSizeEstimate"] == 1
    assert folder(sandbox, CAROL) == "trash" and folder(sandbox, DAVE) == "inbox"
    actors = {e["mailbox"]: e["actor"].split(" as ")[1] for e in sandbox.audit()}
    assert actors == {CAROL: CAROL, DAVE: DAVE}
    counters = sandbox.counters.snapshot()
    assert counters["statuses"]["gmail.messages.trash"] == {"200": 1}
    assert counters["statuses"]["gmail.messages.modify"]["200"] == 1
    assert counters["routes"]["gmail.batch"] >= 1


def test_more_than_100_parts_is_400(sandbox):
    carol = gmail(sandbox, CAROL)
    carol.users().messages().list(userId="me").execute()  # a token for the outer request
    batch = BatchHttpRequest(batch_uri=sandbox.urls["gmail_batch_uri"])
    for _ in range(101):
        batch.add(carol.users().messages().get(userId="me", id=copy_id(sandbox, CAROL)))
    with pytest.raises(HttpError) as caught:
        batch.execute()
    assert caught.value.status_code == 400
    assert "Too many requests in batch" in caught.value.content.decode()
    assert "gmail.messages.get" not in sandbox.counters.snapshot()["routes"]


def test_exactly_100_parts_are_served(sandbox):
    carol = gmail(sandbox, CAROL)
    target = copy_id(sandbox, CAROL)
    get = carol.users().messages().get
    results = run_batch(sandbox, [get(userId="me", id=target, format="minimal")
                                  for _ in range(100)])
    assert len(results) == 100 and all(exc is None for _, exc in results.values())


def test_injected_faults_hit_single_parts_and_skip_them(sandbox):
    carol = gmail(sandbox, CAROL)
    carol.users().messages().list(userId="me").execute()
    sandbox.set_faults(gmail={"rate_429": 1.0, "retry_after": 3})
    results = run_batch(sandbox, [
        carol.users().messages().trash(userId="me", id=copy_id(sandbox, CAROL)),
        carol.users().messages().list(userId="me"),
    ])
    for _, exc in results.values():
        assert exc is not None and exc.status_code == 429
        assert exc.resp["retry-after"] == "3"
    assert folder(sandbox, CAROL) == "inbox"  # the 429'd trash never ran
    assert sandbox.faults.to_dict()["injected"]["gmail"] == {"429": 2}
    assert sandbox.counters.snapshot()["statuses"]["gmail.batch"] == {"200": 1}


def test_a_dropped_part_is_done_but_its_answer_lost(sandbox):
    carol = gmail(sandbox, CAROL)
    carol.users().messages().list(userId="me").execute()
    sandbox.set_faults(gmail={"rate_drop": 1.0})
    results = run_batch(sandbox, [carol.users().messages().trash(userId="me",
                                                                 id=copy_id(sandbox, CAROL))])
    assert results["0"][1].status_code == 503
    assert folder(sandbox, CAROL) == "trash"


def test_a_lost_reply_runs_the_write_part_and_answers_504(sandbox):
    carol = gmail(sandbox, CAROL)
    target = copy_id(sandbox, CAROL)
    sandbox.set_faults(gmail={"rate_lost_reply": 1.0})
    results = run_batch(sandbox, [
        carol.users().messages().modify(userId="me", id=target,
                                        body={"addLabelIds": ["SPAM"],
                                              "removeLabelIds": ["INBOX"]}),
        carol.users().messages().get(userId="me", id=target, format="minimal"),
    ])
    lost = results["0"][1]
    assert lost is not None and lost.status_code == 504
    assert "labelIds" not in lost.content.decode()  # no trace of the result
    assert folder(sandbox, CAROL) == "junk"  # ... but the write ran
    assert results["1"][1] is None  # reads keep their answers
    assert sandbox.faults.to_dict()["injected"]["gmail"] == {"lost_reply": 1}
    assert sandbox.counters.snapshot()["statuses"]["gmail.messages.modify"] == {"504": 1}


def test_a_lost_reply_to_a_single_write_drops_the_connection(sandbox):
    session = AuthorizedSession(service_account.Credentials.from_service_account_info(
        sandbox.credentials()["google"][0]["service_account_info"], scopes=[MODIFY],
        subject=CAROL))
    session.trust_env = False
    base = "%s/gmail/v1/users/me/messages/%s" % (sandbox.urls["gmail_url"],
                                                 copy_id(sandbox, CAROL))
    assert session.get(base).status_code == 200  # the token first
    sandbox.set_faults(gmail={"rate_lost_reply": 1.0})
    with pytest.raises(requests.ConnectionError):
        session.post(base + "/trash")
    assert folder(sandbox, CAROL) == "trash"
    assert session.get(base).status_code == 200  # a read is never lost
    assert sandbox.faults.to_dict()["injected"]["gmail"] == {"lost_reply": 1}


def test_quota_is_charged_per_part(sandbox):
    sandbox.set_faults(gmail_user_quota=12)
    carol = gmail(sandbox, CAROL)
    results = run_batch(sandbox, [carol.users().messages().list(userId="me")
                                  for _ in range(4)])
    statuses = sorted(200 if exc is None else exc.status_code for _, exc in results.values())
    assert statuses == [200, 200, 429, 429]


def test_legacy_global_batch_serves_gmail_and_directory_parts(sandbox):
    info = sandbox.credentials()["google"][0]["service_account_info"]
    creds = service_account.Credentials.from_service_account_info(info, scopes=[MEMBERS],
                                                                  subject=CAROL)
    admin = build("admin", "directory_v1", credentials=creds, static_discovery=True,
                  cache_discovery=False,
                  client_options={"api_endpoint": sandbox.urls["directory_url"]})
    carol = gmail(sandbox, CAROL)
    collector = Collector()
    batch = BatchHttpRequest(callback=collector, batch_uri=sandbox.urls["gmail_url"] + "/batch")
    batch.add(carol.users().messages().list(userId="me"), request_id="mail")
    batch.add(admin.members().list(groupKey="team@corp-mail.example"), request_id="dir")
    batch.execute()
    assert collector.results["mail"][1] is None
    assert {m["email"] for m in collector.results["dir"][0]["members"]} == {CAROL, DAVE}
    assert sandbox.counters.snapshot()["routes"]["gmail.legacy.batch"] >= 1


def test_raw_batch_part_without_authorization_uses_the_outer_header(sandbox):
    info = sandbox.credentials()["google"][0]["service_account_info"]
    creds = service_account.Credentials.from_service_account_info(info, scopes=[MODIFY],
                                                                  subject=CAROL)
    creds.refresh(Request())
    token = creds.token
    body = ("--B\r\nContent-Type: application/http\r\nContent-ID: <x + 1>\r\n\r\n"
            "GET /gmail/v1/users/me/messages HTTP/1.1\r\n\r\n"
            "\r\n--B\r\nContent-Type: application/http\r\nContent-ID: <x + 2>\r\n\r\n"
            "GET /gmail/v1/users/me/drafts HTTP/1.1\r\n\r\n"
            "\r\n--B--\r\n")
    response = sandbox.requests_session().post(
        sandbox.urls["gmail_batch_uri"], data=body.encode(),
        headers={"Content-Type": "multipart/mixed; boundary=B",
                 "Authorization": "Bearer " + token})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("multipart/mixed; boundary=")
    text = response.text
    assert "Content-ID: <response-x + 1>\r\n\r\nHTTP/1.1 200 OK\r\n" in text
    assert "Content-ID: <response-x + 2>\r\n\r\nHTTP/1.1 404 Not Found\r\n" in text


def test_non_multipart_batch_is_400(sandbox):
    response = sandbox.requests_session().post(sandbox.urls["gmail_batch_uri"], data=b"{}",
                                               headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0]["reason"] == "badRequest"
