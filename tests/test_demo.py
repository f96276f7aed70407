"""`make demo` end to end: tools/demo.py in a subprocess, as the Makefile runs it, with the
full demo.yaml campaign (it takes seconds). It must narrate the five steps without a traceback,
stop its sandbox, and leave a ledger whose outcomes add up to the card it printed, while the
sandbox's audit shows it touched nothing but the copies the ledger says it retracted.
"""
import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest

from conftest import PACK_ROOT
from retraction.ledger import Ledger

DEMO = os.path.join(PACK_ROOT, "tools", "demo.py")
ACTED_ON = {"<invoice-7731@billing-evil.example>": "disposition",
            "<campaign-1@evil.example>": "disposition",
            "<shared-doc-4410@docs-share.example>": "post_delivery",
            "<payroll-update-2291@hr-portal.example>": "phish_submission",
            "<q3-townhall@corp.example>": "analyst"}
DECOY = "<lunch-menu@corp.example>"
STEPS = ["1. Automatic retraction: verdict_sensor sees MALICIOUS verdicts",
         "2. Post-delivery response: a delivered message is rescanned",
         "3. Phish submission response: a user's report is confirmed",
         "4. Manual retraction and undo (retract, then restore)",
         "5. The Retractions card for the demo window, and View details"]


class Demo(object):
    pass


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    keep = str(tmp_path_factory.mktemp("demo"))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, DEMO, "--keep", keep], cwd=PACK_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=180)
    d = Demo()
    d.elapsed = time.monotonic() - started
    d.returncode, d.stdout, d.stderr = proc.returncode, proc.stdout, proc.stderr
    assert d.returncode == 0, (d.stdout[-2000:], d.stderr[-2000:])
    with open(os.path.join(keep, "summary.json")) as handle:
        d.summary = json.load(handle)
    with open(os.path.join(keep, "audit.json")) as handle:
        d.audit = json.load(handle)
    with Ledger(d.summary["ledger_url"]) as ledger:
        d.runs = ledger.runs()[0]
        d.outcomes = {run["run_id"]: ledger.outcomes_for_run(run["run_id"]) for run in d.runs}
    return d


def test_the_demo_narrates_every_step(demo):
    lines = demo.stdout.splitlines()
    assert [line for line in lines if line[:2] in ("1.", "2.", "3.", "4.", "5.")] == STEPS
    assert [s["step"] for s in demo.summary["steps"]] == [1, 2, 3, 4, 5]
    assert demo.stderr == "" and "Traceback" not in demo.stdout
    assert lines[-1].startswith("done in ") and lines[-1].endswith("the sandbox is stopped.")
    text = " ".join(demo.stdout.split())  # narration wraps at 96 columns
    for fragment in ("rule auto_retract_on_verdict renders:", "rule post_delivery_response",
                     "rule phish_submission_response", "(was NONE)",
                     "reported by alice@corp.example", "core.ask: Approve moving",
                     "retract_campaign: run", "chunk 4/4", "Total retractions:",
                     "View details, status=failed"):
        assert fragment in text, fragment
    with pytest.raises(ProcessLookupError):  # the sandbox it started is gone
        os.kill(demo.summary["sandbox_pid"], 0)


def test_the_ledger_holds_the_demo_runs_and_adds_up_to_the_card(demo):
    reported = {run for runs in demo.summary["runs"].values() for run in runs}
    assert set(demo.outcomes) == reported and len(reported) == 6  # 4 automatic, 2 manual
    assert {run["state"] for run in demo.runs} == {"finished"}
    rows = [o for outcomes in demo.outcomes.values() for o in outcomes]
    record = demo.summary["card_record"]
    statuses = Counter(o.status for o in rows)
    assert (record["total"], record["retracted"], record["already_in_destination"],
            record["failed"]) == (len(rows), statuses["retracted"],
                                  statuses["already_in_destination"], statuses["failed"])
    reasons = Counter(o.reason for o in rows if o.status == "failed")
    assert {k: v for k, v in record["failed_by_reason"].items() if v} == dict(reasons)
    assert record["by_trigger"] == dict(Counter(o.trigger for o in rows))
    assert record["auto"] == sum(1 for o in rows if o.mode == "auto")
    assert record["by_destination"] == dict(Counter(o.destination for o in rows))
    for run in demo.runs:  # each run's own record (aggregate_run or a standalone run)
        assert run["metric_record"]["total"] == len(demo.outcomes[run["run_id"]])
    for message_id, trigger in ACTED_ON.items():
        assert {o.trigger for run in demo.summary["runs"][message_id]
                for o in demo.outcomes[run]} == {trigger}
    campaign = [o for run in demo.summary["runs"]["<campaign-1@evil.example>"]
                for o in demo.outcomes[run]]
    assert len(campaign) > 2000 and Counter(o.reason for o in campaign) == Counter(
        {None: 1900, "not_found": 100, "not_a_mailbox": 5, "not_authorized": 2})


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
    campaign = demo.summary["copies"]["<campaign-1@evil.example>"]
    # every copy moved but the two behind the access policy (not_authorized)
    assert Counter(c["folder"] for c in campaign) == Counter({"trash": 1900, "inbox": 2})
    assert {c["folder"] for c in demo.summary["copies"]["<q3-townhall@corp.example>"]} == \
        {"inbox"}  # retracted, then restored
