"""Microsoft Graph front of the sandbox, driven by requests with a token from the real msal."""
import contextlib
import threading
import time

import pytest
import requests

pytest_plugins = ["sandbox.pytest_plugin"]

CLIENT_ID = "11111111-1111-1111-1111-111111111111"
QUOTED = "<o'brien+promo@evil.example>"


@pytest.fixture
def graph(sandbox):
    """(session, base url, headers) with a fresh msal token."""
    session = sandbox.requests_session()
    headers = {"Authorization": "Bearer " + sandbox.graph_token()}
    return session, sandbox.urls["graph_url"], headers


def odata_literal(value):
    return "'%s'" % value.replace("'", "''")


def find(graph, upn, message_id, **extra):
    session, base, headers = graph
    params = {"$filter": "internetMessageId eq %s" % odata_literal(message_id)}
    params.update(extra.pop("params", {}))
    return session.get("%s/users/%s/messages" % (base, upn), params=params,
                       headers=dict(headers, **extra))


def error_of(response):
    body = response.json()["error"]
    assert set(body["innerError"]) == {"date", "request-id", "client-request-id"}
    return body["code"], body["message"]


# -- lookups -----------------------------------------------------------------------------------
def test_lookup_with_quote_and_plus_matches_exactly(graph):
    response = find(graph, "alice@corp.example", QUOTED)
    assert response.status_code == 200
    assert "%2B" in response.url and "%27%27" in response.url
    [hit] = response.json()["value"]
    assert hit["internetMessageId"] == QUOTED
    assert set(hit) >= {"id", "internetMessageId", "isRead", "parentFolderId", "subject",
                        "from", "receivedDateTime"}


def test_unencoded_plus_is_a_space_and_matches_nothing(graph):
    session, base, headers = graph
    url = ("%s/users/alice@corp.example/messages?$filter=internetMessageId%%20eq%%20"
           "'%%3Co''brien+promo@evil.example%%3E'" % base)
    response = session.get(url, headers=headers)
    assert response.status_code == 200
    assert response.json()["value"] == []


def test_crafted_id_cannot_widen_the_match(graph):
    crafted = "x' or internetMessageId ne '"
    escaped = find(graph, "alice@corp.example", crafted)  # quotes doubled: one literal
    assert escaped.status_code == 200 and escaped.json()["value"] == []
    session, base, headers = graph
    raw = session.get("%s/users/alice@corp.example/messages" % base, headers=headers,
                      params={"$filter": "internetMessageId eq '%s'" % crafted})
    assert raw.status_code == 400
    assert error_of(raw) == ("BadRequest", "Invalid filter clause")


@pytest.mark.parametrize("clause", [
    "internetMessageId ne '<abc@evil.example>'",
    "startswith(internetMessageId, '<abc')",
    "subject eq 'Invoice'",
    "internetMessageId eq '<abc@evil.example>' or isRead eq true",
    "internetMessageId eq '<a'b>'",
])
def test_unsupported_filters_are_400(graph, clause):
    session, base, headers = graph
    response = session.get("%s/users/alice@corp.example/messages" % base, headers=headers,
                           params={"$filter": clause})
    assert response.status_code == 400
    assert error_of(response) == ("BadRequest", "Invalid filter clause")


def test_select_projects_and_rejects_unknown_fields(graph):
    ok = find(graph, "alice@corp.example", "<abc@evil.example>",
              params={"$select": "isRead,parentFolderId"})
    [hit] = ok.json()["value"]
    assert set(hit) == {"@odata.etag", "id", "isRead", "parentFolderId"}
    bad = find(graph, "alice@corp.example", "<abc@evil.example>",
               params={"$select": "isRead,bodyPreviewX"})
    assert bad.status_code == 400
    code, message = error_of(bad)
    assert code == "RequestBroker--ParseUri" and "bodyPreviewX" in message


def test_top_pages_with_next_link(graph):
    session, base, headers = graph
    response = session.get("%s/users/alice@corp.example/messages" % base, headers=headers,
                           params={"$top": "1", "$select": "id"})
    ids, pages = [], 0
    while True:
        body = response.json()
        pages += 1
        ids.extend(item["id"] for item in body["value"])
        if "@odata.nextLink" not in body:
            break
        response = session.get(body["@odata.nextLink"], headers=headers)
    assert pages == 3 and len(set(ids)) == 3


