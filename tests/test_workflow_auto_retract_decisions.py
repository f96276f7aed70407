"""auto_retract's approval path and post-delivery downgrades, walked as Orquesta runs them
(tools.st2local) with the real actions, the sandbox tenant and the real ledger:

- the analyst's answer is kept in the ledger (record_decision) on reject and on approve, before
  anything moves; an answer that cannot be recorded retracts nothing and fails the workflow;
- the inquiry asks as the config's approval section says, unless the execution says otherwise;
- a changed verdict whose new destination is not stronger than the previous one's moves
  nothing back ("already handled"), from the rule's rendering of the trigger payload on;
- retract_campaign: a chunk whose copies the pack's policy refused is not a failed chunk; one
  whose provider was unavailable for every copy is.
"""
from datetime import datetime, timedelta, timezone

import ledger_db
import pytest

from retraction.ledger import Ledger
from tools.st2local import Runtime, enforce, load_rule

pytest_plugins = ["sandbox.pytest_plugin"]

MID = "<abc@evil.example>"
RECIPIENTS = ["alice@corp.example", "carol@corp-mail.example"]


@pytest.fixture(params=ledger_db.BACKENDS)
def tenant(request, sandbox, tmp_path):
    with ledger_db.database_url(request.param, tmp_path) as url:
        config = dict(sandbox.pack_config(), ledger_url=url)
        config["approval"] = dict(config.get("approval") or {}, threshold=1)
        yield sandbox, url, config


