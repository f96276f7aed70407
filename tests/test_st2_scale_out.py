"""Scale-out as StackStorm runs it: `retract_campaign` spreads a generated campaign of a few
hundred copies over chunks, Orquesta keeps `concurrency` of them in flight, and StackStorm
delivers each scheduled `retract` execution to the action runner in its own green thread, so
the chunks run as overlapping python-runner subprocesses (as on several action runners in
StackStorm HA) against ONE ledger: a private PostgreSQL schema (tests/ledger_db.py; set
EMAIL_RETRACTION_TEST_POSTGRES_URL), and the SQLite file of a single node.

Asserted: the chunks' executions overlapped (from the times StackStorm logged them running and
completed), one outcome per copy (none twice, none missing), the metric record's figures from
the campaign's truth (its total equals the copies), every copy where it should be, and no copy
moved twice. Then an action runner's subprocess is killed mid-chunk (SIGKILL): the workflow
aggregates the other chunks and ends failed, and after the operator's re-run of that chunk
every copy has exactly one outcome and none was moved twice.
"""
import os
import signal
import time
from collections import Counter

import eventlet
import psutil
import pytest

import ledger_db
from retraction.ledger import Ledger

pytest_plugins = ["st2_stack"]

CAMPAIGN = "email_retraction.retract_campaign"


@pytest.fixture(params=ledger_db.BACKENDS)
def one_ledger(request, st2, st2_tenant, st2_config, tmp_path):
    """The pack config on one shared ledger of this backend, registered."""
    with ledger_db.database_url(request.param, str(tmp_path)) as url:
        st2_config["ledger_url"] = url
        st2.reconfigure(st2_config)
        yield st2_config


@pytest.fixture
def any_ledger(st2, st2_tenant, st2_config, tmp_path):
    """PostgreSQL when the test server is set, else SQLite."""
    backend = "postgresql" if os.environ.get(ledger_db.POSTGRES_ENV) else "sqlite"
    with ledger_db.database_url(backend, str(tmp_path)) as url:
        st2_config["ledger_url"] = url
        st2.reconfigure(st2_config)
        yield st2_config


def chunk_executions(st2, workflow_id):
    return [c for c in st2.children(workflow_id)
            if (c.context.get("orquesta") or {}).get("task_name") == "retract"]


def running_interval(execution):
    """(when the action runner started running it, when it completed), from StackStorm's
    execution log."""
    (running,) = [e["timestamp"] for e in execution.log if e["status"] == "running"]
    return running, execution.end_timestamp


def most_at_once(intervals):
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = most = 0
    for _, step in events:  # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most


def expected_outcomes(truth):
    """{recipient: status} a retraction to junk gives each copy of the campaign's truth."""
    out = {}
    for address, mailbox in truth["mailboxes"].items():
        if not mailbox["present"]:
            out[address] = "failed"
        elif mailbox["folder"] == "junk":
            out[address] = "already_in_destination"
        else:
            out[address] = "retracted"
    return out


def ledger_outcomes(config, run_id):
    with Ledger(config["ledger_url"]) as ledger:
        return ledger.run(run_id), ledger.outcomes_for_run(run_id)


def test_chunks_run_in_concurrent_runner_processes_against_one_ledger(
        st2, st2_tenant, one_ledger):
    config = one_ledger
    from_sandbox = st2_tenant
    truth = from_sandbox.campaign(message_id="<scale@evil.example>", copies=240, seed=11)
    recipients = truth["recipients"]
    assert len(recipients) == 240 and len(set(recipients)) == 240
    seq = from_sandbox.audit_seq()
    execution = st2.run(CAMPAIGN, {"message_id": "<scale@evil.example>",
                                   "recipients": recipients, "destination": "junk",
                                   "chunk_size": 48, "concurrency": 5})
    assert execution.status == "succeeded", execution.result
    chunks = chunk_executions(st2, str(execution.id))
    assert len(chunks) == 5 and {c.status for c in chunks} == {"succeeded"}
    assert sorted(len(c.parameters["recipients"]) for c in chunks) == [48] * 5
    # the chunks ran at the same time: at least four runner subprocesses overlapped
    assert most_at_once([running_interval(c) for c in chunks]) >= 4
    output = execution.result["output"]
    run, rows = ledger_outcomes(config, output["run_id"])
    # one outcome per copy: none twice, none missing
    assert len(rows) == 240
    assert sorted(o.recipient for o in rows) == sorted(recipients)
    expected = expected_outcomes(truth)
    assert {o.recipient: o.status for o in rows} == expected
    assert {o.reason for o in rows if o.status == "failed"} == {"not_found"}
    counts = Counter(expected.values())
    record = output["metric_record"]
    assert record == run["metric_record"] and run["state"] == "finished"
    assert (record["total"], record["retracted"], record["already_in_destination"],
            record["failed"]) == (240, counts["retracted"], counts["already_in_destination"],
                                  counts["failed"])
    read = sum(1 for a, s in expected.items() if s == "retracted"
               and truth["mailboxes"][a]["was_read"])
    assert (record["read"], record["unread"]) == (read, counts["retracted"] - read)
    assert (record["by_provider"]["microsoft"] + record["by_provider"]["google"]) == 240
    # the tenant: every copy in junk, each moved once
    assert {c["folder"] for c in from_sandbox.copies("<scale@evil.example>")} == {"junk"}
    moved = Counter(e["mailbox"] for e in from_sandbox.audit(seq)
                    if e["message_id"] == "<scale@evil.example>")
    assert moved == Counter({a: 1 for a, s in expected.items() if s == "retracted"})