def test_folders_by_name_and_by_id(graph):
    session, base, headers = graph
    inbox = session.get("%s/users/alice@corp.example/mailFolders/inbox" % base,
                        headers=headers).json()
    assert inbox["displayName"] == "Inbox" and inbox["totalItemCount"] == 3
    again = session.get("%s/users/alice@corp.example/mailFolders/%s" % (base, inbox["id"]),
                        headers=headers, params={"$select": "id"}).json()
    assert again["id"] == inbox["id"] and "displayName" not in again
    bob_inbox = session.get("%s/users/bob@corp.example/mailFolders/inbox" % base,
                            headers=headers).json()
    assert bob_inbox["id"] != inbox["id"]  # folder ids are per mailbox
    [hit] = find(graph, "alice@corp.example", "<abc@evil.example>").json()["value"]
    assert hit["parentFolderId"] == inbox["id"]
    bad = session.get("%s/users/alice@corp.example/mailFolders/nosuchfolder" % base,
                      headers=headers)
    assert bad.status_code == 400 and error_of(bad)[0] == "ErrorInvalidIdMalformed"


# -- changes -----------------------------------------------------------------------------------
def test_move_gives_a_new_id_and_audits_the_app(sandbox, graph):
    session, base, headers = graph
    [hit] = find(graph, "alice@corp.example", "<abc@evil.example>").json()["value"]
    moved = session.post("%s/users/alice@corp.example/messages/%s/move" % (base, hit["id"]),
                         json={"destinationId": "junkemail"}, headers=headers)
    assert moved.status_code == 201
    body = moved.json()
    assert body["id"] != hit["id"] and body["isRead"] is False
    junk = session.get("%s/users/alice@corp.example/mailFolders/junkemail" % base,
                       headers=headers).json()
    assert body["parentFolderId"] == junk["id"]
    old = session.post("%s/users/alice@corp.example/messages/%s/move" % (base, hit["id"]),
                       json={"destinationId": "inbox"}, headers=headers)
    assert old.status_code == 404 and error_of(old)[0] == "ErrorItemNotFound"
    [entry] = sandbox.audit()
    assert (entry["actor"], entry["action"], entry["before"], entry["after"]) == (
        CLIENT_ID, "move", "inbox,unread", "junk,unread")


def test_move_with_immutable_ids_keeps_the_id(graph):
    session, base, headers = graph
    prefer = {"Prefer": 'IdType="ImmutableId"'}
    [regular] = find(graph, "alice@corp.example", "<abc@evil.example>").json()["value"]
    response = find(graph, "alice@corp.example", "<abc@evil.example>", **prefer)
    assert response.headers["Preference-Applied"] == 'IdType="ImmutableId"'
    [immutable] = response.json()["value"]
    assert immutable["id"] != regular["id"]
    moved = session.post("%s/users/alice@corp.example/messages/%s/move"
                         % (base, immutable["id"]), json={"destinationId": "deleteditems"},
                         headers=dict(headers, **prefer))
    assert moved.status_code == 201 and moved.json()["id"] == immutable["id"]
    fetched = session.get("%s/users/alice@corp.example/messages/%s" % (base, immutable["id"]),
                          headers=dict(headers, **prefer)).json()
    deleted = session.get("%s/users/alice@corp.example/mailFolders/deleteditems" % base,
                          headers=headers).json()
    assert fetched["parentFolderId"] == deleted["id"]


def test_move_to_folder_id_and_bad_destination(graph):
    session, base, headers = graph
    [hit] = find(graph, "alice@corp.example", "<abc@evil.example>").json()["value"]
    bad = session.post("%s/users/alice@corp.example/messages/%s/move" % (base, hit["id"]),
                       json={"destinationId": "Junk Email"}, headers=headers)
    assert bad.status_code == 400 and error_of(bad)[0] == "ErrorInvalidIdMalformed"
    archive = session.get("%s/users/alice@corp.example/mailFolders/archive" % base,
                          headers=headers).json()
    moved = session.post("%s/users/alice@corp.example/messages/%s/move" % (base, hit["id"]),
                         json={"destinationId": archive["id"]}, headers=headers)
    assert moved.status_code == 201 and moved.json()["parentFolderId"] == archive["id"]