def verdict(**extra):
    values = {"message_id": MID, "recipients": RECIPIENTS, "disposition": "MALICIOUS",
              "verdict_time": (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat(),
              "source": "cloudflare", "source_id": "row-1"}
    values.update(extra)
    return values


def folder(box, address, message_id=MID):
    view = box.mailbox_view(address)
    (found,) = [c["folder"] for c in view["copies"] if c["message_id"] == message_id]
    return found


def walk(config, params, answer=None):
    runtime = Runtime(config, answer=answer)
    return runtime, runtime.workflow("email_retraction.auto_retract", params).run()


def answer(approve, analyst="bob", comment=""):
    return lambda schema: {"approve": approve, "analyst": analyst, "comment": comment}


def test_a_rejection_is_kept_in_the_ledger_and_nothing_moves(tenant):
    box, url, config = tenant
    runtime, wf = walk(config, verdict(), answer(False, comment="false positive"))
    assert wf.status == "succeeded", wf.errors
    assert wf.tasks == [("plan", "succeeded"), ("ask", "succeeded"),
                        ("record_decision", "succeeded")]
    assert wf.output["why"] == "rejected by bob: false positive; nothing retracted"
    with Ledger(url) as ledger:
        (row,) = ledger.decisions()[0]
        assert ledger.runs()[0] == []
    assert wf.output["decision_id"] == row["id"] and wf.output["run_id"] is None
    assert {k: row[k] for k in ("decision", "message_id", "decided_by", "comment", "copies",
                                "destination", "trigger", "disposition", "run_id")} == {
        "decision": "rejected", "message_id": MID, "decided_by": "bob",
        "comment": "false positive", "copies": 2, "destination": "trash",
        "trigger": "disposition", "disposition": "MALICIOUS", "run_id": None}
    assert [folder(box, a) for a in RECIPIENTS] == ["inbox", "inbox"]


def test_an_approval_is_kept_before_the_run_moves_anything(tenant):
    box, url, config = tenant
    runtime, wf = walk(config, verdict(), answer(True, analyst=""))
    assert wf.status == "succeeded", wf.errors
    assert [name for name, _ in wf.tasks] == ["plan", "ask", "record_decision", "retract"]
    with Ledger(url) as ledger:
        (row,) = ledger.decisions()[0]
        run = ledger.run(wf.output["run_id"])
    assert (row["decision"], row["decided_by"], row["comment"]) == ("approved", None, None)
    # recorded before the run started
    assert datetime.fromisoformat(row["decided_at"]) <= datetime.fromisoformat(
        run["requested_at"])
    assert run["comment"].endswith("; approved by an unnamed analyst")
    assert [folder(box, a) for a in RECIPIENTS] == ["trash", "trash"]


def test_an_answer_that_cannot_be_recorded_retracts_nothing(tenant, tmp_path):
    box, url, config = tenant
    (tmp_path / "a-file").write_text("not a directory")
    config = dict(config, ledger_url="sqlite:///%s" % (tmp_path / "a-file" / "ledger.db"))
    for approve in (True, False):
        runtime, wf = walk(config, verdict(), answer(approve))
        assert wf.status == "failed"
        assert wf.tasks == [("plan", "succeeded"), ("ask", "succeeded"),
                            ("record_decision", "failed")]
        assert wf.output["why"].startswith("the decision could not be recorded in the ledger "
                                           "(config ledger_url: cannot open the ledger at ")
        assert wf.output["why"].endswith("); nothing retracted")
    assert [folder(box, a) for a in RECIPIENTS] == ["inbox", "inbox"]


def test_the_inquiry_asks_as_the_config_says_unless_told_otherwise(tenant):
    box, url, config = tenant
    config["approval"] = dict(config["approval"], route="#soc-approvals", users=["alice"],
                              roles=["soc_lead"], ttl_minutes=30)
    runtime, wf = walk(config, verdict())  # nobody answers: the inquiry expires
    assert wf.status == "failed"
    assert wf.output["why"] == ("no answer to the approval inquiry within 30 minutes; "
                                "nothing retracted")
    (inquiry,) = runtime.inquiries
    assert (inquiry["route"], inquiry["users"], inquiry["roles"], inquiry["ttl"]) == (
        "#soc-approvals", ["alice"], ["soc_lead"], 30)
    runtime, wf = walk(config, verdict(approval_route="oncall", approval_ttl=5,
                                       approval_users=["carol"]))
    (inquiry,) = runtime.inquiries
    assert (inquiry["route"], inquiry["users"], inquiry["roles"], inquiry["ttl"]) == (
        "oncall", ["carol"], ["soc_lead"], 5)
    with Ledger(url) as ledger:
        assert ledger.decisions()[0] == []  # nobody answered: no decision


def test_a_downgraded_verdict_moves_nothing_back(tenant):
    box, url, config = tenant
    payload = dict(verdict(disposition="SUSPICIOUS"), previous_disposition="MALICIOUS",
                   sender=None, subject=None, source_disposition=None)
    params, problems = enforce(load_rule("post_delivery_response"), payload)
    assert problems == [] and params["previous_disposition"] == "MALICIOUS"
    runtime, wf = walk(config, params)
    assert wf.status == "succeeded" and wf.tasks == [("plan", "succeeded")]
    assert wf.output["why"] == ("already handled: previous disposition MALICIOUS sent copies "
                                "to trash, and SUSPICIOUS -> junk is not stronger")
    # an upgrade still acts (SUSPICIOUS -> MALICIOUS: junk -> trash), past approval
    payload.update(disposition="MALICIOUS", previous_disposition="SUSPICIOUS")
    params, problems = enforce(load_rule("post_delivery_response"), payload)
    runtime, wf = walk(config, params, answer(True))
    assert wf.status == "succeeded", wf.errors
    assert [folder(box, a) for a in RECIPIENTS] == ["trash", "trash"]


def campaign(config, recipients):
    runtime = Runtime(config)
    return runtime.workflow("email_retraction.retract_campaign", {
        "message_id": MID, "recipients": recipients, "chunk_size": 2}).run()


def test_a_chunk_refused_by_policy_is_not_a_failed_chunk(tenant):
    box, url, config = tenant
    wf = campaign(config, ["alice@corp.example", "bob@corp.example",
                           "x@elsewhere.example", "journal@corp.example"])
    assert wf.status == "succeeded", wf.errors
    assert wf.ctx["failed_chunks"] == 0 and wf.output["state"] == "finished"
    record = wf.output["metric_record"]
    assert (record["total"], record["retracted"], record["failed_by_reason"]["out_of_scope"]) \
        == (4, 2, 2)


def test_a_chunk_whose_provider_was_unavailable_fails_the_workflow(tenant):
    box, url, config = tenant
    config["microsoft"] = dict(config["microsoft"], client_secret="wrong-secret")
    wf = campaign(config, ["alice@corp.example", "bob@corp.example",
                           "carol@corp-mail.example", "x@elsewhere.example"])
    assert wf.status == "failed"
    assert wf.ctx["failed_chunks"] == 1 and wf.output["state"] == "failed"
    record = wf.output["metric_record"]
    assert (record["total"], record["retracted"], record["failed_by_reason"]["not_authorized"],
            record["failed_by_reason"]["out_of_scope"]) == (4, 1, 2, 1)
