"""The sandbox's Gmail API and Admin SDK Directory fronts: the search grammar on its own, then
every call the pack makes through google-auth + googleapiclient (static discovery) over HTTP."""
import datetime as dt
import json
import time

import pytest
from google.auth.transport.requests import AuthorizedSession, Request
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from sandbox.gmail_search import Candidate, Query, search

pytest_plugins = ["sandbox.pytest_plugin"]

MODIFY = "https://www.googleapis.com/auth/gmail.modify"
MAIL = "https://mail.google.com/"
MEMBERS = "https://www.googleapis.com/auth/admin.directory.group.member.readonly"
ABC = "<abc@evil.example>"
CAROL, DAVE = "carol@corp-mail.example", "dave@corp-mail.example"


# -- the search grammar -------------------------------------------------------------------------
def cand(key, message_id, subject="", sender="", labels=("INBOX",)):
    return Candidate(key, message_id, subject, sender, "carol@corp-mail.example",
                     frozenset(labels))


MAILBOX = [
    cand("1", "<abc@evil.example>", "Invoice due", "billing@evil.example", ("INBOX", "UNREAD")),
    cand("2", "<lunch@corp.example>", "Lunch?", "bob@corp.example", ("INBOX",)),
    cand("3", "<junk@spam.example>", "Win big", "promo@spam.example", ("SPAM", "UNREAD")),
    cand("4", "<old@corp.example>", "Old invoice", "billing@evil.example", ("TRASH", "INBOX")),
    cand("5", "<arch@corp.example>", "Archived dinner movie", "friend@corp.example", ()),
]


def keys(query, include_spam_trash=False):
    return [c.key for c in search(query, MAILBOX, include_spam_trash)]


def test_rfc822msgid_matches_with_or_without_brackets():
    assert keys("rfc822msgid:<abc@evil.example>") == ["1"]
    assert keys("rfc822msgid:abc@evil.example") == ["1"]
    assert keys("rfc822msgid:<nope@evil.example>") == []


def test_spam_and_trash_are_hidden_unless_asked_for():
    assert keys("from:billing@evil.example") == ["1"]
    assert keys("from:billing@evil.example", include_spam_trash=True) == ["1", "4"]
    assert keys("rfc822msgid:<old@corp.example> in:trash") == ["4"]
    assert keys("in:spam") == ["3"]
    assert keys("label:trash") == ["4"]


def test_injected_or_widens_the_search_to_every_message():
    # what a crafted Message-ID "<x@y> OR in:anywhere" does to a naive rfc822msgid: query
    assert keys("rfc822msgid:<x@y> OR in:anywhere") == ["1", "2", "3", "4", "5"]
    assert keys("rfc822msgid:<x@y> OR {in:inbox}") == ["1", "2"]
    assert keys("rfc822msgid:<x@y>) OR (in:anywhere") != []


def test_and_binds_looser_than_or_and_negation_and_groups():
    assert keys("invoice billing OR lunch") == ["1"]
    assert keys("{lunch invoice}") == ["1", "2"]
    assert keys("(lunch OR win) -is:unread") == ["2"]
    assert keys("subject:(dinner movie)") == ["5"]
    assert keys('subject:"dinner movie"') == ["5"]
    assert keys('subject:"movie dinner"') == []
    assert keys("is:unread", include_spam_trash=True) == ["1", "3"]
    assert keys("in:inbox", include_spam_trash=True) == ["1", "2"]  # trash hides INBOX
    assert keys("AND lunch") == ["2"]
    assert keys("") == ["1", "2", "5"]


def test_unbalanced_syntax_is_tolerated():
    assert keys("(lunch") == ["2"]
    assert keys('"lunch') == ["2"]
    assert keys("lunch )") == ["2"]
    assert keys("- lunch") == ["2"]
    assert keys("unknown:op") == []
    assert Query("rfc822msgid:<a@b> OR in:anywhere").names_spam_or_trash


# -- Gmail over HTTP -------------------------------------------------------------------------
def key_info(sandbox):
    return sandbox.credentials()["google"][0]["service_account_info"]


def creds_for(sandbox, subject, scopes=(MODIFY,)):
    return service_account.Credentials.from_service_account_info(
        key_info(sandbox), scopes=list(scopes), subject=subject)


def gmail(sandbox, subject, scopes=(MODIFY,)):
    return build("gmail", "v1", credentials=creds_for(sandbox, subject, scopes),
                 static_discovery=True, cache_discovery=False,
                 client_options={"api_endpoint": sandbox.urls["gmail_url"]})


