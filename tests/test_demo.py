"""`make demo` end to end: tools/demo.py in a subprocess, as the Makefile runs it (StackStorm's
own engine in that process, the sandbox in another), with a campaign of COPIES copies: still
over the approval threshold (300), so the analyst's approval goes through StackStorm's inquiry
service, and split in 4 chunks that the python runner runs together.

The demo must narrate the five steps without a traceback and stop its sandbox; the figures it
prints must be the ledger's; the ledger must add up to the card it printed; StackStorm's own
records (rule enforcements, workflow executions, the inquiry, the chunks) must show the flow it
narrated; and the sandbox's audit must show it touched nothing but the copies the ledger says
it retracted, each as the sandbox's truth says it should end.
"""
import json
import os
import re
import subprocess
import sys
from collections import Counter
from importlib.metadata import version

import pytest

from conftest import PACK_ROOT
from retraction.ledger import Ledger

DEMO = os.path.join(PACK_ROOT, "tools", "demo.py")
COPIES = 400
CAMPAIGN = "<campaign-1@evil.example>"
MANUAL = "<q3-townhall@corp.example>"
DECOY = "<lunch-menu@corp.example>"
ACTED_ON = {"<invoice-7731@billing-evil.example>": "disposition",
            CAMPAIGN: "disposition",
            "<shared-doc-4410@docs-share.example>": "post_delivery",
            "<payroll-update-2291@hr-portal.example>": "phish_submission",
            MANUAL: "analyst"}
RULES = {"email_retraction.verdict": "email_retraction.auto_retract_on_verdict",
         "email_retraction.verdict_changed": "email_retraction.post_delivery_response",
         "email_retraction.phish_submission": "email_retraction.phish_submission_response"}
STEPS = ["1. Automatic retraction: verdict_sensor sees MALICIOUS verdicts",
         "2. Post-delivery response: a delivered message is rescanned",
         "3. Phish submission response: a user's report is confirmed",
         "4. Manual retraction and undo (retract, then restore)",
         "5. The Retractions card for the demo window, and View details"]


class Demo(object):
    pass


def number(n):
    return "{:,}".format(n)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    keep = str(tmp_path_factory.mktemp("demo"))
    out, err = os.path.join(keep, "stdout.txt"), os.path.join(keep, "stderr.txt")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # as `make demo` runs it: the demo sets up its own path
    with open(out, "w") as stdout, open(err, "w") as stderr:
        # Files, not pipes: the test process may be eventlet-patched (st2tests); this only waits.
        proc = subprocess.run([sys.executable, DEMO, "--copies", str(COPIES), "--keep", keep],
                              cwd=PACK_ROOT, stdout=stdout, stderr=stderr, env=env,
                              timeout=600)
    d = Demo()
    with open(out) as handle:
        d.stdout = handle.read()
    with open(err) as handle:
        d.stderr = handle.read()
    assert proc.returncode == 0, (d.stdout[-3000:], d.stderr[-3000:])
    d.text = " ".join(d.stdout.split())  # narration wraps at 96 columns
    with open(os.path.join(keep, "summary.json")) as handle:
        d.summary = json.load(handle)
    with open(os.path.join(keep, "audit.json")) as handle:
        d.audit = json.load(handle)
    with Ledger(d.summary["ledger_url"]) as ledger:
        d.runs = ledger.runs()[0]
        d.outcomes = {run["run_id"]: ledger.outcomes_for_run(run["run_id"]) for run in d.runs}
        d.decisions = ledger.decisions()[0]
    d.rows = [o for outcomes in d.outcomes.values() for o in outcomes]
    return d


