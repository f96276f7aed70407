"""The `retract_campaign` workflow, step by step, in-process, against the sandbox tenant and a
real ledger (SQLite, and PostgreSQL when EMAIL_RETRACTION_TEST_POSTGRES_URL is set).

Orquesta cannot run here, so tools/st2local (the StackStorm stand-in the tests and the demo
share) walks actions/workflows/retract_campaign.yaml: every expression in the file is evaluated
by the real yaql library with Orquesta's context functions (ctx, result, item, succeeded,
failed), every action call is checked against the action's metadata as StackStorm checks it,
and the task results have StackStorm's shape for Python actions ({"result": <return value>,
...}; a runner that died leaves no result). A with-items task keeps `concurrency` items in
flight and schedules none once an item failed and none is running, as Orquesta does.

The scenario (one known tenant, four runs, exact figures):
  run1  manual `retract` to junk: 2 retracted, 1 already there, 3 failed.
  run2  automatic `retract_campaign` (SUSPICIOUS -> junk) in 3 chunks of 3: chunk 0 under a
        Graph outage (one provider_error; two copies answered from the ledger), chunk 1's
        action runner dies, chunk 2 never runs -> aggregated, workflow failed. Then the
        operator reruns chunks 0, 1, 2 with the run's id, aggregates, retries chunk 0 again.
  run3  manual rerun of run1's request (no skipping): nothing new.
  run4  `restore` of one copy to the inbox.
"""
import os
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

import pytest

from conftest import PACK_ROOT
from ledger_db import BACKENDS, database_url
from restore import RestoreAction
from retract import RetractAction
from retraction.ledger import Ledger
from retraction_details import RetractionDetailsAction
from retraction_metrics import RetractionMetricsAction
from tools.st2local import Runtime

pytest_plugins = ["sandbox.pytest_plugin"]

BASIC = os.path.join(PACK_ROOT, "sandbox", "scenarios", "basic.yaml")
MID = "<abc@evil.example>"


def walker(config, inputs, crash=(), around=None):
    """retract_campaign with these inputs, ready to run() as StackStorm would run it: `crash`
    {(task, item index)} kills the action runner there, `around` {(task, item index):
    (before, after)} runs callables around that execution."""
    runtime = Runtime(config, crash=crash, around=around)
    return runtime.workflow("email_retraction.retract_campaign", inputs)


# -- the scenario ----------------------------------------------------------------------------

def minute(value):
    return value.replace(second=0, microsecond=0)


def label(value):
    return value.strftime("%Y-%m-%d %H:%M UTC")


class Scenario:
    """Everything the scenario did, for the tests to check."""


@pytest.fixture(scope="module", params=BACKENDS)
def scenario(request, sandbox_server, tmp_path_factory):
    box = sandbox_server
    box.load_scenario_file(BASIC)
    directory = str(tmp_path_factory.mktemp("campaign"))
    try:
        with database_url(request.param, directory) as url:
            yield _play(box, url)
    finally:
        box.set_faults(clear=True)
        box.reset()


def _play(box, url):
    s = Scenario()
    s.url = url
    s.box = box
    s.config = dict(box.pack_config(), ledger_url=url,
                    limits={"max_attempts": 2, "retry_budget_s": 2})
    now = datetime.now(timezone.utc)
    s.since, s.until = minute(now - timedelta(days=1)), minute(now + timedelta(hours=1))
    verdict = {n: (now - timedelta(minutes=n)).isoformat() for n in (120, 60, 30)}
    retract = RetractAction(config=s.config)
    run1_recipients = ["alice@corp.example", "bob@corp.example", "exec@corp.example",
                       "left@corp.example", "dave@corp-mail.example", "x@elsewhere.example"]

    ok, s.run1 = retract.run(message_id=MID, recipients=run1_recipients, destination="junk",
                             verdict_time=verdict[120], requested_by="analyst-1")
    assert ok

    s.inputs = dict(message_id=MID, mode="auto", disposition="SUSPICIOUS",
                    verdict_time=verdict[60], chunk_size=3, concurrency=1,
                    requested_by="soc-bot",
                    recipients=["alice@corp.example", "bob@corp.example",
                                "shared-ops@corp.example", "carol@corp-mail.example",
                                "dave@corp-mail.example", "gone@corp-mail.example",
                                "ghost@corp.example", "exec@corp.example"])
    outage = (lambda: box.set_faults({"graph": {"rate_5xx": 1.0, "status_5xx": 500}}),
              lambda: box.set_faults(clear=True))
    s.walk = walker(s.config, s.inputs, crash=[("retract", 1)],
                    around={("retract", 0): outage}).run()
    s.run2_id = s.walk.ctx["run_id"]
    with Ledger(url) as ledger:
        s.run2_after_crash = ledger.run(s.run2_id)
    # The operator reruns the chunks of the failed workflow under the same run id.
    s.reruns = []
    for index in (0, 1, 2):
        s.reruns.append(_chunk(s, index))
    s.aggregated = s.walk.execute("email_retraction.aggregate_run",
                                  {"run_id": s.run2_id, "failed_chunks": 0})
    s.retry = _chunk(s, 0)  # once more: the run must not change
    s.reaggregated = s.walk.execute("email_retraction.aggregate_run", {"run_id": s.run2_id})

    ok, s.run3 = retract.run(message_id=MID, recipients=run1_recipients, destination="junk",
                             verdict_time=verdict[120], requested_by="analyst-1")
    ok, s.run4 = RestoreAction(config=s.config).run(
        message_id=MID, recipients=["alice@corp.example"], verdict_time=verdict[30],
        disposition="NONE", requested_by="analyst-2", comment="false positive")
    assert ok
    with Ledger(url) as ledger:
        s.runs = {run: ledger.run(run) for run in
                  (s.run1["run_id"], s.run2_id, s.run3["run_id"], s.run4["run_id"])}
    s.labels = {s.run1["run_id"]: "run1", s.run2_id: "run2", s.run3["run_id"]: "run3",
                s.run4["run_id"]: "run4"}
    return s


