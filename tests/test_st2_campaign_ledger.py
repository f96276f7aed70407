"""Four runs over one tenant, one of them a `retract_campaign` run by StackStorm, and the
ledger's record of them to the copy: every run's metric record, the window's record and card,
filtered records and the "View details" rows (paged), against one ledger (SQLite, and a
private PostgreSQL schema when EMAIL_RETRACTION_TEST_POSTGRES_URL is set).

The runs, each driven by StackStorm (python runner subprocesses, Orquesta for the workflow):
  run1  manual `retract` to junk: 2 retracted, 1 already there, 3 failed.
  run2  automatic `retract_campaign` (SUSPICIOUS -> junk) in 3 chunks of 3, one at a time:
        chunk 0 under a Graph outage (one provider_error; two copies answered from the
        ledger), chunk 1's python-runner subprocess is killed (SIGKILL) as it starts, chunk 2
        is never scheduled -> aggregated, workflow failed. Then the operator reruns the chunks
        under the run's id (`st2 execution re-run` of chunks 0 and 1, `st2 run retract
        run_id=...` for chunk 2), aggregates, and reruns chunk 0 once more.
  run3  manual rerun of run1's request (no skipping): nothing new.
  run4  `restore` of one copy to the inbox.
The read side (records, card, details) is read with the pack's metrics actions in-process.
"""
import signal
import time
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

import eventlet
import psutil
import pytest

from ledger_db import BACKENDS, database_url
from retraction.ledger import Ledger
from retraction_details import RetractionDetailsAction
from retraction_metrics import RetractionMetricsAction

pytest_plugins = ["st2_stack"]

MID = "<abc@evil.example>"
RETRACT = "email_retraction.retract"


def minute(value):
    return value.replace(second=0, microsecond=0)


def label(value):
    return value.strftime("%Y-%m-%d %H:%M UTC")


class Scenario:
    """Everything the scenario did, for the tests to check."""


@pytest.fixture(scope="module", params=BACKENDS)
def scenario(request, st2, st2_sandbox, st2_base_config, tmp_path_factory):
    box = st2_sandbox
    box.load_scenario("basic.yaml")
    box.faults({}, clear=True)
    directory = str(tmp_path_factory.mktemp("campaign"))
    try:
        with database_url(request.param, directory) as url:
            yield _play(st2, box, st2_base_config, url)
    finally:
        box.faults({}, clear=True)
        st2.reconfigure(st2_base_config)


def _play(st2, box, base_config, url):
    s = Scenario()
    s.url = url
    s.config = dict(base_config, ledger_url=url,
                    limits=dict(base_config["limits"], max_attempts=2, retry_budget_s=2))
    st2.reconfigure(s.config)
    now = datetime.now(timezone.utc)
    s.since, s.until = minute(now - timedelta(days=1)), minute(now + timedelta(hours=1))
    verdict = {n: (now - timedelta(minutes=n)).isoformat() for n in (120, 60, 30)}
    run1_recipients = ["alice@corp.example", "bob@corp.example", "exec@corp.example",
                       "left@corp.example", "dave@corp-mail.example", "x@elsewhere.example"]
    run1_params = dict(message_id=MID, recipients=run1_recipients, destination="junk",
                       verdict_time=verdict[120], requested_by="analyst-1")
    s.run1 = _result(st2.run(RETRACT, run1_params))

    s.inputs = dict(message_id=MID, mode="auto", disposition="SUSPICIOUS",
                    verdict_time=verdict[60], chunk_size=3, concurrency=1,
                    requested_by="soc-bot",
                    recipients=["alice@corp.example", "bob@corp.example",
                                "shared-ops@corp.example", "carol@corp-mail.example",
                                "dave@corp-mail.example", "gone@corp-mail.example",
                                "ghost@corp.example", "exec@corp.example"])
    box.faults({"graph": {"rate_5xx": 1.0, "status_5xx": 500}})  # chunk 1 is Gmail only
    workflow = st2.request("email_retraction.retract_campaign", s.inputs)
    s.killed = _kill_when_running(st2, workflow, item=1)
    s.workflow = st2.wait(workflow)
    box.faults({}, clear=True)
    s.children = st2.children(workflow)
    s.chunk_executions = {c.context["orquesta"]["item_id"]: c for c in s.children
                          if c.context["orquesta"]["task_name"] == "retract"}
    s.split = _result(s.children[0])
    s.run2_id = s.workflow.result["output"]["run_id"]
    with Ledger(url) as ledger:
        s.run2_after_crash = ledger.run(s.run2_id)
    # The operator reruns the chunks of the failed workflow under the same run id.
    s.reruns = [st2.wait(st2.rerun(s.chunk_executions[0].id)),
                st2.wait(st2.rerun(s.chunk_executions[1].id)),
                st2.run(RETRACT, dict(s.chunk_executions[1].parameters,
                                      recipients=s.split["chunks"][2]))]
    s.aggregated = st2.run("email_retraction.aggregate_run",
                           {"run_id": s.run2_id, "failed_chunks": 0})
    s.retry = st2.wait(st2.rerun(s.chunk_executions[0].id))  # once more: no change
    s.reaggregated = st2.run("email_retraction.aggregate_run", {"run_id": s.run2_id})

    s.run3 = _result(st2.run(RETRACT, run1_params))
    s.run4 = _result(st2.run("email_retraction.restore", dict(
        message_id=MID, recipients=["alice@corp.example"], verdict_time=verdict[30],
        disposition="NONE", requested_by="analyst-2", comment="false positive")))
    with Ledger(url) as ledger:
        s.runs = {run: ledger.run(run) for run in
                  (s.run1["run_id"], s.run2_id, s.run3["run_id"], s.run4["run_id"])}
    s.labels = {s.run1["run_id"]: "run1", s.run2_id: "run2", s.run3["run_id"]: "run3",
                s.run4["run_id"]: "run4"}
    return s