def test_the_demo_narrates_every_step_on_stackstorms_engine(demo):
    lines = demo.stdout.splitlines()
    assert [line for line in lines if line[:2] in ("1.", "2.", "3.", "4.", "5.")] == STEPS
    assert [s["step"] for s in demo.summary["steps"]] == [1, 2, 3, 4, 5]
    assert demo.stderr == "" and "Traceback" not in demo.stdout
    assert lines[-1].startswith("done in ")
    assert lines[-1].endswith("StackStorm and the sandbox are stopped.")
    assert ("StackStorm's own engine runs it: st2 %s from ../shared/st2" % version("st2common")
            in demo.text)
    for fragment in ("rule auto_retract_on_verdict enforced by the rules engine",
                     "rule post_delivery_response enforced by the rules engine",
                     "rule phish_submission_response enforced by the rules engine",
                     "(was NONE)", "reported by alice@corp.example", "core.ask: Approve moving",
                     "dana answers approve=true", "through StackStorm's inquiry service",
                     "record_decision: approved by dana", "retract_campaign: run",
                     "chunk 4/4", "Total retractions:", "View details, status=failed"):
        assert fragment in demo.text, fragment
    with pytest.raises(ProcessLookupError):  # the sandbox it started is gone
        os.kill(demo.summary["sandbox_pid"], 0)


def test_the_figures_it_narrates_are_the_ledgers(demo):
    for run in demo.runs:
        outcomes = demo.outcomes[run["run_id"]]
        statuses = Counter(o.status for o in outcomes)
        reasons = Counter(o.reason for o in outcomes if o.status == "failed")
        record = run["metric_record"]
        assert {k: v for k, v in record["failed_by_reason"].items() if v} == dict(reasons)
        line = "run %s" % run["run_id"][:8]
        if run["mode"] == "manual":  # "run <id> to <destination>: <n status>, ... (reasons)"
            said = ", ".join("%d %s" % (n, status) for status, n in sorted(statuses.items()))
            if reasons:
                said += " (%s)" % ", ".join("%s %d" % r for r in sorted(reasons.items()))
            assert "%s to %s: %s" % (line, run["destination"], said) in demo.text, run
            continue
        said = "aggregate_run: %s finished: %s retracted, %s already there, %s failed" % (
            line, number(statuses["retracted"]), number(statuses["already_in_destination"]),
            number(statuses["failed"]))
        if reasons:
            said += " (%s)" % ", ".join("%s %s" % (reason, number(n)) for reason, n in
                                        record["failed_by_reason"].items() if n)
        assert said in demo.text, run
    statuses = Counter(o.status for o in demo.rows)
    for label, n in (("Total retractions", len(demo.rows)), ("Success", statuses["retracted"]),
                     ("Fail", statuses["failed"]),
                     ("Already in destination", statuses["already_in_destination"])):
        assert re.search(r"^  %s: %d\b" % (label, n), demo.stdout, re.M), label
    assert "View details, status=failed: first 5 of %s" % number(statuses["failed"]) \
        in demo.text


def test_stackstorm_recorded_the_flow_it_narrated(demo):
    workflows = demo.summary["workflows"]
    assert [(w["trigger"], w["rule"]) for w in workflows] == [
        (t, RULES[t]) for t in ("email_retraction.verdict", "email_retraction.verdict",
                                "email_retraction.verdict_changed",
                                "email_retraction.phish_submission")]
    assert {w["status"] for w in workflows} == {"succeeded"}
    assert len({w["trigger_instance"] for w in workflows}) == 4
    campaign = [w for w in workflows if w["message_id"] == CAMPAIGN]
    assert len(campaign) == 1 and [w for w in workflows if w["inquiry"]] == campaign
    inquiry = campaign[0]["inquiry"]
    assert inquiry["status"] == "succeeded"
    assert inquiry["result"]["response"] == {"approve": True, "analyst": "dana",
                                             "comment": "checked the sender domain"}
    assert [(d["message_id"], d["decision"], d["decided_by"]) for d in demo.decisions] == [
        (CAMPAIGN, "approved", "dana")]
    chunks = campaign[0]["chunks"]
    truth = demo.summary["campaign"]
    assert [c["item"] for c in chunks] == [0, 1, 2, 3]
    assert {c["status"] for c in chunks} == {"succeeded"}
    assert sum(c["copies"] for c in chunks) == len(truth["recipients"])
    # with-items concurrency: every chunk was under way before the first one ended
    assert max(c["start"] for c in chunks) < min(c["end"] for c in chunks)
    keys = demo.summary["datastore_keys"]
    assert "email_retraction.VerdictSensor:verdicts.checkpoint" in keys
    assert any(k.startswith("email_retraction.SubmissionSensor:") for k in keys)