def error_of(caught):
    return json.loads(caught.value.content.decode("utf-8"))["error"]


def find(service, message_id, **kwargs):
    kwargs.setdefault("includeSpamTrash", True)
    return service.users().messages().list(
        userId="me", q="rfc822msgid:%s" % message_id, **kwargs).execute()


def copy_of(sandbox, address, message_id):
    view = sandbox.mailbox_view(address)
    return next(c for c in view["copies"] if c["message_id"] == message_id)


def test_list_get_metadata_and_minimal(sandbox):
    service = gmail(sandbox, CAROL)
    found = find(service, ABC)
    assert found["resultSizeEstimate"] == 1
    message_id = found["messages"][0]["id"]
    assert message_id == copy_of(sandbox, CAROL, ABC)["id"]
    meta = service.users().messages().get(userId="me", id=message_id, format="metadata",
                                          metadataHeaders=["Message-ID"]).execute()
    assert meta["payload"]["headers"] == [{"name": "Message-ID", "value": ABC}]
    assert meta["labelIds"] == ["INBOX"]  # carol's copy is read
    minimal = service.users().messages().get(userId=CAROL, id=message_id,
                                             format="minimal").execute()
    assert set(minimal) == {"id", "threadId", "labelIds", "snippet", "sizeEstimate",
                            "historyId", "internalDate"}
    assert "payload" not in minimal


def test_nothing_found_has_no_messages_key(sandbox):
    result = find(gmail(sandbox, CAROL), "<none@evil.example>")
    assert result == {"resultSizeEstimate": 0}


def test_spam_copy_needs_include_spam_trash(sandbox):
    service = gmail(sandbox, DAVE)
    assert find(service, ABC, includeSpamTrash=False) == {"resultSizeEstimate": 0}
    found = find(service, ABC)
    got = service.users().messages().get(userId="me", id=found["messages"][0]["id"],
                                         format="minimal").execute()
    assert got["labelIds"] == ["UNREAD", "SPAM"]


def test_crafted_message_id_widens_the_search_here_as_at_google(sandbox):
    service = gmail(sandbox, CAROL)
    honest = find(service, ABC)
    injected = find(service, "<x@y> OR in:anywhere")
    assert honest["resultSizeEstimate"] == 1
    assert injected["resultSizeEstimate"] == len(sandbox.mailbox_view(CAROL)["copies"]) == 2


def test_list_pages_with_page_tokens(sandbox):
    sandbox.add_mailbox(CAROL, copies=[{"message_id": "<p%d@corp.example>" % i,
                                        "subject": "page"} for i in range(7)])
    messages = gmail(sandbox, CAROL).users().messages()
    request = messages.list(userId="me", q="subject:page", maxResults=3)
    seen, pages = [], 0
    while request is not None:
        response = request.execute()
        pages += 1
        seen.extend(m["id"] for m in response.get("messages", []))
        assert response["resultSizeEstimate"] == 7
        request = messages.list_next(request, response)
    assert pages == 3 and len(set(seen)) == 7


def test_trash_keeps_inbox_label_and_untrash_restores(sandbox):
    service = gmail(sandbox, CAROL)
    message_id = find(service, ABC)["messages"][0]["id"]
    trashed = service.users().messages().trash(userId="me", id=message_id).execute()
    assert trashed == {"id": message_id, "threadId": message_id, "labelIds": ["INBOX", "TRASH"]}
    assert copy_of(sandbox, CAROL, ABC)["folder"] == "trash"
    inbox = service.users().messages().list(userId="me", q="in:inbox").execute()
    assert message_id not in [m["id"] for m in inbox.get("messages", [])]
    restored = service.users().messages().untrash(userId="me", id=message_id).execute()
    assert restored["labelIds"] == ["INBOX"]
    assert copy_of(sandbox, CAROL, ABC)["folder"] == "inbox"
    actor = "%s as %s" % (key_info(sandbox)["client_email"], CAROL)
    audit = [(e["actor"], e["action"], e["before"], e["after"]) for e in sandbox.audit()]
    assert audit == [(actor, "trash", "inbox,read", "trash,read"),
                     (actor, "untrash", "trash,read", "inbox,read")]


