"""auto_retract's approval step run by StackStorm: the workflow engine walks
actions/workflows/auto_retract.yaml, `core.ask` is StackStorm's inquirer runner (the workflow
pauses on it), the answer goes through StackStorm's inquiry service (`st2.respond`: checked
against the inquiry's schema, then the workflow resumes), an unanswered inquiry is expired by
StackStorm's garbage collector code (`purge_inquiries`), and plan, record_decision and
retract_campaign's actions run in the python runner against the sandbox tenant.

Checked: what the inquiry asks (route, users, roles, ttl from the config unless the execution
says otherwise; the question), that StackStorm refuses an answer that does not fit the schema
and one from a user the inquiry does not name, the decision row record_decision keeps (who
decided, the comment, what was asked) before anything moves, the run's comment, and what
moved in the tenant (nothing on a rejection, an expiry, or a decision that cannot be kept).
"""
import datetime
import logging

import mock
import pytest
from st2common.exceptions import inquiry as inquiry_errors
from st2common.models.api.inquiry import InquiryAPI
from st2common.services import inquiry as inquiry_service

from retraction.ledger import Ledger

pytest_plugins = ["st2_stack"]

MID = "<abc@evil.example>"
RECIPIENTS = ["alice@corp.example", "carol@corp-mail.example"]
AUTO = "email_retraction.auto_retract"


@pytest.fixture
def config(st2, st2_tenant, st2_config, tmp_path):
    """This test's pack config: its own ledger, approval past one copy; registered."""
    st2_config["ledger_url"] = "sqlite:///%s" % (tmp_path / "ledger.db")
    st2_config["approval"]["threshold"] = 1
    st2.reconfigure(st2_config)
    return st2_config


def verdict(**extra):
    when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    values = {"message_id": MID, "recipients": RECIPIENTS, "disposition": "MALICIOUS",
              "verdict_time": when.isoformat(), "source": "cloudflare", "source_id": "row-1"}
    values.update(extra)
    return values


def asked(st2, workflow_id):
    """The workflow's core.ask execution, once the workflow has paused on it."""
    st2.wait(workflow_id, statuses=["paused"], timeout=120)
    (inquiry,) = st2.descendants(workflow_id, ref="core.ask")
    assert inquiry.status == "pending"
    return inquiry


def task_names(st2, workflow_id):
    return [(c.context.get("orquesta") or {}).get("task_name") for c in st2.children(workflow_id)]


def folders(box):
    return {c["mailbox"]: c["folder"] for c in box.copies(MID) if c["mailbox"] in RECIPIENTS}


def decisions(config):
    with Ledger(config["ledger_url"]) as ledger:
        return ledger.decisions()[0]


def runs(config):
    with Ledger(config["ledger_url"]) as ledger:
        return ledger.runs()[0]


def expire_inquiries(minutes_later):
    """StackStorm's garbage collector pass over inquiries (st2garbagecollector runs
    `purge_inquiries` every `garbagecollector.collection_interval`), as if it ran
    `minutes_later` minutes from now."""
    from st2common.garbage_collection import inquiries as gc
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        minutes=minutes_later)
    with mock.patch.object(gc, "get_datetime_utc_now", return_value=later):
        gc.purge_inquiries(logger=logging.getLogger("st2garbagecollector"))


# -- approved ----------------------------------------------------------------------------------

