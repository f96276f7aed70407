"""auto_retract run by StackStorm where no analyst is asked: the workflow engine walks
actions/workflows/auto_retract.yaml, plan and retract_campaign's actions run in the python
runner against the sandbox tenant, and the run is read back from the ledger.

- below approval.threshold the run goes straight through (mode auto, the verdict's trigger
  and disposition, time to retract from the verdict time);
- policy says no: a switch off, a disposition mapped to none; a changed verdict that is not
  stronger than the previous one (through the rule post_delivery_response) moves nothing back,
  a stronger one moves the copies further;
- preview mode records what would move and moves nothing, never asking an analyst;
- bad input fails in plan naming the field; a ledger that cannot open stops the run before any
  provider call. (The approval paths: tests/test_st2_workflow_auto_retract_approval.py.)
"""
import datetime

import eventlet
import pytest

from retraction.ledger import Ledger

pytest_plugins = ["st2_stack"]

MID = "<abc@evil.example>"
RECIPIENTS = ["alice@corp.example", "carol@corp-mail.example"]
AUTO = "email_retraction.auto_retract"
START = {"alice@corp.example": "inbox", "bob@corp.example": "trash",
         "shared-ops@corp.example": "inbox", "exec@corp.example": "inbox",
         "carol@corp-mail.example": "inbox", "dave@corp-mail.example": "junk"}


@pytest.fixture
def config(st2_own_ledger_config):
    return st2_own_ledger_config


def verdict(minutes_ago=5, **extra):
    when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        minutes=minutes_ago)
    values = {"message_id": MID, "recipients": RECIPIENTS, "disposition": "MALICIOUS",
              "verdict_time": when.isoformat(), "source": "cloudflare", "source_id": "row-1"}
    values.update(extra)
    return values


def task_names(st2, workflow_id):
    return [(c.context.get("orquesta") or {}).get("task_name") for c in st2.children(workflow_id)]


def folders(box):
    return {c["mailbox"]: c["folder"] for c in box.copies(MID)}


def ledger(config):
    return Ledger(config["ledger_url"])


def test_below_the_threshold_the_run_goes_straight_through(st2, st2_tenant, config):
    params = verdict(minutes_ago=10)
    execution = st2.run(AUTO, params)
    assert execution.status == "succeeded", execution.result
    wf = str(execution.id)
    assert task_names(st2, wf) == ["plan", "retract"]
    assert st2.descendants(wf, ref="core.ask") == []
    output = execution.result["output"]
    assert (output["decision"], output["decision_id"]) == (None, None)
    assert output["why"].startswith("automatic retraction by disposition: MALICIOUS -> trash")
    (campaign,) = st2.descendants(wf, ref="email_retraction.retract_campaign")
    assert campaign.status == "succeeded"
    assert (campaign.parameters["mode"], campaign.parameters["trigger"],
            campaign.parameters["disposition"]) == ("auto", "disposition", "MALICIOUS")
    with ledger(config) as book:
        run = book.run(output["run_id"])
        rows = book.outcomes_for_run(output["run_id"])
        assert book.decisions()[0] == []
    assert (run["mode"], run["trigger"], run["destination"], run["disposition"],
            run["requested_by"], run["state"]) == \
        ("auto", "disposition", "trash", "MALICIOUS", "cloudflare", "finished")
    assert run["comment"].startswith("disposition: cloudflare verdict MALICIOUS")
    verdict_time = datetime.datetime.fromisoformat(params["verdict_time"])
    assert {(o.recipient, o.status, o.mode, o.trigger) for o in rows} == {
        (a, "retracted", "auto", "disposition") for a in RECIPIENTS}
    assert {o.verdict_time for o in rows} == {verdict_time}
    record = output["metric_record"]
    assert (record["total"], record["auto"], record["manual"]) == (2, 2, 0)
    # time to retract counts from the verdict, ten minutes before the run
    assert record["time_to_retract"]["p50_s"] >= 9 * 60
    assert folders(st2_tenant) == dict(START, **{a: "trash" for a in RECIPIENTS})


def test_policy_says_no(st2, st2_tenant, config):
    config["auto_retract"].update(phish_submission_response=False,
                                  dispositions={"MALICIOUS": "none", "SUSPICIOUS": "junk"})
    st2.reconfigure(config)
    execution = st2.run(AUTO, verdict(retraction_trigger="phish_submission"))
    assert execution.status == "succeeded", execution.result
    output = execution.result["output"]
    assert output["why"] == ("no action by policy: phish submission response is off "
                             "(auto_retract.phish_submission_response: false)")
    assert output["plan"]["act"] is False and output["run_id"] is None
    assert task_names(st2, str(execution.id)) == ["plan"]
    execution = st2.run(AUTO, verdict())
    assert execution.status == "succeeded", execution.result
    assert execution.result["output"]["why"] == \
        "no action by policy: auto_retract.dispositions maps MALICIOUS to none"
    assert task_names(st2, str(execution.id)) == ["plan"]
    with ledger(config) as book:
        assert book.runs()[0] == []
    assert folders(st2_tenant) == START


