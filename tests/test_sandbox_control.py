"""The sandbox control API (`/_sandbox`) over real HTTP with requests."""
import pytest
import requests
import yaml

pytest_plugins = ["sandbox.pytest_plugin"]

CLIENT_ID = "11111111-1111-1111-1111-111111111111"
SA_EMAIL = "retraction@sandbox-project.iam.gserviceaccount.com"


@pytest.fixture
def control(sandbox):
    session = requests.Session()
    session.trust_env = False
    base = sandbox.urls["control_url"]

    class Client:
        def get(self, path, **kw):
            return session.get(base + path, **kw)

        def post(self, path, **kw):
            return session.post(base + path, **kw)
    return Client()


def test_mailbox_view_and_unknown(control):
    alice = control.get("/mailboxes/alice@corp.example").json()
    assert alice["kind"] == "user" and alice["provider"] == "microsoft"
    assert {c["message_id"] for c in alice["copies"]} == {
        "<abc@evil.example>", "<o'brien+promo@evil.example>", "<hello@corp.example>"}
    assert set(alice["copies"][0]) >= {"id", "message_id", "folder", "is_read"}
    group = control.get("/mailboxes/all-staff@corp.example").json()
    assert group["kind"] == "group"
    assert group["members"] == ["alice@corp.example", "bob@corp.example"]
    assert control.get("/mailboxes/nobody@corp.example").status_code == 404


def test_copies_and_audit_follow_a_graph_move(sandbox, control):
    copies = control.get("/copies", params={"message_id": "<abc@evil.example>"}).json()
    by_box = {c["mailbox"]: c for c in copies["copies"]}
    assert by_box["bob@corp.example"]["folder"] == "trash"
    assert len(by_box) == 6
    session = sandbox.requests_session()
    headers = {"Authorization": "Bearer " + sandbox.graph_token()}
    alice = by_box["alice@corp.example"]
    moved = session.post("%s/users/alice@corp.example/messages/%s/move" % (
        sandbox.urls["graph_url"], alice["id"]), json={"destinationId": "junkemail"},
        headers=headers)
    assert moved.status_code == 201
    after = {c["mailbox"]: c for c in control.get(
        "/copies", params={"message_id": "<abc@evil.example>"}).json()["copies"]}
    assert after["alice@corp.example"]["folder"] == "junk"
    entries = control.get("/audit").json()["entries"]
    assert [(e["actor"], e["action"], e["mailbox"]) for e in entries] == [
        (CLIENT_ID, "move", "alice@corp.example")]
    assert control.get("/audit", params={"since": entries[-1]["seq"]}).json()["entries"] == []
    assert control.get("/copies").status_code == 400


def test_counters_and_reset(sandbox, control):
    sandbox.graph_token()
    counters = control.get("/counters").json()
    assert counters["routes"]["entra.token"] == 1
    assert counters["statuses"]["entra.token"] == {"200": 1}
    assert control.post("/counters/reset").json() == {"ok": True}
    assert "entra.token" not in control.get("/counters").json()["routes"]


def test_faults_get_set_clear_and_validation(sandbox, control):
    body = control.post("/faults", json={"graph": {"rate_429": 0.25}, "rtt_ms": 15}).json()
    assert body["services"]["graph"]["rate_429"] == 0.25
    assert body["settings"]["rtt_ms"] == 15.0
    assert control.get("/faults").json()["settings"]["rtt_ms"] == 15.0
    bad = control.post("/faults", json={"graph": {"rate_429": 2}})
    assert bad.status_code == 400 and "graph.rate_429" in bad.json()["error"]
    cleared = control.post("/faults", json={"clear": True, "throttling": False}).json()
    assert cleared["services"]["graph"]["rate_429"] == 0.0
    assert cleared["settings"]["throttling"] is False


def test_lost_reply_over_the_control_api(sandbox, control):
    body = control.post("/faults", json={"graph": {"rate_lost_reply": 1.0}}).json()
    assert body["services"]["graph"]["rate_lost_reply"] == 1.0
    bad = control.post("/faults", json={"gmail": {"rate_lost_reply": -0.1}})
    assert bad.status_code == 400 and "gmail.rate_lost_reply" in bad.json()["error"]
    session = sandbox.requests_session()
    headers = {"Authorization": "Bearer " + sandbox.graph_token()}
    [alice] = [c for c in control.get("/copies", params={"message_id": "<abc@evil.example>"})
               .json()["copies"] if c["mailbox"] == "alice@corp.example"]
    with pytest.raises(requests.ConnectionError):
        session.post("%s/users/alice@corp.example/messages/%s/move" % (
            sandbox.urls["graph_url"], alice["id"]), json={"destinationId": "junkemail"},
            headers=headers)
    counters = control.get("/counters").json()
    assert counters["faults"]["graph"] == {"lost_reply": 1}
    assert counters["statuses"]["graph.messages.move"] == {"0": 1}  # nothing reached us
    assert [e["action"] for e in control.get("/audit").json()["entries"]] == ["move"]