def test_permanent_delete_purges(sandbox, graph):
    session, base, headers = graph
    [hit] = find(graph, "alice@corp.example", "<abc@evil.example>").json()["value"]
    response = session.post("%s/users/alice@corp.example/messages/%s/permanentDelete"
                            % (base, hit["id"]), headers=headers)
    assert response.status_code == 204 and response.content == b""
    assert find(graph, "alice@corp.example", "<abc@evil.example>").json()["value"] == []
    deletions = session.get("%s/users/alice@corp.example/mailFolders/recoverableitemsdeletions"
                            "/messages" % base, headers=headers).json()["value"]
    assert deletions == []
    alice = [c for c in sandbox.copies("<abc@evil.example>")
             if c["mailbox"] == "alice@corp.example"]
    assert [c["folder"] for c in alice] == ["purged"]


def test_delete_is_a_soft_delete_to_recoverable_items(sandbox, graph):
    session, base, headers = graph
    [hit] = find(graph, "alice@corp.example", "<abc@evil.example>").json()["value"]
    response = session.delete("%s/users/alice@corp.example/messages/%s" % (base, hit["id"]),
                              headers=headers)
    assert response.status_code == 204
    assert find(graph, "alice@corp.example", "<abc@evil.example>").json()["value"] == []
    url = "%s/users/alice@corp.example/mailFolders/recoverableitemsdeletions/messages" % base
    listed = session.get(url, headers=headers, params={
        "$filter": "internetMessageId eq '<abc@evil.example>'"}).json()["value"]
    assert [m["id"] for m in listed] == [hit["id"]]
    assert sandbox.audit()[-1]["after"] == "soft_delete,unread"


def test_patch_is_read(sandbox, graph):
    session, base, headers = graph
    [hit] = find(graph, "alice@corp.example", "<abc@evil.example>").json()["value"]
    response = session.patch("%s/users/alice@corp.example/messages/%s" % (base, hit["id"]),
                             json={"isRead": True}, headers=headers)
    assert response.status_code == 200 and response.json()["isRead"] is True
    assert sandbox.audit()[-1]["action"] == "modify"


# -- error rows --------------------------------------------------------------------------------
@pytest.mark.parametrize("upn, status, code, message", [
    ("all-staff@corp.example", 404, "ErrorInvalidUser",
     "The requested user 'all-staff@corp.example' is invalid."),
    ("nobody@corp.example", 404, "ErrorInvalidUser",
     "The requested user 'nobody@corp.example' is invalid."),
    ("carol@corp-mail.example", 404, "ErrorInvalidUser",
     "The requested user 'carol@corp-mail.example' is invalid."),
    ("left@corp.example", 404, "MailboxNotEnabledForRESTAPI", None),
    ("ghost@corp.example", 404, "ResourceNotFound", None),
    ("exec@corp.example", 403, "ErrorAccessDenied",
     "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly "
     "AccessPolicy settings."),
])
def test_mailbox_error_rows(graph, upn, status, code, message):
    response = find(graph, upn, "<abc@evil.example>")
    assert response.status_code == status
    got_code, got_message = error_of(response)
    assert got_code == code
    if message:
        assert got_message == message


def test_shared_mailbox_works(graph):
    [hit] = find(graph, "shared-ops@corp.example", "<abc@evil.example>").json()["value"]
    assert hit["isRead"] is False


def test_missing_permission_is_access_denied(sandbox):
    sandbox.set_consent(CLIENT_ID, permissions=["GroupMember.Read.All"])
    session = sandbox.requests_session()
    response = session.get(sandbox.urls["graph_url"] + "/users/alice@corp.example/messages",
                           headers={"Authorization": "Bearer " + sandbox.graph_token()})
    assert response.status_code == 403
    assert error_of(response) == ("ErrorAccessDenied",
                                  "Access is denied. Check credentials and try again.")


@pytest.mark.parametrize("authorization, message", [
    (None, "Access token is empty."),
    ("Bearer not-a-jwt", "IDX14100: JWT is not well formed, there are no dots (.)."),
    ("Bearer a.b.c", "Access token validation failure. Invalid signature."),
])
def test_bad_bearer_is_401(sandbox, authorization, message):
    headers = {"client-request-id": "my-correlation"}
    if authorization:
        headers["Authorization"] = authorization
    response = sandbox.requests_session().get(
        sandbox.urls["graph_url"] + "/users/alice@corp.example/messages", headers=headers)
    assert response.status_code == 401
    body = response.json()["error"]
    assert (body["code"], body["message"]) == ("InvalidAuthenticationToken", message)
    assert body["innerError"]["client-request-id"] == "my-correlation"


