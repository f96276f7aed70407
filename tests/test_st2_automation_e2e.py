"""The automatic flow end to end on StackStorm's own code, from the verdict to the ledger:

sensor poll (the pack's sensors against the sandbox's Cloudflare API, with StackStorm's
SensorService: `Stack.sensor`) or a webhook POST (its trigger dispatched as StackStorm's
webhooks controller dispatches it) -> StackStorm's rules engine -> auto_retract or
intake_verdict (Orquesta, in StackStorm's workflow engine) -> plan -> retract_campaign ->
split_recipients, retract per chunk, aggregate_run (python runner subprocesses) -> the
providers against the sandbox tenant -> the ledger.

Asserted: what the run recorded (mode, trigger, destination, disposition, requested_by,
comment, verdict time, one outcome per recipient, the metric record), and where each copy is
in the tenant. The rules' parameter rendering in detail is tests/test_st2_rules.py; the
approval paths are tests/test_st2_workflow_auto_retract_approval.py.
"""
import datetime
import time

import eventlet
import pytest

from retraction.ledger import Ledger
from submission_sensor import SubmissionSensor
from verdict_sensor import VerdictSensor

pytest_plugins = ["st2_stack"]

ABC = "<abc@evil.example>"
PROMO = "<o'brien+promo@evil.example>"
AUTO = "email_retraction.auto_retract"
INTAKE = "email_retraction.intake_verdict"
WEBHOOK = {"type": "core.st2.webhook", "parameters": {"url": "email_retraction/verdict"}}
ABC_FOLDERS = {  # where the basic tenant's copies of ABC start
    "alice@corp.example": "inbox", "bob@corp.example": "trash",
    "shared-ops@corp.example": "inbox", "exec@corp.example": "inbox",
    "carol@corp-mail.example": "inbox", "dave@corp-mail.example": "junk"}


@pytest.fixture
def config(st2_own_ledger_config):
    return st2_own_ledger_config