def _chunk(s, index):
    params = s.walk.evaluate(s.walk.spec["tasks"]["retract"]["input"],
                             item=s.walk.ctx["chunks"][index])
    return s.walk.execute("email_retraction.retract", params, ("rerun", index))


def record_of(run_row):
    return dict(run_row["metric_record"])


def figures(record, *names):
    return tuple(record[n] for n in names)


# -- the workflow ----------------------------------------------------------------------------

def test_the_workflow_splits_runs_chunks_and_fails_after_recording(scenario):
    walk = scenario.walk
    assert walk.tasks == [("split", "succeeded"), ("retract", "failed"),
                          ("aggregate", "succeeded"), ("conclude", "succeeded")]
    assert walk.status == "failed"  # ended by `fail`, after the record was stored
    assert walk.ctx["chunks"] == [
        ["alice@corp.example", "bob@corp.example", "shared-ops@corp.example"],
        ["carol@corp-mail.example", "dave@corp-mail.example", "gone@corp-mail.example"],
        ["ghost@corp.example", "exec@corp.example"]]
    assert (walk.ctx["destination"], walk.ctx["in_flight"], walk.ctx["failed_chunks"]) == \
        ("junk", 1, 2)  # chunk 1's runner died; chunk 2 never ran
    retract_calls = [(where, params) for where, ref, params in walk.calls
                     if ref == "email_retraction.retract" and where[0] == "retract"]
    assert [where for where, _ in retract_calls] == [("retract", 0), ("retract", 1)]
    for where, params in retract_calls:
        assert params["run_id"] == scenario.run2_id
        assert (params["message_id"], params["destination"], params["mode"],
                params["disposition"], params["requested_by"]) == \
            (MID, "junk", "auto", "SUSPICIOUS", "soc-bot")
        assert params["recipients"] == walk.ctx["chunks"][where[1]]
    output = walk.output
    assert (output["run_id"], output["state"]) == (scenario.run2_id, "failed")
    assert scenario.run2_after_crash["state"] == "failed"
    record = output["metric_record"]
    assert record == record_of(scenario.run2_after_crash)
    assert figures(record, "total", "retracted", "already_in_destination", "failed") == \
        (3, 0, 2, 1)
    assert record["failed_by_reason"]["provider_error"] == 1
    assert output["card"].splitlines()[:5] == [
        "Retraction run %s · one run" % scenario.run2_id,
        "Total retractions: 3",
        "Success: 0 (0.0%)",
        "Fail: 1 (33.3%): provider_error 1",
        "Already in destination: 2 (66.7%)",
    ]