def test_unknown_segment_and_me(graph):
    session, base, headers = graph
    other = session.get(base + "/users/alice@corp.example/calendars", headers=headers)
    assert other.status_code == 400 and "calendars" in error_of(other)[1]
    me = session.get(base + "/me/messages", headers=headers)
    assert me.status_code == 400 and "delegated" in error_of(me)[1]


# -- groups --------------------------------------------------------------------------------------
def test_group_lookup_and_transitive_members(sandbox, graph):
    sandbox.tenant.add_group("outer@corp.example", ["all-staff@corp.example",
                                                    "shared-ops@corp.example"])
    session, base, headers = graph
    found = session.get(base + "/groups", headers=headers,
                        params={"$filter": "mail eq 'outer@corp.example'"}).json()["value"]
    assert [g["mail"] for g in found] == ["outer@corp.example"]
    url = "%s/groups/%s/transitiveMembers" % (base, found[0]["id"])
    response = session.get(url, headers=headers, params={"$top": "2"})
    members = []
    while True:
        body = response.json()
        members.extend(body["value"])
        if "@odata.nextLink" not in body:
            break
        assert "$skiptoken" in body["@odata.nextLink"]
        response = session.get(body["@odata.nextLink"], headers=headers)
    types = {m.get("mail"): m["@odata.type"] for m in members}
    assert types == {"all-staff@corp.example": "#microsoft.graph.group",
                     "shared-ops@corp.example": "#microsoft.graph.user",
                     "alice@corp.example": "#microsoft.graph.user",
                     "bob@corp.example": "#microsoft.graph.user"}
    user = next(m for m in members if m["mail"] == "alice@corp.example")
    assert user["userPrincipalName"] == "alice@corp.example"
    google = session.get(base + "/groups", headers=headers,
                         params={"$filter": "mail eq 'team@corp-mail.example'"}).json()
    assert google["value"] == []
    missing = session.get(base + "/groups/00000000-0000-0000-0000-000000000000/"
                          "transitiveMembers", headers=headers)
    assert missing.status_code == 404 and error_of(missing)[0] == "Request_ResourceNotFound"


def test_group_expansion_needs_group_member_read(sandbox):
    sandbox.set_consent(CLIENT_ID, permissions=["Mail.ReadWrite"])
    response = sandbox.requests_session().get(
        sandbox.urls["graph_url"] + "/groups",
        params={"$filter": "mail eq 'all-staff@corp.example'"},
        headers={"Authorization": "Bearer " + sandbox.graph_token()})
    assert response.status_code == 403
    assert error_of(response) == ("Authorization_RequestDenied",
                                  "Insufficient privileges to complete the operation.")


# -- $batch ------------------------------------------------------------------------------------
def batch(graph, requests_):
    session, base, headers = graph
    return session.post(base + "/$batch", json={"requests": requests_}, headers=headers)


def folder_get(item_id, upn="alice@corp.example", folder="inbox"):
    return {"id": str(item_id), "method": "GET",
            "url": "/users/%s/mailFolders/%s?$select=id" % (upn, folder)}


def test_batch_of_21_is_refused(graph):
    response = batch(graph, [folder_get(i) for i in range(21)])
    assert response.status_code == 400
    assert error_of(response) == ("BadRequest",
                                  "Number of requests inside batch exceeds the limit.")


def test_batch_ids_must_be_unique(graph):
    response = batch(graph, [folder_get("a"), folder_get("A")])
    assert response.status_code == 400
    assert error_of(response)[1] == "Request Id A has to be unique in a batch."


def test_batch_of_20_runs_every_item_in_some_order(sandbox, graph):
    response = batch(graph, [folder_get(i) for i in range(20)])
    assert response.status_code == 200
    responses = response.json()["responses"]
    assert sorted(int(r["id"]) for r in responses) == list(range(20))
    assert [r["id"] for r in responses] != [str(i) for i in range(20)]  # shuffled
    assert {r["status"] for r in responses} == {200}
    counts = sandbox.counters.snapshot()["routes"]
    assert counts["graph.batch"] == 1 and counts["graph.folders.get"] == 20