def _post_delivery(st2, disposition, previous):
    """A changed verdict dispatched as the verdict sensor does; the rule
    post_delivery_response runs auto_retract. Returns that execution, finished."""
    payload = dict(verdict(disposition=disposition), previous_disposition=previous,
                   sender="billing@evil.example", subject="Invoice",
                   source_disposition=disposition)
    known = {str(e.id) for e in st2.executions_of(AUTO)}
    st2.dispatch("email_retraction.verdict_changed", payload)
    for _ in range(1200):
        started = [e for e in st2.executions_of(AUTO) if str(e.id) not in known]
        if started:
            break
        eventlet.sleep(0.05)
    (execution,) = started
    return st2.wait(str(execution.id))


def test_a_changed_verdict_moves_copies_only_further(st2, st2_tenant, config):
    execution = _post_delivery(st2, "SUSPICIOUS", "MALICIOUS")
    assert execution.status == "succeeded", execution.result
    assert execution.parameters["previous_disposition"] == "MALICIOUS"
    assert execution.parameters["retraction_trigger"] == "post_delivery"
    assert execution.result["output"]["why"] == (
        "already handled: previous disposition MALICIOUS sent copies to trash, and "
        "SUSPICIOUS -> junk is not stronger")
    assert task_names(st2, str(execution.id)) == ["plan"]
    assert folders(st2_tenant) == START
    # an upgrade acts: SUSPICIOUS (junk) -> MALICIOUS (trash)
    execution = _post_delivery(st2, "MALICIOUS", "SUSPICIOUS")
    assert execution.status == "succeeded", execution.result
    with ledger(config) as book:
        run = book.run(execution.result["output"]["run_id"])
    assert (run["trigger"], run["destination"]) == ("post_delivery", "trash")
    assert "was SUSPICIOUS at delivery" in run["comment"]
    assert folders(st2_tenant) == dict(START, **{a: "trash" for a in RECIPIENTS})


def test_preview_mode_records_what_would_move_and_moves_nothing(st2, st2_tenant, config):
    config["auto_retract"]["mode"] = "preview"
    config["approval"]["threshold"] = 0  # a preview never waits for an analyst
    st2.reconfigure(config)
    execution = st2.run(AUTO, verdict())
    assert execution.status == "succeeded", execution.result
    wf = str(execution.id)
    assert task_names(st2, wf) == ["plan", "retract"]
    assert st2.descendants(wf, ref="core.ask") == []
    output = execution.result["output"]
    assert output["why"].endswith("; preview only (auto_retract.mode: preview), "
                                  "nothing will move")
    with ledger(config) as book:
        run = book.run(output["run_id"])
        rows = book.outcomes_for_run(output["run_id"])
    assert run["preview"] is True and (run["mode"], run["trigger"]) == ("auto", "disposition")
    assert {(o.recipient, o.status) for o in rows} == {(a, "previewed") for a in RECIPIENTS}
    assert folders(st2_tenant) == START
    assert st2_tenant.audit() == []


def test_bad_input_fails_in_plan_naming_the_field(st2, st2_tenant, config):
    execution = st2.run(AUTO, verdict(recipients=["alice@corp.example", "x y@z.io"]))
    assert execution.status == "failed"
    assert execution.result["output"]["why"].startswith(
        "invalid recipients: contains whitespace")
    assert task_names(st2, str(execution.id)) == ["plan"]
    providers = [r for r in st2_tenant.counters()["routes"] if not r.startswith("control.")]
    assert providers == []
    assert folders(st2_tenant) == START


def test_no_ledger_no_retraction(st2, st2_tenant, config, tmp_path):
    """A configured ledger that cannot be opened stops the run before any provider call."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config["ledger_url"] = "sqlite:///%s" % (blocker / "ledger.db")
    st2.reconfigure(config)
    execution = st2.run(AUTO, verdict())
    assert execution.status == "failed"
    wf = str(execution.id)
    why = execution.result["output"]["why"]
    assert why.endswith("; retract_campaign failed (see its output and the ledger)"), why
    (campaign,) = st2.descendants(wf, ref="email_retraction.retract_campaign")
    assert [(c.context.get("orquesta") or {}).get("task_name")
            for c in st2.children(str(campaign.id))] == ["split"]
    assert "ledger_url" in str(st2.children(str(campaign.id))[0].result)
    assert st2.descendants(wf, ref="email_retraction.retract") == []
    providers = [r for r in st2_tenant.counters()["routes"] if not r.startswith("control.")]
    assert providers == []
    assert folders(st2_tenant) == START
