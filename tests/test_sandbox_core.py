"""Sandbox core: server lifecycle, faults, scenarios, campaigns, `python -m sandbox`."""
import json
import os
import subprocess
import sys
import time

import msal
import pytest
import requests
import yaml

from sandbox.faults import Faults
from sandbox.scenario import (load_scenario, load_scenario_file, parse_time)
from sandbox.tenant import utc_now

pytest_plugins = ["sandbox.pytest_plugin"]

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- faults --------------------------------------------------------------------------------------
def test_fault_decisions_are_seeded():
    def run(seed):
        faults = Faults(seed=seed)
        faults.set({"gmail": {"rate_429": 0.3, "rate_5xx": 0.2, "rate_drop": 0.1}})
        return [getattr(faults.decide("gmail"), "kind", None) for _ in range(200)]
    first = run(5)
    assert first == run(5) and first != run(6)
    assert {"429", "5xx", "drop", None} == set(first)
    assert 40 < first.count("429") < 80


def test_lost_replies_hit_writes_only_and_are_seeded():
    def run(seed):
        faults = Faults(seed=seed)
        faults.set({"graph": {"rate_lost_reply": 0.4}})
        return [getattr(faults.decide("graph", write=True), "kind", None) for _ in range(100)]
    first = run(2)
    assert first == run(2) and first != run(3)
    assert set(first) == {"lost_reply", None} and 20 < first.count("lost_reply") < 60
    faults = Faults(seed=2)
    faults.set({"graph": {"rate_lost_reply": 1.0}})
    assert [faults.decide("graph") for _ in range(10)] == [None] * 10  # reads
    assert faults.decide("graph", write=True).kind == "lost_reply"
    assert faults.to_dict()["injected"]["graph"] == {"lost_reply": 1}
    # Without lost replies configured, writes and reads draw the same faults as before.
    plain, writes = Faults(seed=4), Faults(seed=4)
    for f in (plain, writes):
        f.set({"gmail": {"rate_429": 0.3, "rate_drop": 0.1}})
    assert ([getattr(plain.decide("gmail"), "kind", None) for _ in range(50)]
            == [getattr(writes.decide("gmail", True), "kind", None) for _ in range(50)])


def test_a_timed_token_outage_ends_and_an_open_one_does_not():
    faults = Faults()
    faults.set({"google_token": {"token_outage": 60}, "login": {"token_outage": 0.05}})
    assert faults.decide("google_token").kind == "token_outage"  # 60 s: surely still on
    time.sleep(0.06)  # past the short one: a lower bound only
    assert faults.decide("login") is None
    faults.set({"google_token": {"token_outage": True}})
    assert faults.to_dict()["services"]["google_token"]["token_outage"] is True
    faults.set({"google_token": {"token_outage": False}})
    assert faults.decide("google_token") is None


@pytest.mark.parametrize("spec, message", [
    ({"graph": {"rate_429": 1.5}}, "within 0..1"),
    ({"nosuch": {"rate_429": 0.1}}, "unknown service"),
    ({"graph": {"token_outage": 5}}, "token_outage applies"),
    ({"graph": {"rate_5xx": 0.1, "status_5xx": 404}}, "5xx status"),
    ({"graph": {"rate_lost_reply": 2}}, "graph.rate_lost_reply must be within 0..1"),
    ({"settings": {"rtt": 5}}, "unknown sandbox setting"),
])
def test_bad_fault_specs_name_the_field(spec, message):
    with pytest.raises(ValueError, match=message):
        Faults().set(spec)


def test_latency_jitter_stays_in_range():
    faults = Faults(seed=1, rtt_ms=100, jitter=0.2)
    delays = [faults.latency_s() for _ in range(100)]
    assert all(0.08 <= d <= 0.12 for d in delays) and len(set(delays)) > 50


# -- scenarios -------------------------------------------------------------------------------------
def test_basic_scenario_loads_every_kind():
    tenant = load_scenario_file("basic.yaml")
    kinds = {box.address: box.kind for box in tenant.mailboxes.values()}
    assert kinds["left@corp.example"] == "unlicensed"
    assert kinds["exec@corp.example"] == "policy_blocked"
    assert kinds["ghost@corp.example"] == "not_discoverable"
    assert kinds["shared-ops@corp.example"] == "shared"
    assert tenant.mailbox("carol@corp-mail.example").provider == "google"
    bob = tenant.mailbox("bob@corp.example").find("<abc@evil.example>")
    assert [(c.folder, c.is_read) for c in bob] == [("trash", True)]
    [verdict] = [v for v in tenant.verdicts.values() if v.message_id == "<abc@evil.example>"]
    assert verdict.final_disposition == "MALICIOUS" and "left@corp.example" in verdict.recipients
    assert tenant.submissions["s-1"].requested_by == "alice@corp.example"
    assert tenant.microsoft_apps["11111111-1111-1111-1111-111111111111"].certificate_pem