def test_batch_moves_with_per_item_prefer_and_depends_on(sandbox, graph):
    [hit] = find(graph, "alice@corp.example", "<abc@evil.example>").json()["value"]
    items = [
        {"id": "move", "method": "POST", "url": "/users/alice@corp.example/messages/%s/move"
         % hit["id"], "body": {"destinationId": "junkemail"},
         "headers": {"Content-Type": "application/json", "Prefer": 'IdType="ImmutableId"'}},
        {"id": "bad", "method": "GET", "url": "/users/left@corp.example/messages"},
        {"id": "after-bad", "method": "GET", "url": "/users/bob@corp.example/messages",
         "dependsOn": ["bad"]},
        {"id": "after-move", "method": "GET", "url": "/users/alice@corp.example/mailFolders/"
         "junkemail", "dependsOn": ["move"]},
        {"id": "no-type", "method": "POST", "url": "/users/alice@corp.example/messages/x/move",
         "body": {"destinationId": "inbox"}},
    ]
    by_id = {r["id"]: r for r in batch(graph, items).json()["responses"]}
    assert by_id["move"]["status"] == 201
    assert by_id["move"]["headers"]["Preference-Applied"] == 'IdType="ImmutableId"'
    assert by_id["move"]["body"]["parentFolderId"] == by_id["after-move"]["body"]["id"]
    assert by_id["bad"]["status"] == 404
    assert by_id["after-bad"]["status"] == 424
    assert by_id["no-type"]["status"] == 400
    assert sandbox.counters.snapshot()["routes"]["graph.messages.move"] == 2