def test_modify_moves_to_junk_and_back(sandbox):
    service = gmail(sandbox, CAROL)
    message_id = find(service, ABC)["messages"][0]["id"]
    junked = service.users().messages().modify(
        userId="me", id=message_id,
        body={"addLabelIds": ["SPAM", "UNREAD"], "removeLabelIds": ["INBOX"]}).execute()
    assert junked["labelIds"] == ["UNREAD", "SPAM"]
    assert copy_of(sandbox, CAROL, ABC)["folder"] == "junk"
    assert copy_of(sandbox, CAROL, ABC)["is_read"] is False
    back = service.users().messages().modify(
        userId="me", id=message_id,
        body={"addLabelIds": ["INBOX"], "removeLabelIds": ["SPAM", "UNREAD"]}).execute()
    assert back["labelIds"] == ["INBOX"]
    # a no-op change is answered but not audited
    service.users().messages().modify(userId="me", id=message_id,
                                      body={"addLabelIds": ["INBOX"]}).execute()
    assert [e["action"] for e in sandbox.audit()] == ["modify", "modify"]


def test_adding_spam_keeps_inbox_label_until_removed(sandbox):
    service = gmail(sandbox, CAROL)
    message_id = find(service, ABC)["messages"][0]["id"]
    both = service.users().messages().modify(userId="me", id=message_id,
                                             body={"addLabelIds": ["SPAM"]}).execute()
    assert both["labelIds"] == ["INBOX", "SPAM"]
    assert copy_of(sandbox, CAROL, ABC)["folder"] == "junk"
    trashed = service.users().messages().trash(userId="me", id=message_id).execute()
    assert trashed["labelIds"] == ["INBOX", "TRASH"]  # SPAM and TRASH exclude each other


def test_modify_refuses_labels_the_sandbox_does_not_keep(sandbox):
    service = gmail(sandbox, CAROL)
    message_id = find(service, ABC)["messages"][0]["id"]
    with pytest.raises(HttpError) as caught:
        service.users().messages().modify(userId="me", id=message_id,
                                          body={"addLabelIds": ["STARRED"]}).execute()
    assert caught.value.status_code == 400
    assert error_of(caught)["message"] == "Invalid label: STARRED"


def test_delete_needs_the_full_mail_scope(sandbox):
    service = gmail(sandbox, CAROL)
    message_id = find(service, ABC)["messages"][0]["id"]
    with pytest.raises(HttpError) as caught:
        service.users().messages().delete(userId="me", id=message_id).execute()
    assert caught.value.status_code == 403
    assert error_of(caught)["errors"][0]["reason"] == "insufficientPermissions"
    assert error_of(caught)["status"] == "PERMISSION_DENIED"
    sandbox.set_google_scopes(key_info(sandbox)["client_email"], [MODIFY, MAIL])
    full = gmail(sandbox, CAROL, scopes=(MAIL,))
    assert full.users().messages().delete(userId="me", id=message_id).execute() == ""  # 204
    assert copy_of(sandbox, CAROL, ABC)["folder"] == "purged"
    assert find(full, ABC) == {"resultSizeEstimate": 0}
    with pytest.raises(HttpError) as caught:
        full.users().messages().get(userId="me", id=message_id).execute()
    assert caught.value.status_code == 404
    assert sandbox.audit()[-1]["action"] == "delete"


def test_batch_modify_and_its_limit(sandbox):
    service = gmail(sandbox, DAVE)
    dave_copy = copy_of(sandbox, DAVE, ABC)["id"]
    result = service.users().messages().batchModify(userId="me", body={
        "ids": [dave_copy, "00000000000000ff"], "addLabelIds": ["TRASH"],
        "removeLabelIds": ["UNREAD"]}).execute()
    assert result == ""  # 204, no body
    assert copy_of(sandbox, DAVE, ABC)["folder"] == "trash"
    assert copy_of(sandbox, DAVE, ABC)["is_read"] is True
    with pytest.raises(HttpError) as caught:
        service.users().messages().batchModify(userId="me", body={
            "ids": ["%016x" % i for i in range(1001)], "addLabelIds": ["SPAM"]}).execute()
    assert caught.value.status_code == 400


def test_unknown_and_malformed_ids(sandbox):
    messages = gmail(sandbox, CAROL).users().messages()
    with pytest.raises(HttpError) as caught:
        messages.get(userId="me", id="0123456789abcdef").execute()
    assert caught.value.status_code == 404
    assert error_of(caught) == {
        "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
        "errors": [{"message": "Requested entity was not found.", "domain": "global",
                    "reason": "notFound"}]}
    with pytest.raises(HttpError) as caught:
        messages.trash(userId="me", id="not-an-id").execute()
    assert caught.value.status_code == 400


def test_another_users_mailbox_is_delegation_denied(sandbox):
    service = gmail(sandbox, CAROL)
    with pytest.raises(HttpError) as caught:
        service.users().messages().list(userId=DAVE).execute()
    assert caught.value.status_code == 403
    err = error_of(caught)
    assert err["message"] == "Delegation denied for %s" % CAROL
    assert err["errors"][0]["reason"] == "forbidden"