def test_the_ledger_holds_the_demo_runs_and_adds_up_to_the_card(demo):
    reported = {run for runs in demo.summary["runs"].values() for run in runs}
    assert set(demo.outcomes) == reported and len(reported) == 6  # 4 automatic, 2 manual
    assert {run["state"] for run in demo.runs} == {"finished"}
    record = demo.summary["card_record"]
    statuses = Counter(o.status for o in demo.rows)
    assert (record["total"], record["retracted"], record["already_in_destination"],
            record["failed"]) == (len(demo.rows), statuses["retracted"],
                                  statuses["already_in_destination"], statuses["failed"])
    reasons = Counter(o.reason for o in demo.rows if o.status == "failed")
    assert {k: v for k, v in record["failed_by_reason"].items() if v} == dict(reasons)
    assert record["by_trigger"] == dict(Counter(o.trigger for o in demo.rows))
    assert record["auto"] == sum(1 for o in demo.rows if o.mode == "auto")
    assert record["by_destination"] == dict(Counter(o.destination for o in demo.rows))
    for run in demo.runs:  # each run's own record (aggregate_run or a standalone run)
        assert run["metric_record"]["total"] == len(demo.outcomes[run["run_id"]])
    for message_id, trigger in ACTED_ON.items():
        assert {o.trigger for run in demo.summary["runs"][message_id]
                for o in demo.outcomes[run]} == {trigger}


def test_the_campaign_ended_as_the_sandbox_truth_says(demo):
    truth = demo.summary["campaign"]
    expected = {group: ("failed", "not_a_mailbox") for group in truth["groups"]}
    for address, box in truth["mailboxes"].items():
        expected[address] = {
            "unlicensed": ("failed", "not_a_mailbox"),
            "policy_blocked": ("failed", "not_authorized"),
        }.get(box["kind"], ("retracted", None) if box["present"] else ("failed", "not_found"))
    campaign = [o for run in demo.summary["runs"][CAMPAIGN] for o in demo.outcomes[run]]
    assert len(campaign) == len(expected) > COPIES
    assert {o.recipient: (o.status, o.reason) for o in campaign} == expected
    assert {o.destination for o in campaign} == {"trash"}


def test_the_audit_shows_only_the_copies_the_ledger_retracted(demo):
    by_message = Counter(entry["message_id"] for entry in demo.audit)
    assert set(by_message) == set(ACTED_ON) and DECOY not in by_message
    assert {c["folder"] for c in demo.summary["copies"][DECOY]} == {"inbox"}
    for message_id in ACTED_ON:
        moved = sorted((o.recipient, o.destination) for run in demo.summary["runs"][message_id]
                       for o in demo.outcomes[run] if o.status == "retracted")
        audited = sorted((e["mailbox"], e["after"].split(",")[0]) for e in demo.audit
                         if e["message_id"] == message_id)
        assert audited == moved, message_id
    truth = demo.summary["campaign"]["mailboxes"]
    present = sum(1 for box in truth.values() if box["kind"] == "user" and box["present"])
    blocked = sum(1 for box in truth.values() if box["kind"] == "policy_blocked")
    # every copy moved but those behind the access policy (not_authorized)
    assert Counter(c["folder"] for c in demo.summary["copies"][CAMPAIGN]) == Counter(
        {"trash": present, "inbox": blocked})
    assert {c["folder"] for c in demo.summary["copies"][MANUAL]} == \
        {"inbox"}  # retracted, then restored