def _result(execution):
    assert execution.status == "succeeded", execution.result
    result = execution.result["result"]
    assert isinstance(result, dict), result
    return result


def _kill_when_running(st2, workflow_id, item, timeout=120):
    """SIGKILL the python-runner subprocess of the workflow's `retract` item as soon as it
    exists (StackStorm gives it the execution's id in ST2_ACTION_EXECUTION_ID): the action
    dies while Python starts, before it can contact anyone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunks = [c for c in st2.children(workflow_id)
                  if (c.context.get("orquesta") or {}).get("task_name") == "retract"
                  and c.context["orquesta"].get("item_id") == item]
        if chunks:
            execution_id = str(chunks[0].id)
            for process in psutil.Process().children(recursive=True):
                try:
                    if process.environ().get("ST2_ACTION_EXECUTION_ID") == execution_id:
                        process.send_signal(signal.SIGKILL)
                        return execution_id
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        eventlet.sleep(0.01)
    raise AssertionError("chunk %d never ran" % item)


def record_of(run_row):
    return dict(run_row["metric_record"])


def figures(record, *names):
    return tuple(record[n] for n in names)


# -- the workflow ----------------------------------------------------------------------------

def test_the_workflow_splits_runs_chunks_and_fails_after_recording(scenario):
    s = scenario
    assert [(c.context["orquesta"]["task_name"], c.context["orquesta"].get("item_id"),
             c.status) for c in s.children] == [
        ("split", None, "succeeded"), ("retract", 0, "succeeded"),
        ("retract", 1, "timeout"),  # SIGKILL: StackStorm reads exit code -9 as its timeout
        ("aggregate", None, "succeeded"), ("conclude", None, "succeeded")]
    assert str(s.chunk_executions[1].id) == s.killed
    assert s.chunk_executions[1].result["exit_code"] == -signal.SIGKILL
    assert s.workflow.status == "failed"  # ended by `fail`, after the record was stored
    assert s.split["chunks"] == [
        ["alice@corp.example", "bob@corp.example", "shared-ops@corp.example"],
        ["carol@corp-mail.example", "dave@corp-mail.example", "gone@corp-mail.example"],
        ["ghost@corp.example", "exec@corp.example"]]
    assert (s.split["destination"], s.split["concurrency"]) == ("junk", 1)
    aggregate = _result(s.children[3])
    assert aggregate["failed_chunks"] == 2  # chunk 1's runner died; chunk 2 never ran
    for index, execution in s.chunk_executions.items():
        params = execution.parameters
        assert params["run_id"] == s.run2_id
        assert (params["message_id"], params["destination"], params["mode"],
                params["disposition"], params["requested_by"]) == \
            (MID, "junk", "auto", "SUSPICIOUS", "soc-bot")
        assert params["recipients"] == s.split["chunks"][index]
    output = s.workflow.result["output"]
    assert (output["run_id"], output["state"]) == (s.run2_id, "failed")
    assert s.run2_after_crash["state"] == "failed"
    record = output["metric_record"]
    assert record == record_of(s.run2_after_crash)
    assert figures(record, "total", "retracted", "already_in_destination", "failed") == \
        (3, 0, 2, 1)
    assert record["failed_by_reason"]["provider_error"] == 1
    assert output["card"].splitlines()[:5] == [
        "Retraction run %s · one run" % s.run2_id,
        "Total retractions: 3",
        "Success: 0 (0.0%)",
        "Fail: 1 (33.3%): provider_error 1",
        "Already in destination: 2 (66.7%)",
    ]


def test_chunk_results_and_reruns(scenario):
    s = scenario
    chunk0 = _result(s.reruns[0])
    assert s.reruns[0].parameters == s.chunk_executions[0].parameters
    got = {o["recipient"]: o for o in chunk0["outcomes"]}
    assert got["shared-ops@corp.example"]["status"] == "retracted"
    for address in ("alice@corp.example", "bob@corp.example"):
        assert (got[address]["status"], got[address]["attempts"]) == \
            ("already_in_destination", 0)
        assert got[address]["error_message"].startswith(
            "retracted earlier by run %s;" % s.run1["run_id"])
    chunk1 = _result(s.reruns[1])
    got = {o["recipient"]: o for o in chunk1["outcomes"]}
    assert got["dave@corp-mail.example"]["error_message"].startswith(
        "found in junk earlier by run %s;" % s.run1["run_id"])
    assert {a: (o["status"], o["reason"]) for a, o in got.items()} == {
        "carol@corp-mail.example": ("retracted", None),
        "dave@corp-mail.example": ("already_in_destination", None),
        "gone@corp-mail.example": ("failed", "not_a_mailbox")}
    chunk2 = _result(s.reruns[2])
    assert {o["recipient"]: (o["status"], o["reason"]) for o in chunk2["outcomes"]} == {
        "ghost@corp.example": ("failed", "not_a_mailbox"),
        "exec@corp.example": ("failed", "not_authorized")}
    retry = _result(s.retry)  # the third time: everything answered from the ledger
    assert retry["counts"]["skipped"] == 3
    assert {o["error_message"].split(";")[0] for o in retry["outcomes"]} == {
        "retracted earlier by run %s" % s.run1["run_id"],
        "retracted earlier by run %s" % s.run2_id}
    for execution in (s.aggregated, s.reaggregated):
        assert _result(execution)["state"] == "finished"
    assert _result(s.aggregated)["metric_record"] == _result(s.reaggregated)["metric_record"]


# -- every run's record ----------------------------------------------------------------------

def _run_record(total, retracted, already, failed, reasons, read, unread, auto, manual,
                providers, destinations, dispositions, triggers, timed):
    """The full record of a run (percentages derived by hand from the counts)."""
    return {"total": total, "retracted": retracted, "already_in_destination": already,
            "failed": failed, "failed_by_reason": dict(
                {"not_found": 0, "not_a_mailbox": 0, "not_authorized": 0, "out_of_scope": 0,
                 "provider_error": 0}, **reasons),
            "read": read, "unread": unread, "read_unknown": 0, "previewed": 0,
            "preview_failed": 0, "auto": auto, "manual": manual, "by_provider": providers,
            "by_destination": destinations, "by_disposition": dispositions,
            "by_trigger": triggers, "timed": timed}


RUN_FIELDS = ("total", "retracted", "already_in_destination", "failed", "failed_by_reason",
              "read", "unread", "read_unknown", "previewed", "preview_failed", "auto", "manual",
              "by_provider", "by_destination", "by_disposition", "by_trigger")


def _observed(record):
    got = {name: record[name] for name in RUN_FIELDS}
    got["timed"] = record["time_to_retract"]["count"]
    return got


def test_every_runs_record(scenario):
    s = scenario
    run1 = record_of(s.runs[s.run1["run_id"]])
    assert _observed(run1) == _run_record(
        6, 2, 1, 3, {"not_a_mailbox": 1, "not_authorized": 1, "out_of_scope": 1}, 1, 1, 0, 6,
        {"microsoft": 4, "google": 1, "unspecified": 1}, {"junk": 6}, {"unspecified": 6},
        {"analyst": 6}, 2)
    assert figures(run1, "retracted_pct", "already_in_destination_pct", "failed_pct",
                   "manual_pct", "read_pct") == (33.3, 16.7, 50.0, 100.0, 50.0)
    run2 = record_of(s.runs[s.run2_id])
    assert s.runs[s.run2_id]["state"] == "finished"
    assert _observed(run2) == _run_record(
        8, 2, 3, 3, {"not_a_mailbox": 2, "not_authorized": 1}, 1, 1, 8, 0,
        {"microsoft": 5, "google": 3}, {"junk": 8}, {"SUSPICIOUS": 8}, {"disposition": 8}, 2)
    assert figures(run2, "retracted_pct", "already_in_destination_pct", "failed_pct",
                   "auto_pct") == (25.0, 37.5, 37.5, 100.0)
    assert run2 == _result(s.aggregated)["metric_record"]
    run3 = record_of(s.runs[s.run3["run_id"]])
    assert _observed(run3) == _run_record(
        6, 0, 3, 3, {"not_a_mailbox": 1, "not_authorized": 1, "out_of_scope": 1}, 0, 0, 0, 6,
        {"microsoft": 4, "google": 1, "unspecified": 1}, {"junk": 6}, {"unspecified": 6},
        {"analyst": 6}, 0)
    run4 = record_of(s.runs[s.run4["run_id"]])
    assert _observed(run4) == _run_record(
        1, 1, 0, 0, {}, 0, 1, 0, 1, {"microsoft": 1}, {"inbox": 1}, {"NONE": 1},
        {"analyst": 1}, 1)
    assert {row["state"] for row in s.runs.values()} == {"finished"}


# -- the window: record, card, details -------------------------------------------------------

def _metrics(s, **params):
    ok, result = RetractionMetricsAction(config=s.config).run(
        since=s.since.isoformat(), until=s.until.isoformat(), **params)
    assert ok
    return result


def _percentile(values, q):
    """percentile_cont over millisecond values, in seconds to the millisecond."""
    values = sorted(values)
    position = Decimal(q) * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    ms = Decimal(values[low]) + (Decimal(values[high]) - Decimal(values[low])) * (position - low)
    return float((ms / 1000).quantize(Decimal("0.001"), ROUND_HALF_UP))


def test_window_record_counts_each_copy_once(scenario):
    s = scenario
    result = _metrics(s)
    record = result["record"]
    window_label = "%s to %s" % (label(s.since), label(s.until))
    assert record["window"] == {"since": s.since.isoformat(), "until": s.until.isoformat(),
                                "last": None, "label": window_label}
    ttr = record.pop("time_to_retract")
    record.pop("window")
    assert record == {
        "filters": {},
        "total": 11, "retracted": 5, "retracted_pct": 45.5,
        "already_in_destination": 1, "already_in_destination_pct": 9.1,
        "failed": 5, "failed_pct": 45.5,
        "failed_by_reason": {"not_found": 0, "not_a_mailbox": 3, "not_authorized": 1,
                             "out_of_scope": 1, "provider_error": 0},
        "failed_by_reason_pct": {"not_found": 0.0, "not_a_mailbox": 27.3,
                                 "not_authorized": 9.1, "out_of_scope": 9.1,
                                 "provider_error": 0.0},
        "previewed": 0, "preview_failed": 0,
        "read": 2, "unread": 3, "read_unknown": 0, "read_pct": 40.0, "unread_pct": 60.0,
        "auto": 4, "auto_pct": 36.4, "manual": 7, "manual_pct": 63.6,
        "by_provider": {"microsoft": 7, "google": 3, "unspecified": 1},
        "by_destination": {"inbox": 1, "junk": 10},
        "by_disposition": {"SUSPICIOUS": 4, "NONE": 1, "unspecified": 6},
        "by_trigger": {"disposition": 4, "analyst": 7},
    }
    # Time to retract: the counted retracted rows' own durations, percentiles taken here.
    ok, details = RetractionDetailsAction(config=s.config).run(
        since=s.since.isoformat(), until=s.until.isoformat(), status="retracted", limit=100)
    durations = [round(row["time_to_retract_s"] * 1000) for row in details["rows"]
                 if row["counted"]]
    assert len(durations) == 5
    assert ttr == {"count": 5, "p50_s": _percentile(durations, "0.5"),
                   "p95_s": _percentile(durations, "0.95"), "max_s": max(durations) / 1000}
    # from verdicts an hour and two hours old (plus however long the runs took)
    assert 3600 <= ttr["p50_s"] < 7200 <= ttr["p95_s"] <= ttr["max_s"]
    card = result["card"].splitlines()
    timing = card.pop(7)  # minutes depend on how long the runs took
    assert timing.startswith("Time to retract: p50 1h ") and " · p95 2h " in timing, timing
    assert card == [
        "Retractions · " + window_label,
        "Total retractions: 11",
        "Success: 5 (45.5%)",
        "Fail: 5 (45.5%): not_a_mailbox 3, not_authorized 1, out_of_scope 1",
        "Already in destination: 1 (9.1%)",
        "Unread / Read: 3 / 2",
        "Auto / Manual: 4 / 7",
        "By provider: microsoft 7, google 3, unspecified 1",
        "By destination: inbox 1, junk 10",
        "By disposition: SUSPICIOUS 4, NONE 1, unspecified 6",
        "By trigger: disposition 4, analyst 7",
    ]


def test_filtered_records(scenario):
    auto = _metrics(scenario, mode="auto", format="markdown")
    record = auto["record"]
    assert _observed(record) == _run_record(
        4, 2, 0, 2, {"not_a_mailbox": 2}, 1, 1, 4, 0, {"microsoft": 2, "google": 2},
        {"junk": 4}, {"SUSPICIOUS": 4}, {"disposition": 4}, 2)
    assert figures(record, "retracted_pct", "failed_pct", "auto_pct") == (50.0, 50.0, 100.0)
    assert auto["card"].splitlines()[1:9] == [
        "_Filters: mode=auto_",
        "",
        "- **Total retractions:** 4",
        "- **Success:** 2 (50.0%)",
        "- **Fail:** 2 (50.0%): not_a_mailbox 2",
        "- **Already in destination:** 0 (0.0%)",
        "- **Unread / Read:** 1 / 1",
        "- **Auto / Manual:** 4 / 0",
    ]
    totals = {}
    for name, value in (("provider", "microsoft"), ("provider", "google"),
                        ("destination", "inbox"), ("destination", "junk"),
                        ("trigger", "analyst"), ("disposition", "SUSPICIOUS"),
                        ("mode", "manual")):
        record = _metrics(scenario, format="json", **{name: value})["record"]
        totals[(name, value)] = figures(record, "total", "retracted",
                                        "already_in_destination", "failed")
    assert totals == {
        ("provider", "microsoft"): (7, 4, 0, 3), ("provider", "google"): (3, 1, 1, 1),
        ("destination", "inbox"): (1, 1, 0, 0), ("destination", "junk"): (10, 4, 1, 5),
        ("trigger", "analyst"): (7, 3, 1, 3), ("disposition", "SUSPICIOUS"): (4, 2, 0, 2),
        ("mode", "manual"): (7, 3, 1, 3)}


# Every outcome row of the scenario: run, recipient, provider, destination, mode, trigger,
# disposition, status, reason, counted.
A, R, F = "already_in_destination", "retracted", "failed"
M, G = "microsoft", "google"
ROWS = [
    ("run1", "alice@corp.example", M, "junk", "manual", "analyst", None, R, None, True),
    ("run1", "bob@corp.example", M, "junk", "manual", "analyst", None, R, None, True),
    ("run1", "exec@corp.example", M, "junk", "manual", "analyst", None, F, "not_authorized",
     True),
    ("run1", "left@corp.example", M, "junk", "manual", "analyst", None, F, "not_a_mailbox",
     True),
    ("run1", "dave@corp-mail.example", G, "junk", "manual", "analyst", None, A, None, True),
    ("run1", "x@elsewhere.example", None, "junk", "manual", "analyst", None, F, "out_of_scope",
     True),
    ("run2", "alice@corp.example", M, "junk", "auto", "disposition", "SUSPICIOUS", A, None,
     False),
    ("run2", "bob@corp.example", M, "junk", "auto", "disposition", "SUSPICIOUS", A, None,
     False),
    ("run2", "shared-ops@corp.example", M, "junk", "auto", "disposition", "SUSPICIOUS", R,
     None, True),
    ("run2", "carol@corp-mail.example", G, "junk", "auto", "disposition", "SUSPICIOUS", R,
     None, True),
    ("run2", "dave@corp-mail.example", G, "junk", "auto", "disposition", "SUSPICIOUS", A,
     None, False),
    ("run2", "gone@corp-mail.example", G, "junk", "auto", "disposition", "SUSPICIOUS", F,
     "not_a_mailbox", True),
    ("run2", "ghost@corp.example", M, "junk", "auto", "disposition", "SUSPICIOUS", F,
     "not_a_mailbox", True),
    ("run2", "exec@corp.example", M, "junk", "auto", "disposition", "SUSPICIOUS", F,
     "not_authorized", False),
    ("run3", "alice@corp.example", M, "junk", "manual", "analyst", None, A, None, False),
    ("run3", "bob@corp.example", M, "junk", "manual", "analyst", None, A, None, False),
    ("run3", "exec@corp.example", M, "junk", "manual", "analyst", None, F, "not_authorized",
     False),
    ("run3", "left@corp.example", M, "junk", "manual", "analyst", None, F, "not_a_mailbox",
     False),
    ("run3", "dave@corp-mail.example", G, "junk", "manual", "analyst", None, A, None, False),
    ("run3", "x@elsewhere.example", None, "junk", "manual", "analyst", None, F, "out_of_scope",
     False),
    ("run4", "alice@corp.example", M, "inbox", "manual", "analyst", "NONE", R, None, True),
]
ROW_FIELDS = ("run", "recipient", "provider", "destination", "mode", "trigger", "disposition",
              "status", "reason", "counted")


def _details(s, **params):
    rows, cursor = [], None
    while True:
        ok, page = RetractionDetailsAction(config=s.config).run(
            since=s.since.isoformat(), until=s.until.isoformat(), limit=5, cursor=cursor,
            **params)
        assert ok and page["count"] == len(page["rows"]) <= 5
        rows.extend(page["rows"])
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


def _as_table(s, rows):
    return sorted(tuple([s.labels[r["run_id"]]] + [r[f] for f in ROW_FIELDS[1:]])
                  for r in rows)


def test_details_rows_for_every_filter(scenario):
    s = scenario
    everything = _details(s)
    assert _as_table(s, everything) == sorted(ROWS)
    keys = [(r["completed_at"], r["id"]) for r in everything]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == 21  # newest first
    order = [s.labels[r["run_id"]] for r in everything]
    assert order == sorted(order, reverse=True)  # run4's row first, run1's rows last
    assert [r["requested_by"] for r in everything if r["run_id"] == s.run2_id] == \
        ["soc-bot"] * 8
    skipped = {r["recipient"]: r for r in everything
               if r["run_id"] == s.run2_id and r["status"] == A}
    assert {a: r["error_message"].split(";")[0] for a, r in skipped.items()} == {
        "alice@corp.example": "retracted earlier by run %s" % s.run1["run_id"],
        "bob@corp.example": "retracted earlier by run %s" % s.run1["run_id"],
        "dave@corp-mail.example": "found in junk earlier by run %s" % s.run1["run_id"]}
    assert {r["error_code"] for r in skipped.values()} == {"skipped_already_retracted"}
    index = dict(zip(ROW_FIELDS, range(len(ROW_FIELDS))))
    filters = [("status", R), ("status", A), ("status", F), ("reason", "not_a_mailbox"),
               ("reason", "not_authorized"), ("reason", "out_of_scope"),
               ("reason", "provider_error"), ("provider", M), ("provider", G),
               ("mode", "auto"), ("mode", "manual"), ("trigger", "disposition"),
               ("trigger", "analyst"), ("disposition", "SUSPICIOUS"),
               ("disposition", "NONE"), ("destination", "inbox"), ("destination", "junk")]
    for name, value in filters:
        expected = sorted(row for row in ROWS if row[index[name]] == value)
        assert _as_table(s, _details(s, **{name: value})) == expected, (name, value)
    assert _as_table(s, _details(s, recipient="Alice@corp.example")) == \
        sorted(row for row in ROWS if row[1] == "alice@corp.example")
    assert len(_details(s, message_id="abc@evil.example")) == 21
    assert _details(s, message_id="<hello@corp.example>") == []
    assert _as_table(s, _details(s, status=F, mode="auto")) == sorted(
        row for row in ROWS if row[7] == F and row[4] == "auto")