def test_unlicensed_mailbox_is_failed_precondition(sandbox):
    with pytest.raises(HttpError) as caught:
        find(gmail(sandbox, "gone@corp-mail.example"), ABC)
    assert caught.value.status_code == 400
    err = error_of(caught)
    assert err["message"] == "Mail service not enabled"
    assert err["errors"][0]["reason"] == "failedPrecondition"


def test_missing_bad_and_expired_tokens_are_401(sandbox):
    session = sandbox.requests_session()
    url = sandbox.urls["gmail_url"] + "/gmail/v1/users/me/messages"
    missing = session.get(url)
    assert missing.status_code == 401
    assert missing.json()["error"]["errors"][0]["reason"] == "required"
    bad = session.get(url, headers={"Authorization": "Bearer ya29.forged"})
    assert bad.status_code == 401
    assert bad.json()["error"]["status"] == "UNAUTHENTICATED"
    assert bad.json()["error"]["errors"][0]["reason"] == "authError"
    assert bad.json()["error"]["message"].startswith(
        "Request had invalid authentication credentials.")
    sandbox.set_faults(token_lifetime_s=1)
    creds = creds_for(sandbox, CAROL)
    creds.refresh(Request())
    live = session.get(url, headers={"Authorization": "Bearer " + creds.token})
    assert live.status_code == 200
    time.sleep(1.2)
    expired = session.get(url, headers={"Authorization": "Bearer " + creds.token})
    assert expired.status_code == 401
    assert expired.json()["error"]["errors"][0]["reason"] == "authError"


def test_revoked_tokens_get_401_and_google_auth_refreshes(sandbox):
    creds = creds_for(sandbox, CAROL, (MODIFY, MEMBERS))
    creds.refresh(Request())
    old = {"Authorization": "Bearer " + creds.token}
    graph = {"Authorization": "Bearer " + sandbox.graph_token()}
    session = sandbox.requests_session()
    mail_url = sandbox.urls["gmail_url"] + "/gmail/v1/users/me/messages"
    members_url = "%s/admin/directory/v1/groups/team%%40corp-mail.example/members" % (
        sandbox.urls["directory_url"])
    inbox_url = sandbox.urls["graph_url"] + "/users/alice@corp.example/mailFolders/inbox"
    assert session.get(mail_url, headers=old).status_code == 200
    assert sandbox.revoke_tokens("google") == {"revoked": ["google"]}
    for url in (mail_url, members_url):
        refused = session.get(url, headers=old)
        assert refused.status_code == 401, url
        assert refused.json()["error"]["errors"][0]["reason"] == "authError"
    assert session.get(inbox_url, headers=graph).status_code == 200  # Microsoft's untouched
    authed = AuthorizedSession(creds)  # refreshes once on a 401, as the pack's clients do
    authed.trust_env = False
    assert authed.get(mail_url).status_code == 200
    assert "Bearer " + creds.token != old["Authorization"]
    assert sandbox.counters.snapshot()["statuses"]["google.token"] == {"200": 2}
    sandbox.revoke_tokens()  # both providers
    assert session.get(inbox_url, headers=graph).status_code == 401
    assert authed.get(mail_url).status_code == 200


def test_a_token_without_subject_cannot_read_mail(sandbox):
    creds = service_account.Credentials.from_service_account_info(
        key_info(sandbox), scopes=[MODIFY])  # no subject: a token for the account itself
    service = build("gmail", "v1", credentials=creds, static_discovery=True,
                    cache_discovery=False,
                    client_options={"api_endpoint": sandbox.urls["gmail_url"]})
    with pytest.raises(HttpError) as caught:
        service.users().messages().list(userId="me").execute()
    assert caught.value.status_code == 400
    assert error_of(caught)["errors"][0]["reason"] == "failedPrecondition"
    assert sandbox.counters.snapshot()["statuses"]["google.token"] == {"200": 1}


def test_per_user_quota_is_429_and_other_users_are_unaffected(sandbox):
    sandbox.set_faults(gmail_user_quota=12)  # list costs 5 units
    carol, dave = gmail(sandbox, CAROL), gmail(sandbox, DAVE)
    find(carol, ABC)
    find(carol, ABC)
    with pytest.raises(HttpError) as caught:
        find(carol, ABC)
    assert caught.value.status_code == 429
    err = error_of(caught)
    assert err["errors"][0]["reason"] == "userRateLimitExceeded"
    assert err["errors"][0]["domain"] == "usageLimits"
    assert err["status"] == "RESOURCE_EXHAUSTED"
    assert err["message"].startswith("User-rate limit exceeded.  Retry after ")
    assert find(dave, ABC)["resultSizeEstimate"] == 1
    sandbox.set_faults(throttling=False)
    assert find(carol, ABC)["resultSizeEstimate"] == 1