def test_scenario_errors_name_the_field():
    with pytest.raises(ValueError, match="unknown key.*mailbox"):
        load_scenario({"mailbox": []})
    with pytest.raises(ValueError, match=r"messages\[0\].copies\[0\].folder"):
        load_scenario({"microsoft": {"domains": ["x.example"]}, "messages": [
            {"message_id": "<a@b>", "copies": [{"mailbox": "u@x.example", "folder": "spam"}]}]})
    with pytest.raises(ValueError, match="scanned_at"):
        load_scenario({"messages": [{"message_id": "<a@b>", "scanned_at": "yesterday"}]})


def test_parse_time():
    now = utc_now()
    assert (now - parse_time("-10m", now, "x")).total_seconds() == 600
    assert parse_time("2024-05-01T10:00:00Z", now, "x").isoformat() == "2024-05-01T10:00:00+00:00"


def test_campaign_truth_matches_state():
    tenant = load_scenario_file("basic.yaml")
    from sandbox.scenario import generate_campaign
    truth = generate_campaign(tenant, "<c-1@evil.example>", copies=200, microsoft_share=0.5,
                              read_share=0.3, deleted_share=0.1, junk_share=0.05,
                              distribution_lists=2, unlicensed=3, policy_blocked=2, seed=3,
                              disposition="MALICIOUS")
    for address, expected in truth.mailboxes.items():
        box = tenant.mailbox(address)
        copies = box.find("<c-1@evil.example>")
        if expected.present:
            [copy] = copies
            assert (copy.folder, copy.is_read) == (expected.folder, expected.was_read)
        elif expected.kind == "policy_blocked":
            assert len(copies) == 1  # delivered, but out of the app's reach
        else:
            assert copies == []
    present = [t for t in truth.mailboxes.values() if t.present]
    assert len([t for t in truth.mailboxes.values() if t.kind == "user"]) == 200
    assert len(present) == 180
    assert sum(1 for t in present if t.folder == "junk") == 10
    assert sum(1 for t in present if t.was_read) == 54
    for group, members in truth.groups.items():
        assert tenant.group(group).members == members
        assert group in truth.recipients
        assert not set(members) & set(truth.recipients)
    assert truth.counts("junk") == {"retracted": 170, "already_in_destination": 10,
                                    "failed:not_found": 20, "failed:not_a_mailbox": 3,
                                    "failed:not_authorized": 2}
    unexpanded = truth.counts("junk", expand_groups=False)
    assert unexpanded["failed:not_a_mailbox"] == 5
    [verdict] = [v for v in tenant.verdicts.values() if v.message_id == "<c-1@evil.example>"]
    assert sorted(verdict.recipients) == sorted(truth.recipients)


def test_campaign_truth_matches_what_graph_answers(sandbox, sandbox_campaign):
    truth = sandbox_campaign(message_id="<c-2@evil.example>", copies=30, seed=9,
                             deleted_share=0.2, junk_share=0.1, read_share=0.5)
    session = sandbox.requests_session()
    headers = {"Authorization": "Bearer " + sandbox.graph_token()}
    checked = 0
    for address, expected in truth.mailboxes.items():
        if expected.provider != "microsoft":
            continue
        url = "%s/users/%s/messages" % (sandbox.urls["graph_url"], address)
        hits = session.get(url, headers=headers, params={
            "$filter": "internetMessageId eq '<c-2@evil.example>'"}).json()["value"]
        folders = {f: session.get("%s/users/%s/mailFolders/%s" % (
            sandbox.urls["graph_url"], address, f), headers=headers).json()["id"]
            for f in ("inbox", "junkemail")}
        if expected.present:
            [hit] = hits
            wanted = folders["junkemail" if expected.folder == "junk" else "inbox"]
            assert (hit["isRead"], hit["parentFolderId"]) == (expected.was_read, wanted)
        else:
            assert hits == []
        checked += 1
    assert checked == 18