def test_revoke_tokens_route(sandbox, control):
    session = sandbox.requests_session()
    url = sandbox.urls["graph_url"] + "/users/alice@corp.example/mailFolders/inbox"
    headers = {"Authorization": "Bearer " + sandbox.graph_token()}
    assert session.get(url, headers=headers).status_code == 200
    assert control.post("/tokens/revoke", json={"service": "microsoft"}).json() == {
        "revoked": ["microsoft"]}
    assert session.get(url, headers=headers).status_code == 401
    assert control.post("/tokens/revoke").json() == {"revoked": ["microsoft", "google"]}
    bad = control.post("/tokens/revoke", json={"service": "entra"})
    assert bad.status_code == 400 and "service must be one of" in bad.json()["error"]


def test_verdicts_and_rescan(sandbox, control):
    added = control.post("/verdicts", json={"message_id": "<hello@corp.example>",
                                            "final_disposition": "NONE",
                                            "scanned_at": "-1h"})
    assert added.status_code == 201
    verdict = added.json()
    assert verdict["to"] == ["alice@corp.example"]  # default: every mailbox holding a copy
    rescanned = control.post("/verdicts/%s/rescan" % verdict["id"],
                             json={"disposition": "MALICIOUS"}).json()
    assert rescanned["final_disposition"] == "MALICIOUS"
    assert rescanned["scanned_at"] > verdict["scanned_at"]
    assert sandbox.tenant.verdicts[verdict["id"]].final_disposition == "MALICIOUS"
    assert control.post("/verdicts/nope/rescan",
                        json={"disposition": "SPAM"}).status_code == 404
    assert control.post("/verdicts/%s/rescan" % verdict["id"], json={}).status_code == 400


def test_submissions_add_and_confirm(sandbox, control):
    added = control.post("/submissions", json={"submission_id": "s-9",
                                               "message_id": "<hello@corp.example>",
                                               "requested_by": "alice@corp.example"}).json()
    assert added["status"] == "pending"
    confirmed = control.post("/submissions/s-9/confirm",
                             json={"disposition": "MALICIOUS"}).json()
    assert (confirmed["status"], confirmed["outcome_disposition"]) == ("reviewed", "MALICIOUS")
    assert sandbox.tenant.submissions["s-9"].outcome == "Confirmed malicious"


def test_consent_and_scopes(sandbox, control):
    revoked = control.post("/microsoft/apps/%s" % CLIENT_ID,
                           json={"consent_granted": False}).json()
    assert revoked["consent_granted"] is False
    assert sandbox.tenant.microsoft_apps[CLIENT_ID].consent_granted is False
    assert control.post("/microsoft/apps/nope", json={}).status_code == 404
    scopes = control.post("/google/accounts/%s" % SA_EMAIL,
                          json={"scopes": ["https://mail.google.com/"]}).json()
    assert scopes["scopes"] == ["https://mail.google.com/"]
    assert control.post("/google/accounts/%s" % SA_EMAIL,
                        json={"scopes": "x"}).status_code == 400


def test_add_mailbox_with_copies(sandbox, control):
    created = control.post("/mailboxes", json={
        "address": "new@corp.example", "kind": "shared",
        "copies": [{"message_id": "<abc@evil.example>", "folder": "junk", "read": True}]})
    assert created.status_code == 201
    assert created.json()["kind"] == "shared"
    assert [(c["folder"], c["is_read"]) for c in created.json()["copies"]] == [("junk", True)]
    assert control.post("/mailboxes", json={"address": "x@unknown.example"}).status_code == 400


def test_scenario_replaces_the_tenant(sandbox, control):
    scenario = yaml.safe_dump({"tenant_id": "other-tenant",
                               "microsoft": {"domains": ["other.example"]},
                               "mailboxes": [{"address": "zed@other.example"}]})
    response = control.post("/scenario", data=scenario,
                            headers={"Content-Type": "application/yaml"})
    assert response.status_code == 200 and response.json()["mailboxes"] == 1
    assert sandbox.tenant.tenant_id == "other-tenant"
    assert response.json()["urls"]["login_authority"].endswith("/other-tenant")
    assert control.get("/mailboxes/alice@corp.example").status_code == 404
    bad = control.post("/scenario", json={"mailbox": []})
    assert bad.status_code == 400 and "mailbox" in bad.json()["error"]


def test_campaigns(control):
    created = control.post("/campaigns", json={"message_id": "<camp@evil.example>",
                                               "copies": 20, "seed": 2,
                                               "disposition": "SUSPICIOUS"})
    assert created.status_code == 201
    truth = created.json()
    assert len(truth["mailboxes"]) == 20
    fetched = control.get("/campaigns", params={"message_id": "<camp@evil.example>"}).json()
    assert fetched == truth
    copies = control.get("/copies", params={"message_id": "<camp@evil.example>"}).json()
    present = [a for a, t in truth["mailboxes"].items() if t["present"]]
    assert sorted(c["mailbox"] for c in copies["copies"]) == sorted(present)