def wait_for(condition, what):
    """Poll a structural condition; the deadline only guards against a hang."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_batch_runs_at_most_four_items_at_once_per_mailbox(sandbox, graph):
    items = ([folder_get(i) for i in range(8)]
             + [folder_get(10 + i, "bob@corp.example") for i in range(8)])
    answer = []
    with sandbox.hold_graph_operations():  # every operation waits inside its slot
        sender = threading.Thread(target=lambda: answer.append(batch(graph, items)))
        sender.start()
        # Both mailboxes fill their 4 slots side by side; the other 4 items of each wait for
        # a second wave instead of being throttled.
        wait_for(lambda: (sandbox.graph_throttle.busy("alice@corp.example"),
                          sandbox.graph_throttle.busy("bob@corp.example")) == (4, 4),
                 "the batch never filled both mailboxes")
        assert sandbox.graph_throttle.throttled == 0
        assert sandbox.counters.snapshot()["statuses"].get("graph.folders.get") is None
    sender.join(30)
    responses = answer[0].json()["responses"]
    assert {r["status"] for r in responses} == {200} and len(responses) == 16
    assert sandbox.graph_throttle.peak == {"alice@corp.example": 4, "bob@corp.example": 4}
    assert sandbox.graph_throttle.throttled == 0


@contextlib.contextmanager
def holding_slots(sandbox, graph, upn, count=4):
    """`count` direct requests to `upn` that hold their mailbox slots until the block ends;
    yields the list their statuses land in."""
    session, base, headers = graph
    statuses = []

    def call():
        with requests.Session() as own:
            own.verify, own.trust_env = session.verify, False
            statuses.append(own.get("%s/users/%s/mailFolders/inbox" % (base, upn),
                                    headers=headers).status_code)

    threads = [threading.Thread(target=call) for _ in range(count)]
    with sandbox.hold_graph_operations(upn):
        for thread in threads:
            thread.start()
        wait_for(lambda: sandbox.graph_throttle.busy(upn) == count,
                 "requests never reached the sandbox")
        yield statuses
    for thread in threads:
        thread.join(30)


def test_fifth_concurrent_request_is_throttled(sandbox, graph):
    sandbox.set_faults(graph_throttle_retry_after=0.5)
    with holding_slots(sandbox, graph, "alice@corp.example") as statuses:
        extra = find(graph, "alice@corp.example", "<abc@evil.example>")
        other = find(graph, "bob@corp.example", "<abc@evil.example>")
    assert statuses == [200] * 4
    assert extra.status_code == 429 and extra.headers["Retry-After"] == "0.5"
    assert error_of(extra) == ("ApplicationThrottled",
                               "Application is over its MailboxConcurrency limit.")
    assert other.status_code == 200
    assert sandbox.graph_throttle.peak["alice@corp.example"] == 4
    assert find(graph, "alice@corp.example", "<abc@evil.example>").status_code == 200


def test_batch_items_get_their_own_429_from_the_mailbox_throttle(sandbox, graph):
    with holding_slots(sandbox, graph, "alice@corp.example"):
        responses = batch(graph, [folder_get(1), folder_get(2),
                                  folder_get(3, "bob@corp.example")])
    by_id = {r["id"]: r for r in responses.json()["responses"]}
    assert responses.status_code == 200
    assert [by_id[i]["status"] for i in "123"] == [429, 429, 200]
    assert by_id["1"]["headers"]["Retry-After"] == "1"
    assert by_id["1"]["body"]["error"]["code"] == "ApplicationThrottled"


def test_mailbox_budget(sandbox, graph):
    sandbox.set_faults(graph_budget=3, graph_budget_window_s=30)
    statuses = [find(graph, "alice@corp.example", "<abc@evil.example>") for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert 0 < float(statuses[-1].headers["Retry-After"]) <= 30
    assert find(graph, "bob@corp.example", "<abc@evil.example>").status_code == 200
    sandbox.set_faults(throttling=False)
    assert find(graph, "alice@corp.example", "<abc@evil.example>").status_code == 200


def test_batch_items_get_injected_429s_and_5xx(sandbox, graph):
    sandbox.set_faults(graph={"rate_429": 1.0, "retry_after": 2.5})
    response = batch(graph, [folder_get(i) for i in range(5)])
    assert response.status_code == 200
    for item in response.json()["responses"]:
        assert item["status"] == 429 and item["headers"]["Retry-After"] == "2.5"
    sandbox.set_faults(clear=True, graph={"rate_5xx": 0.5}, seed=11)
    first = [r["status"] for r in sorted(batch(graph, [folder_get(i) for i in range(20)])
                                         .json()["responses"], key=lambda r: int(r["id"]))]
    assert set(first) == {200, 503}
    sandbox.set_faults(clear=True, graph={"rate_5xx": 0.5}, seed=11)
    again = [r["status"] for r in sorted(batch(graph, [folder_get(i) for i in range(20)])
                                         .json()["responses"], key=lambda r: int(r["id"]))]
    assert again == first  # seeded: the same items fail
    assert sandbox.faults.to_dict()["injected"]["graph"]["5xx"] == first.count(503)


# -- latency and faults on direct requests ---------------------------------------------------------
def test_latency_is_per_http_request(sandbox, graph):
    sandbox.set_faults(rtt_ms=200)
    started = time.monotonic()
    assert find(graph, "alice@corp.example", "<abc@evil.example>").status_code == 200
    single = time.monotonic() - started
    started = time.monotonic()
    assert batch(graph, [folder_get(i) for i in range(6)]).status_code == 200
    batched = time.monotonic() - started
    assert single >= 0.195 and batched >= 0.195  # injected: at least the rtt (lower bound)
    # ... and once per HTTP request: the batch of 6 was delayed once, not six times.
    assert sandbox.faults.to_dict()["delayed"] == {"graph": 2}


def test_injected_5xx_429_and_drop(sandbox, graph):
    sandbox.set_faults(graph={"rate_5xx": 1.0, "status_5xx": 503, "retry_after": 4})
    response = find(graph, "alice@corp.example", "<abc@evil.example>")
    assert response.status_code == 503 and response.headers["Retry-After"] == "4"
    assert error_of(response)[0] == "ServiceUnavailable"
    sandbox.set_faults(clear=True, graph={"rate_429": 1.0})
    response = find(graph, "alice@corp.example", "<abc@evil.example>")
    assert response.status_code == 429 and error_of(response)[0] == "TooManyRequests"
    sandbox.set_faults(clear=True, graph={"rate_drop": 1.0})
    with pytest.raises(requests.ConnectionError):
        find(graph, "alice@corp.example", "<abc@evil.example>")
    assert sandbox.faults.to_dict()["injected"]["graph"] == {"drop": 1}
    sandbox.set_faults(clear=True)
    assert find(graph, "alice@corp.example", "<abc@evil.example>").status_code == 200


# -- lost replies: the write runs, its answer never arrives ------------------------------------
def move_item(item_id, copy_id, destination="junkemail"):
    return {"id": item_id, "method": "POST",
            "url": "/users/alice@corp.example/messages/%s/move" % copy_id,
            "body": {"destinationId": destination},
            "headers": {"Content-Type": "application/json"}}


def alice_folder(sandbox, message_id="<abc@evil.example>"):
    [copy] = [c for c in sandbox.mailbox_view("alice@corp.example")["copies"]
              if c["message_id"] == message_id]
    return copy["folder"]


def test_a_lost_reply_moves_the_copy_and_drops_the_connection(sandbox, graph):
    [hit] = find(graph, "alice@corp.example", "<abc@evil.example>").json()["value"]
    session, base, headers = graph
    sandbox.set_faults(graph={"rate_lost_reply": 1.0})
    assert find(graph, "alice@corp.example", "<abc@evil.example>").status_code == 200  # reads
    with pytest.raises(requests.ConnectionError):
        session.post("%s/users/alice@corp.example/messages/%s/move" % (base, hit["id"]),
                     json={"destinationId": "junkemail"}, headers=headers)
    assert alice_folder(sandbox) == "junk"  # the move happened; the client got no 2xx
    assert [(e["action"], e["mailbox"]) for e in sandbox.audit()] == [
        ("move", "alice@corp.example")]
    assert sandbox.faults.to_dict()["injected"]["graph"] == {"lost_reply": 1}
    assert sandbox.counters.snapshot()["statuses"]["graph.messages.move"] == {"0": 1}


def test_a_lost_reply_in_a_batch_is_a_504_after_the_move(sandbox, graph):
    [hit] = find(graph, "alice@corp.example", "<abc@evil.example>").json()["value"]
    sandbox.set_faults(graph={"rate_lost_reply": 1.0})
    items = [move_item("move", hit["id"]), folder_get("read"),
             {"id": "after", "method": "GET", "url": "/users/alice@corp.example/mailFolders/"
              "junkemail", "dependsOn": ["move"]}]
    response = batch(graph, items)
    assert response.status_code == 200
    by_id = {r["id"]: r for r in response.json()["responses"]}
    assert by_id["move"]["status"] == 504
    assert by_id["move"]["body"]["error"]["code"] == "GatewayTimeout"
    assert "parentFolderId" not in by_id["move"]["body"]  # no trace of the result
    assert by_id["read"]["status"] == 200  # a read's answer is never lost
    assert by_id["after"]["status"] == 424  # as for any failed dependency
    assert alice_folder(sandbox) == "junk"
    assert [e["action"] for e in sandbox.audit()] == ["move"]
    assert sandbox.faults.to_dict()["injected"]["graph"] == {"lost_reply": 1}


def test_lost_replies_are_seeded_per_batch_item(sandbox, graph):
    mids = ["<m%d@evil.example>" % i for i in range(10)]
    sandbox.add_mailbox("many@corp.example",
                        copies=[{"message_id": mid, "folder": "inbox"} for mid in mids])

    def run(seed, destination):
        by_mid = {c["message_id"]: c["id"]  # regular ids change on every move: read them now
                  for c in sandbox.mailbox_view("many@corp.example")["copies"]}
        sandbox.set_faults(clear=True, graph={"rate_lost_reply": 0.5}, seed=seed)
        items = [dict(move_item(str(i), by_mid[mid], destination),
                      url="/users/many@corp.example/messages/%s/move" % by_mid[mid])
                 for i, mid in enumerate(mids)]
        answers = batch(graph, items).json()["responses"]
        return [r["status"] for r in sorted(answers, key=lambda r: int(r["id"]))]
    first = run(7, "junkemail")
    assert set(first) == {201, 504}
    assert sandbox.faults.to_dict()["injected"]["graph"] == {"lost_reply": first.count(504)}
    folders = {c["folder"] for c in sandbox.mailbox_view("many@corp.example")["copies"]}
    assert folders == {"junk"}  # every move ran, answered or not
    assert run(7, "inbox") == first  # same seed, same items lose their answers