def test_a_runner_process_killed_mid_chunk(st2, st2_tenant, any_ledger):
    """SIGKILL to one chunk's python-runner subprocess once it has moved a copy (the sandbox
    answers slowly and the chunk asks one request at a time, so the chunk is mid-way)."""
    config = any_ledger
    box = st2_tenant
    config["limits"]["provider_concurrency"] = 1
    st2.reconfigure(config)
    truth = box.campaign(message_id="<kill@evil.example>", copies=80, seed=3,
                         deleted_share=0.0, junk_share=0.0)
    recipients = truth["recipients"]
    seq = box.audit_seq()
    box.faults({"settings": {"rtt_ms": 120}})
    workflow = st2.request(CAMPAIGN, {"message_id": "<kill@evil.example>",
                                      "recipients": recipients, "destination": "junk",
                                      "chunk_size": 20, "concurrency": 4})
    victim = _wait_for_chunk(st2, workflow, item=1)
    victim_copies = set(victim.parameters["recipients"])
    process = _runner_process(str(victim.id))
    _wait_for_a_move(box, seq, victim_copies)
    process.send_signal(signal.SIGKILL)
    execution = st2.wait(workflow)
    box.faults({}, clear=True)

    assert execution.status == "failed"
    killed = st2.execution(str(victim.id))
    # StackStorm's shell helper takes exit code -9 for its own timeout kill: a runner process
    # killed by SIGKILL (the OOM killer, an operator) is reported as timed out
    assert (killed.status, killed.result["exit_code"]) == ("timeout", -signal.SIGKILL)
    assert "result" not in killed.result or not isinstance(killed.result["result"], dict)
    chunks = chunk_executions(st2, workflow)
    others = [c for c in chunks if str(c.id) != str(victim.id)]
    assert len(others) == 3 and {c.status for c in others} == {"succeeded"}
    output = execution.result["output"]
    assert output["state"] == "failed"
    run_id = output["run_id"]
    run, rows = ledger_outcomes(config, run_id)
    assert run["state"] == "failed"
    kept = {o.recipient for o in rows} - victim_copies
    assert kept == {a for c in others for a in c.parameters["recipients"]}  # other chunks kept

    # the operator: `st2 execution re-run <killed chunk>`, then aggregate_run
    rerun = st2.wait(st2.rerun(killed.id))
    assert rerun.status == "succeeded", rerun.result
    aggregated = st2.run("email_retraction.aggregate_run", {"run_id": run_id})
    assert st2.result(aggregated)["state"] == "finished"
    run, rows = ledger_outcomes(config, run_id)
    assert run["state"] == "finished"
    assert sorted(o.recipient for o in rows) == sorted(recipients)  # one outcome per copy
    statuses = Counter(o.status for o in rows)
    assert statuses["retracted"] + statuses["already_in_destination"] == len(
        [a for a, m in truth["mailboxes"].items() if m["present"] and m["kind"] == "user"])
    assert run["metric_record"]["total"] == 80
    assert {c["folder"] for c in box.copies("<kill@evil.example>")} == {"junk"}
    moved = Counter(e["mailbox"] for e in box.audit(seq)
                    if e["message_id"] == "<kill@evil.example>")
    assert set(moved.values()) == {1}  # no copy moved twice
    assert set(moved) == set(recipients)


# -- helpers -----------------------------------------------------------------------------------

def _wait_for_chunk(st2, workflow_id, item, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in chunk_executions(st2, workflow_id):
            if (child.context["orquesta"].get("item_id") == item
                    and child.status == "running"):
                return child
        eventlet.sleep(0.02)
    raise AssertionError("chunk %d never ran" % item)


def _runner_process(execution_id, timeout=60):
    """The python-runner subprocess running that execution (StackStorm gives it the
    execution's id in ST2_ACTION_EXECUTION_ID)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in psutil.Process().children(recursive=True):
            try:
                if process.environ().get("ST2_ACTION_EXECUTION_ID") == execution_id:
                    return process
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        eventlet.sleep(0.02)
    raise AssertionError("no runner process for %s" % execution_id)


def _wait_for_a_move(box, since, mailboxes, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["mailbox"] in mailboxes for e in box.audit(since)):
            return
        eventlet.sleep(0.02)
    raise AssertionError("no copy of the chunk was moved")