def test_an_approval_is_checked_by_stackstorm_and_kept_before_anything_moves(
        st2, st2_tenant, st2_config, tmp_path):
    st2_config["ledger_url"] = "sqlite:///%s" % (tmp_path / "ledger.db")
    st2_config["approval"].update(threshold=1, users=["bob"])
    st2.reconfigure(st2_config)
    config = st2_config
    wf = st2.request(AUTO, verdict(sender="billing@evil.example", subject="Invoice"))
    inquiry = asked(st2, wf)
    assert {k: inquiry.parameters[k] for k in ("route", "ttl", "users", "roles")} == {
        "route": "email_retraction", "ttl": 1440, "users": ["bob"], "roles": []}
    question = inquiry.parameters["schema"]["description"]
    assert question.startswith("Approve moving 2 copies of <abc@evil.example> 'Invoice' ")
    assert "2 copies is more than approval.threshold (1)" in question

    # StackStorm refuses answers that do not fit the schema, and answers from other users
    api_view = InquiryAPI.from_model(inquiry)
    for wrong in ({"approve": "yes"}, {"analyst": "bob"}, {"approve": 1}):
        with pytest.raises(inquiry_errors.InvalidInquiryResponse):
            st2.respond(inquiry, wrong, requester="bob")
    with pytest.raises(inquiry_errors.InquiryResponseUnauthorized):
        inquiry_service.check_permission(api_view, "mallory")
    inquiry_service.check_permission(api_view, "bob")
    assert st2.execution(str(inquiry.id)).status == "pending"
    assert st2.execution(wf).status == "paused"
    assert decisions(config) == [] and runs(config) == []
    assert folders(st2_tenant) == {a: "inbox" for a in RECIPIENTS}

    st2.respond(inquiry, {"approve": True, "analyst": "bob", "comment": "checked the headers"},
                requester="bob")
    execution = st2.wait(wf)
    assert execution.status == "succeeded", execution.result
    assert task_names(st2, wf) == ["plan", "ask", "record_decision", "retract"]
    output = execution.result["output"]
    assert output["decision"] == {"approved": True, "analyst": "bob",
                                  "comment": "checked the headers"}
    (row,) = decisions(config)
    assert output["decision_id"] == row["id"]
    assert {k: row[k] for k in ("decision", "message_id", "decided_by", "comment", "copies",
                                "destination", "trigger", "disposition")} == {
        "decision": "approved", "message_id": MID, "decided_by": "bob",
        "comment": "checked the headers", "copies": 2, "destination": "trash",
        "trigger": "disposition", "disposition": "MALICIOUS"}
    with Ledger(config["ledger_url"]) as ledger:
        run = ledger.run(output["run_id"])
        rows = ledger.outcomes_for_run(output["run_id"])
    # kept before the run started; the run says who approved, on every outcome
    assert datetime.datetime.fromisoformat(row["decided_at"]) <= \
        datetime.datetime.fromisoformat(run["requested_at"])
    assert (run["mode"], run["trigger"], run["destination"], run["state"]) == \
        ("auto", "disposition", "trash", "finished")
    assert run["comment"].endswith("; approved by bob: checked the headers")
    assert {(o.recipient, o.status, o.comment) for o in rows} == {
        (a, "retracted", run["comment"]) for a in RECIPIENTS}
    assert folders(st2_tenant) == {a: "trash" for a in RECIPIENTS}


# -- rejected ----------------------------------------------------------------------------------

def test_a_rejection_is_kept_and_nothing_moves(st2, st2_tenant, config):
    wf = st2.request(AUTO, verdict())
    st2.respond(asked(st2, wf), {"approve": False, "analyst": "bob",
                                 "comment": "false positive"})
    execution = st2.wait(wf)
    assert execution.status == "succeeded", execution.result
    assert task_names(st2, wf) == ["plan", "ask", "record_decision"]
    output = execution.result["output"]
    assert output["why"] == "rejected by bob: false positive; nothing retracted"
    assert output["decision"] == {"approved": False, "analyst": "bob",
                                  "comment": "false positive"}
    assert output["run_id"] is None
    (row,) = decisions(config)
    assert output["decision_id"] == row["id"]
    assert {k: row[k] for k in ("decision", "message_id", "decided_by", "comment", "copies",
                                "destination", "trigger", "disposition", "run_id")} == {
        "decision": "rejected", "message_id": MID, "decided_by": "bob",
        "comment": "false positive", "copies": 2, "destination": "trash",
        "trigger": "disposition", "disposition": "MALICIOUS", "run_id": None}
    assert runs(config) == []
    assert folders(st2_tenant) == {a: "inbox" for a in RECIPIENTS}