def test_demo_scenario_has_the_promised_shape():
    tenant = load_scenario_file("demo.yaml")
    truth = tenant.campaigns["<campaign-1@evil.example>"]
    users = [t for t in truth.mailboxes.values() if t.kind == "user"]
    assert len(users) == 2000
    assert {t.provider for t in users} == {"microsoft", "google"}
    assert any(t.was_read for t in users) and any(t.was_read is False for t in users)
    assert len(truth.groups) == 2
    assert sum(1 for t in truth.mailboxes.values() if t.kind == "unlicensed") == 3
    assert sum(1 for t in truth.mailboxes.values() if t.kind == "policy_blocked") == 2
    assert tenant.mailbox("bob@corp.example").find(
        "<invoice-7731@billing-evil.example>")[0].folder == "trash"


# -- server --------------------------------------------------------------------------------------
CONTEXT_MANAGER_CHECK = """
import json, os, sys
import requests
from sandbox.server import Sandbox
with Sandbox.from_scenario_file("basic.yaml", data_dir=sys.argv[1]) as box:
    session = requests.Session()
    session.trust_env = False
    health = session.get(box.urls["control_url"] + "/health").json()
    ca_file = os.path.exists(box.urls["ca_file"])
    port = box.http_port
try:
    session.get("http://127.0.0.1:%d/_sandbox/health" % port, timeout=2)
    released = False
except requests.ConnectionError:
    released = True
print(json.dumps({"health": health, "ca_file": ca_file, "released": released}))
"""


def test_context_manager_serves_and_releases_ports(tmp_path):
    # In a process of its own: under StackStorm's eventlet patching every in-process sandbox
    # runs its asyncio loop on the one OS thread, where the session's sandbox already runs one.
    done = subprocess.run([sys.executable, "-c", CONTEXT_MANAGER_CHECK, str(tmp_path)],
                          cwd=PACK_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "health": {"ok": True}, "ca_file": True, "released": True}


def test_pack_config_has_the_example_shape_and_working_credentials(sandbox):
    config = sandbox.pack_config()
    with open(os.path.join(PACK_ROOT, "email_retraction.yaml.example")) as handle:
        example = yaml.safe_load(handle)
    assert set(config) == set(example) - {"ledger_url", "log_level"}
    assert set(config["microsoft"]) == set(example["microsoft"])
    ms = config["microsoft"]
    app = msal.ConfidentialClientApplication(
        ms["client_id"], client_credential=ms["client_secret"],
        authority="%s/%s" % (ms["authority_host"], ms["tenant_id"]), instance_discovery=False,
        http_client=sandbox.requests_session())
    assert "access_token" in app.acquire_token_for_client(
        scopes=["https://graph.microsoft.com/.default"])
    info = json.loads(config["google"]["service_account_json"])
    assert info["token_uri"] == sandbox.urls["google_token_uri"]
    assert info["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert config["cloudflare"]["api_token"] == "cf-token"
    assert config["google"]["domains"] == ["corp-mail.example"]


def test_fixture_gives_a_fresh_tenant(sandbox, sandbox_load):
    sandbox.set_faults(graph={"rate_429": 1.0})
    sandbox.tenant.add_mailbox("temp@corp.example")
    tenant = sandbox_load("basic.yaml")
    assert tenant is sandbox.tenant
    assert tenant.mailbox("temp@corp.example") is None
    assert sandbox.faults.to_dict()["services"]["graph"]["rate_429"] == 0.0


def test_python_m_sandbox_writes_the_ready_file(tmp_path):
    # How fast it starts is measured by bench/sandbox_start.py, not asserted here.
    ready = str(tmp_path / "ready.json")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "--scenario", "basic.yaml",
                             "--ready-file", ready], cwd=PACK_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not os.path.exists(ready):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() - started < 120, "no ready file (hang guard, not a bound)"
            time.sleep(0.01)
        with open(ready) as handle:
            info = json.load(handle)
        for key in ("graph_url", "login_authority", "authority_host", "ca_file",
                    "google_token_uri", "gmail_url", "gmail_batch_uri", "directory_url",
                    "cloudflare_url", "control_url", "pack_config_file"):
            assert info[key], key
        assert info["pid"] == proc.pid and info["startup_s"] > 0
        session = requests.Session()
        session.trust_env = False
        assert session.get(info["control_url"] + "/health").json() == {"ok": True}
        session.verify = info["ca_file"]
        discovery = session.get(info["login_authority"]
                                + "/v2.0/.well-known/openid-configuration")
        assert discovery.status_code == 200
        with open(info["pack_config_file"]) as handle:
            assert yaml.safe_load(handle)["microsoft"]["graph_url"] == info["graph_url"]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert not os.path.exists(ready)