def test_chunk_results_and_reruns(scenario):
    status, chunk0 = scenario.reruns[0]
    assert status == "succeeded"
    got = {o["recipient"]: o for o in chunk0["result"]["outcomes"]}
    assert got["shared-ops@corp.example"]["status"] == "retracted"
    for address in ("alice@corp.example", "bob@corp.example"):
        assert (got[address]["status"], got[address]["attempts"]) == \
            ("already_in_destination", 0)
        assert got[address]["error_message"].startswith(
            "retracted earlier by run %s;" % scenario.run1["run_id"])
    status, chunk1 = scenario.reruns[1]
    got = {o["recipient"]: o for o in chunk1["result"]["outcomes"]}
    assert got["dave@corp-mail.example"]["error_message"].startswith(
        "found in junk earlier by run %s;" % scenario.run1["run_id"])
    assert {a: (o["status"], o["reason"]) for a, o in got.items()} == {
        "carol@corp-mail.example": ("retracted", None),
        "dave@corp-mail.example": ("already_in_destination", None),
        "gone@corp-mail.example": ("failed", "not_a_mailbox")}
    status, retry = scenario.retry  # the third time: everything answered from the ledger
    assert status == "succeeded" and retry["result"]["counts"]["skipped"] == 3
    assert {o["error_message"].split(";")[0] for o in retry["result"]["outcomes"]} == {
        "retracted earlier by run %s" % scenario.run1["run_id"],
        "retracted earlier by run %s" % scenario.run2_id}
    for status, result in (scenario.aggregated, scenario.reaggregated):
        assert status == "succeeded" and result["result"]["state"] == "finished"
    assert scenario.aggregated[1]["result"]["metric_record"] == \
        scenario.reaggregated[1]["result"]["metric_record"]


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
    assert run2 == s.aggregated[1]["result"]["metric_record"]
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
    assert 3600 <= ttr["p50_s"] < 3660 and 7200 <= ttr["p95_s"] <= ttr["max_s"] < 7260
    assert result["card"].splitlines() == [
        "Retractions · " + window_label,
        "Total retractions: 11",
        "Success: 5 (45.5%)",
        "Fail: 5 (45.5%): not_a_mailbox 3, not_authorized 1, out_of_scope 1",
        "Already in destination: 1 (9.1%)",
        "Unread / Read: 3 / 2",
        "Auto / Manual: 4 / 7",
        "Time to retract: p50 1h 00m · p95 2h 00m · max 2h 00m",
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


# -- other paths through the workflow --------------------------------------------------------

@pytest.fixture
def tenant(sandbox, tmp_path):
    url = "sqlite:///%s" % (tmp_path / "ledger.db")
    return sandbox, url, dict(sandbox.pack_config(), ledger_url=url)


def test_every_chunk_succeeds(tenant):
    box, url, config = tenant
    walk = walker(config, {"message_id": MID, "destination": "trash", "chunk_size": 2,
                           "concurrency": 2, "comment": "INC-3",
                           "recipients": ["alice@corp.example", "bob@corp.example",
                                          "carol@corp-mail.example", "dave@corp-mail.example",
                                          "exec@corp.example"]}).run()
    assert walk.status == "succeeded"
    assert walk.tasks == [("split", "succeeded"), ("retract", "succeeded"),
                          ("aggregate", "succeeded"), ("conclude", "succeeded")]
    assert [where for where, ref, _ in walk.calls if ref == "email_retraction.retract"] == \
        [("retract", 0), ("retract", 1), ("retract", 2)]
    output = walk.output
    assert output["state"] == "finished" and walk.ctx["failed_chunks"] == 0
    assert figures(output["metric_record"], "total", "retracted", "already_in_destination",
                   "failed", "manual") == (5, 3, 1, 1, 5)
    with Ledger(url) as ledger:
        run = ledger.run(output["run_id"])
        assert run["state"] == "finished" and run["metric_record"] == output["metric_record"]
        assert {o.comment for o in ledger.outcomes_for_run(output["run_id"])} == {"INC-3"}
    assert [c["folder"] for c in box.mailbox_view("carol@corp-mail.example")["copies"]
            if c["message_id"] == MID] == ["trash"]


def test_a_chunk_refused_by_policy_is_not_a_failed_chunk(tenant):
    """Copies the pack's policy refuses (out_of_scope: no provider serves the domain) are
    definitive outcomes: a chunk holding only those is ok and the run finishes. (A chunk whose
    provider is unavailable fails the workflow after recording: see
    test_workflow_auto_retract_decisions.py::
    test_a_chunk_whose_provider_was_unavailable_fails_the_workflow.)"""
    box, url, config = tenant
    walk = walker(config, {"message_id": MID, "chunk_size": 2,
                           "recipients": ["alice@corp.example", "bob@corp.example",
                                          "x@elsewhere.example", "y@elsewhere.example"]}).run()
    assert walk.status == "succeeded", walk.errors
    assert walk.tasks == [("split", "succeeded"), ("retract", "succeeded"),
                          ("aggregate", "succeeded"), ("conclude", "succeeded")]
    refused = [chunk for chunk in walk.ctx["chunks"]
               if set(chunk) == {"x@elsewhere.example", "y@elsewhere.example"}]
    assert len(refused) == 1  # one chunk of refused copies only
    assert walk.ctx["failed_chunks"] == 0
    record = walk.output["metric_record"]
    assert (walk.output["state"], record["total"], record["retracted"],
            record["failed_by_reason"]["out_of_scope"]) == ("finished", 4, 2, 2)
    with Ledger(url) as ledger:
        assert ledger.run(walk.output["run_id"])["state"] == "finished"
        assert sorted((o.recipient, o.status, o.reason)
                      for o in ledger.outcomes_for_run(walk.output["run_id"])
                      if o.recipient.endswith("@elsewhere.example")) == [
            ("x@elsewhere.example", "failed", "out_of_scope"),
            ("y@elsewhere.example", "failed", "out_of_scope")]


def test_a_refused_request_stops_at_split_with_nothing_recorded(tenant):
    box, url, config = tenant
    before = box.counters.snapshot()
    walk = walker(config, {"message_id": MID, "destination": "hard_delete",
                           "recipients": ["alice@corp.example"]}).run()
    assert walk.status == "failed" and walk.tasks == [("split", "failed")]
    assert walk.output == {"run_id": None, "state": None, "metric_record": None, "card": None}
    assert box.counters.snapshot() == before
    with Ledger(url) as ledger:
        assert ledger.runs()[0] == []