def test_unnamed_answers_to_a_hard_delete(st2, st2_tenant, st2_config, tmp_path):
    """Below the threshold, but a hard delete asks first (approval.hard_delete). An answer
    without analyst or comment is kept as such."""
    st2_config["ledger_url"] = "sqlite:///%s" % (tmp_path / "ledger.db")
    st2_config["allow_hard_delete"] = True
    st2_config["auto_retract"]["dispositions"]["MALICIOUS"] = "hard_delete"
    st2.reconfigure(st2_config)
    wf = st2.request(AUTO, verdict())
    inquiry = asked(st2, wf)
    assert "Asked because of hard delete (approval.hard_delete)." in \
        inquiry.parameters["schema"]["description"]
    st2.respond(inquiry, {"approve": False})
    execution = st2.wait(wf)
    assert execution.status == "succeeded", execution.result
    assert execution.result["output"]["why"] == \
        "rejected by an unnamed analyst; nothing retracted"
    (row,) = decisions(st2_config)
    assert (row["decision"], row["decided_by"], row["comment"], row["destination"]) == \
        ("rejected", None, None, "hard_delete")
    assert runs(st2_config) == []
    assert folders(st2_tenant) == {a: "inbox" for a in RECIPIENTS}

    wf = st2.request(AUTO, verdict())
    st2.respond(asked(st2, wf), {"approve": True})
    execution = st2.wait(wf)
    assert execution.status == "succeeded", execution.result
    approved = [r for r in decisions(st2_config) if r["decision"] == "approved"]
    assert [(r["decided_by"], r["comment"]) for r in approved] == [(None, None)]
    (run,) = runs(st2_config)
    assert run["comment"].endswith("; approved by an unnamed analyst")
    assert (run["destination"], run["state"]) == ("hard_delete", "finished")
    with Ledger(st2_config["ledger_url"]) as ledger:
        rows = ledger.outcomes_for_run(run["run_id"])
    # Graph purges; Gmail's delete needs the https://mail.google.com/ scope, which the
    # sandbox's service account was not granted
    assert {o.recipient: (o.status, o.reason) for o in rows} == {
        "alice@corp.example": ("retracted", None),
        "carol@corp-mail.example": ("failed", "not_authorized")}
    assert folders(st2_tenant) == {"alice@corp.example": "purged",
                                   "carol@corp-mail.example": "inbox"}


# -- nobody answers ----------------------------------------------------------------------------

def test_an_inquiry_nobody_answers_expires_and_nothing_moves(st2, st2_tenant, config):
    config["approval"].update(route="soc-approvals", users=["alice"], roles=["soc_lead"],
                              ttl_minutes=30)
    st2.reconfigure(config)
    wf = st2.request(AUTO, verdict())
    inquiry = asked(st2, wf)
    assert {k: inquiry.parameters[k] for k in ("route", "ttl", "users", "roles")} == {
        "route": "soc-approvals", "ttl": 30, "users": ["alice"], "roles": ["soc_lead"]}
    expire_inquiries(minutes_later=0)  # within its ttl: the collector leaves it
    assert st2.execution(str(inquiry.id)).status == "pending"
    expire_inquiries(minutes_later=32)
    execution = st2.wait(wf)
    assert st2.execution(str(inquiry.id)).status == "timeout"
    assert execution.status == "failed", execution.result
    assert task_names(st2, wf) == ["plan", "ask", "expired"]
    assert execution.result["output"]["why"] == (
        "no answer to the approval inquiry within 30 minutes; nothing retracted")
    # an answer after the expiry is refused by StackStorm
    with pytest.raises(inquiry_errors.InquiryTimedOut):
        inquiry_service.check_inquiry(InquiryAPI.from_model(st2.execution(str(inquiry.id))))

    # The execution's own approval inputs win over the config (roles: from the config).
    wf = st2.request(AUTO, verdict(approval_route="oncall", approval_ttl=5,
                                   approval_users=["carol"]))
    inquiry = asked(st2, wf)
    assert {k: inquiry.parameters[k] for k in ("route", "ttl", "users", "roles")} == {
        "route": "oncall", "ttl": 5, "users": ["carol"], "roles": ["soc_lead"]}
    expire_inquiries(minutes_later=7)
    execution = st2.wait(wf)
    assert execution.status == "failed", execution.result
    assert execution.result["output"]["why"] == (
        "no answer to the approval inquiry within 5 minutes; nothing retracted")
    assert decisions(config) == [] and runs(config) == []
    assert folders(st2_tenant) == {a: "inbox" for a in RECIPIENTS}


# -- a decision that cannot be kept ------------------------------------------------------------

def test_an_answer_that_cannot_be_recorded_retracts_nothing(st2, st2_tenant, config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config["ledger_url"] = "sqlite:///%s" % (blocker / "ledger.db")
    st2.reconfigure(config)
    for approve in (True, False):
        wf = st2.request(AUTO, verdict())
        st2.respond(asked(st2, wf), {"approve": approve, "analyst": "bob"})
        execution = st2.wait(wf)
        assert execution.status == "failed", execution.result
        assert task_names(st2, wf) == ["plan", "ask", "record_decision"]
        why = execution.result["output"]["why"]
        assert why.startswith("the decision could not be recorded in the ledger "
                              "(config ledger_url: cannot open the ledger at "), why
        assert why.endswith("); nothing retracted")
    assert st2.descendants(wf, ref="email_retraction.retract") == []
    assert folders(st2_tenant) == {a: "inbox" for a in RECIPIENTS}