def test_injected_gmail_faults_reach_the_client(sandbox):
    service = gmail(sandbox, CAROL)
    service.users().messages().list(userId="me").execute()  # token first, fault-free
    sandbox.set_faults(gmail={"rate_429": 1.0, "retry_after": 2})
    with pytest.raises(HttpError) as caught:
        service.users().messages().list(userId="me").execute()
    assert caught.value.status_code == 429
    assert caught.value.resp["retry-after"] == "2"
    assert sandbox.faults.to_dict()["injected"]["gmail"] == {"429": 1}


def test_internal_date_and_history_id_are_gmail_shaped(sandbox):
    service = gmail(sandbox, CAROL)
    message_id = find(service, ABC)["messages"][0]["id"]
    before = service.users().messages().get(userId="me", id=message_id,
                                            format="minimal").execute()
    received = dt.datetime.fromtimestamp(int(before["internalDate"]) / 1000, dt.timezone.utc)
    assert abs((received - dt.datetime.now(dt.timezone.utc)).days) <= 1
    service.users().messages().trash(userId="me", id=message_id).execute()
    after = service.users().messages().get(userId="me", id=message_id,
                                           format="minimal").execute()
    assert int(after["historyId"]) > int(before["historyId"])


# -- Admin SDK Directory ----------------------------------------------------------------------
def directory(sandbox, scopes=(MEMBERS,), subject=CAROL):
    return build("admin", "directory_v1", credentials=creds_for(sandbox, subject, scopes),
                 static_discovery=True, cache_discovery=False,
                 client_options={"api_endpoint": sandbox.urls["directory_url"]})


def test_directory_lists_group_members_with_paging(sandbox):
    members = directory(sandbox).members()
    request = members.list(groupKey="team@corp-mail.example", maxResults=1)
    emails = []
    while request is not None:
        response = request.execute()
        assert response["kind"] == "admin#directory#members"
        emails.extend(m["email"] for m in response.get("members", []))
        request = members.list_next(request, response)
    assert emails == [CAROL, DAVE]
    assert sandbox.counters.snapshot()["routes"]["directory.members.list"] == 2


def test_directory_derived_membership_expands_nested_groups(sandbox):
    with sandbox.tenant.lock:
        sandbox.tenant.add_group("outer@corp-mail.example",
                                 ["team@corp-mail.example", "erin@corp-mail.example"])
    members = directory(sandbox).members()
    direct = members.list(groupKey="outer@corp-mail.example").execute()["members"]
    assert [(m["email"], m["type"]) for m in direct] == [
        ("team@corp-mail.example", "GROUP"), ("erin@corp-mail.example", "USER")]
    derived = members.list(groupKey="outer@corp-mail.example",
                           includeDerivedMembership=True).execute()["members"]
    assert [m["email"] for m in derived] == ["team@corp-mail.example",
                                             "erin@corp-mail.example", CAROL, DAVE]


def test_directory_works_with_a_plain_authorized_session(sandbox):
    session = AuthorizedSession(creds_for(sandbox, CAROL, (MEMBERS,)))
    session.trust_env = False
    url = "%s/admin/directory/v1/groups/%s/members" % (
        sandbox.urls["directory_url"], "team%40corp-mail.example")
    response = session.get(url)
    assert response.status_code == 200
    assert {m["email"] for m in response.json()["members"]} == {CAROL, DAVE}


def test_directory_without_scope_is_403(sandbox):
    with pytest.raises(HttpError) as caught:
        directory(sandbox, scopes=(MODIFY,)).members().list(
            groupKey="team@corp-mail.example").execute()
    assert caught.value.status_code == 403
    assert error_of(caught)["errors"][0]["reason"] == "insufficientPermissions"


@pytest.mark.parametrize("group_key", [CAROL, "all-staff@corp.example",
                                       "nobody@corp-mail.example"])
def test_directory_non_group_is_404(sandbox, group_key):
    with pytest.raises(HttpError) as caught:
        directory(sandbox).members().list(groupKey=group_key).execute()
    assert caught.value.status_code == 404
    assert error_of(caught)["message"] == "Resource Not Found: groupKey"