class Started(object):
    """Executions of `ref` requested after this object was made."""

    def __init__(self, st2, ref):
        self.st2, self.ref = st2, ref
        self.known = {str(e.id) for e in st2.executions_of(ref)}

    def one(self, timeout=120, **parameters):
        """The one new execution whose parameters include `parameters`, finished."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.st2.executions_of(self.ref) if str(e.id) not in self.known
                     and all(e.parameters.get(k) == v for k, v in parameters.items())]
            if found or time.monotonic() > deadline:
                break
            eventlet.sleep(0.05)
        assert len(found) == 1, (self.ref, parameters, found)
        return self.st2.wait(str(found[0].id))


def folders(box, message_id=ABC):
    return {c["mailbox"]: c["folder"] for c in box.copies(message_id)}


def run_of(config, run_id):
    with Ledger(config["ledger_url"]) as ledger:
        return ledger.run(run_id), ledger.outcomes_for_run(run_id)


def task_names(st2, execution_id):
    return [(c.context.get("orquesta") or {}).get("task_name")
            for c in st2.children(execution_id)]


def assert_retracted(config, execution, trigger, destination):
    """The run auto_retract made: automatic, one outcome per recipient, its record."""
    assert execution.status == "succeeded", execution.result
    output = execution.result["output"]
    params = execution.parameters
    run, outcomes = run_of(config, output["run_id"])
    assert (run["mode"], run["trigger"], run["destination"], run["disposition"]) == \
        ("auto", trigger, destination, params["disposition"])
    assert sorted(o.recipient for o in outcomes) == sorted(params["recipients"])
    verdict_time = datetime.datetime.fromisoformat(params["verdict_time"].replace("Z", "+00:00"))
    for outcome in outcomes:
        assert (outcome.mode, outcome.trigger) == ("auto", trigger)
        assert outcome.verdict_time == verdict_time
    record = output["metric_record"]
    assert record == run["metric_record"]
    assert record["total"] == len(outcomes)
    assert (record["auto"], record["manual"]) == (record["total"], 0)
    assert list(record["by_trigger"]) == [trigger]
    assert list(record["by_destination"]) == [destination]
    return run, {o.recipient: o for o in outcomes}, record


# -- the sensors' triggers -------------------------------------------------------------------

def test_a_verdict_retracts_every_delivered_copy(st2, st2_tenant, config):
    runs = Started(st2, AUTO)
    st2.sensor(VerdictSensor).poll()
    execution = runs.one(message_id=ABC)
    assert execution.parameters["retraction_trigger"] == "disposition"
    run, outcomes, record = assert_retracted(config, execution, "disposition", "trash")
    assert outcomes["alice@corp.example"].status == "retracted"
    assert outcomes["bob@corp.example"].status == "already_in_destination"
    assert (outcomes["exec@corp.example"].status, outcomes["exec@corp.example"].reason) == \
        ("failed", "not_authorized")
    assert outcomes["left@corp.example"].reason == "not_a_mailbox"
    assert folders(st2_tenant) == dict(ABC_FOLDERS, **{
        a: "trash" for a in ("alice@corp.example", "shared-ops@corp.example",
                             "carol@corp-mail.example", "dave@corp-mail.example")})
    # time to retract counts from the verdict (scanned ten minutes before the test)
    assert record["time_to_retract"]["p50_s"] >= 9 * 60
    assert "disposition: cloudflare verdict MALICIOUS" in run["comment"]
    assert run["requested_by"] == "cloudflare"
    output = execution.result["output"]
    assert output["decision"] is None
    assert st2.descendants(str(execution.id), ref="core.ask") == []


def test_a_verdict_changed_after_delivery(st2, st2_tenant, config):
    """The basic tenant's SUSPICIOUS promo is re-scanned MALICIOUS after delivery. (Only
    MALICIOUS verdicts are dispatched, so the promo is not retracted as SUSPICIOUS first.)"""
    config["verdicts"]["dispositions"] = ["MALICIOUS"]
    st2.reconfigure(config)
    sensor = st2.sensor(VerdictSensor)
    runs = Started(st2, AUTO)
    sensor.poll()
    abc = runs.one(message_id=ABC)  # the first poll's verdict, to be out of the way
    assert abc.status == "succeeded"
    st2_tenant.control("POST", "/verdicts/%s/rescan" % verdict_id(st2_tenant, PROMO),
                       {"disposition": "MALICIOUS"})
    changed = Started(st2, AUTO)
    sensor.poll()
    execution = changed.one(message_id=PROMO)
    assert (execution.parameters["retraction_trigger"],
            execution.parameters["previous_disposition"]) == ("post_delivery", "SUSPICIOUS")
    run, outcomes, record = assert_retracted(config, execution, "post_delivery", "trash")
    assert {a: o.status for a, o in outcomes.items()} == {
        "alice@corp.example": "retracted", "carol@corp-mail.example": "retracted"}
    assert "was SUSPICIOUS at delivery" in run["comment"]
    assert folders(st2_tenant, PROMO) == {"alice@corp.example": "trash",
                                          "carol@corp-mail.example": "trash"}


def verdict_id(box, message_id):
    """The Cloudflare row id of the message's verdict, from the sandbox's Cloudflare API."""
    import requests
    cloudflare = box.pack_config()["cloudflare"]
    session = requests.Session()
    session.trust_env = False  # loopback
    response = session.get(
        "%s/accounts/%s/email-security/investigate" % (cloudflare["base_url"],
                                                       cloudflare["account_id"]),
        headers={"Authorization": "Bearer %s" % cloudflare["api_token"]},
        params={"message_id": message_id}, timeout=30)
    assert response.status_code == 200, response.text[:300]
    (row,) = response.json()["result"]
    return row["id"]


def test_a_confirmed_phish_report(st2, st2_tenant, config):
    sensor = st2.sensor(SubmissionSensor)
    sensor.poll()
    st2_tenant.control("POST", "/submissions/s-1/confirm", {"disposition": "MALICIOUS"})
    runs = Started(st2, AUTO)
    sensor.poll()
    execution = runs.one(message_id=ABC, retraction_trigger="phish_submission")
    run, outcomes, record = assert_retracted(config, execution, "phish_submission", "trash")
    assert run["requested_by"] == "alice@corp.example"  # the reporter
    assert "user report s-1" in run["comment"]
    assert folders(st2_tenant)["alice@corp.example"] == "trash"


def test_a_large_verdict_is_one_run_in_chunks(st2, st2_tenant, config):
    truth = st2_tenant.campaign(message_id="<wave@evil.example>", copies=23, seed=5,
                                disposition="SPOOF", scanned_at="-3m")
    config["verdicts"]["dispositions"] = ["SPOOF"]
    config["limits"]["chunk_size"] = 5
    st2.reconfigure(config)
    runs = Started(st2, AUTO)
    st2.sensor(VerdictSensor).poll()
    execution = runs.one(message_id="<wave@evil.example>")
    assert sorted(execution.parameters["recipients"]) == sorted(truth["recipients"])
    chunks = st2.descendants(str(execution.id), ref="email_retraction.retract")
    assert sorted(len(c.parameters["recipients"]) for c in chunks) == [3, 5, 5, 5, 5]
    assert {c.parameters["run_id"] for c in chunks} == {execution.result["output"]["run_id"]}
    run, outcomes, record = assert_retracted(config, execution, "disposition", "junk")
    assert run["state"] == "finished" and record["total"] == 23
    present = {a for a, t in truth["mailboxes"].items() if t["present"]}
    assert {a: o.status for a, o in outcomes.items()} == {
        a: ("failed" if a not in present else "already_in_destination"
            if truth["mailboxes"][a]["folder"] == "junk" else "retracted")
        for a in truth["recipients"]}
    assert set(folders(st2_tenant, "<wave@evil.example>").values()) == {"junk"}


# -- the webhook -------------------------------------------------------------------------------

def post_verdict(st2, body):
    """POST /api/v1/webhooks/email_retraction/verdict past authentication: StackStorm's
    webhooks controller dispatches the hook's trigger with {headers, headers_lower, body}
    (throw_on_validation_error); the rule webhook_verdict runs intake_verdict."""
    runs = Started(st2, INTAKE)
    headers = {"Content-Type": "application/json"}
    st2.dispatch(WEBHOOK, {"headers": headers, "headers_lower": {
        k.lower(): v for k, v in headers.items()}, "body": body},
        throw_on_validation_error=True)
    return runs.one()


def test_a_verdict_from_another_source_through_the_webhook(st2, st2_tenant, config):
    execution = post_verdict(st2, {
        "message_id": "abc@evil.example",
        "recipients": ["alice@corp.example", "carol@corp-mail.example"],
        "disposition": "SUSPICIOUS", "verdict_time": "2024-05-01T12:00:00Z",
        "source": "sublime", "source_id": "alert-9"})
    assert execution.status == "succeeded", execution.result
    assert task_names(st2, str(execution.id)) == ["validate", "auto_retract"]
    output = execution.result["output"]
    assert output["verdict"]["message_id"] == ABC
    run_id = output["auto_retract"]["run_id"]
    run, outcomes = run_of(config, run_id)
    assert (run["mode"], run["trigger"], run["destination"], run["requested_by"]) == \
        ("auto", "disposition", "junk", "sublime")
    assert run["comment"] == "disposition: sublime verdict SUSPICIOUS (alert-9)"
    assert run["verdict_time"] == "2024-05-01T12:00:00+00:00"
    assert sorted((o.recipient, o.status) for o in outcomes) == [
        ("alice@corp.example", "retracted"), ("carol@corp-mail.example", "retracted")]
    assert (folders(st2_tenant)["alice@corp.example"],
            folders(st2_tenant)["carol@corp-mail.example"]) == ("junk", "junk")


def test_an_invalid_webhook_body_is_refused_naming_the_fields(st2, st2_tenant, config):
    execution = post_verdict(st2, {
        "message_id": "abc@evil.example", "recipients": ["alice@corp.example"],
        "disposition": "MALICIOUS", "verdict_time": "tomorrow", "severity": "high"})
    assert execution.status == "failed"
    why = execution.result["output"]["why"]
    assert "body.verdict_time must be ISO 8601" in why, why
    assert "body.severity is not a field of a verdict" in why, why
    assert task_names(st2, str(execution.id)) == ["validate"]
    with Ledger(config["ledger_url"]) as ledger:
        assert ledger.runs()[0] == []
    assert folders(st2_tenant) == ABC_FOLDERS
    assert st2_tenant.audit() == []
