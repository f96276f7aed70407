"""The ledger on SQLite and PostgreSQL: writes, the counting rule, reads, paging, cursors,
concurrency. Every test drives the real Ledger against a real database."""
from __future__ import annotations

import base64
import json
import multiprocessing
import sqlite3
from datetime import datetime, timedelta, timezone

import ledger_db
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from retraction.ledger import InvalidParameter, Ledger
from retraction.ledger.schema import outcomes as outcomes_table
from retraction.metrics import parse_window, record_from_outcomes
from retraction.model import Outcome, RetractionRequest

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
WINDOW = parse_window(since=T0 - timedelta(days=1), until=T0 + timedelta(days=1))
MSG = "<phish-1@evil.example>"


@pytest.fixture(params=ledger_db.BACKENDS)
def url(request, tmp_path):
    with ledger_db.database_url(request.param, tmp_path) as value:
        yield value


@pytest.fixture
def ledger(url):
    with Ledger(url) as opened:
        yield opened


def oc(run_id, recipient, status="retracted", destination="junk", at=0, reason=None,
       message_id=MSG, **extra):
    """An outcome completed `at` seconds after T0, requested a minute before T0."""
    if status == "failed" and reason is None:
        reason = "not_found"
    values = dict(run_id=run_id, message_id=message_id, recipient=recipient,
                  provider="microsoft", destination=destination, mode="manual",
                  trigger="analyst", status=status, reason=reason,
                  requested_at=T0 - timedelta(minutes=1),
                  completed_at=T0 + timedelta(seconds=at))
    values.update(extra)
    return Outcome(**values)


def start(ledger, run_id, destination="junk", preview=False, message_id=MSG):
    ledger.record_run_started(RetractionRequest(
        message_id=message_id, recipients=("a@corp.example",), destination=destination,
        preview=preview, run_id=run_id, requested_at=T0 - timedelta(minutes=1)))


def figures(ledger, **filters):
    record = ledger.metric_record(WINDOW, filters).to_dict()
    return {k: record[k] for k in ("total", "retracted", "already_in_destination", "failed",
                                   "previewed", "preview_failed")}


def counted_rows(ledger):
    rows, _ = ledger.details(WINDOW, limit=1000)
    return sorted((r["run_id"], r["recipient"], r["status"]) for r in rows if r["counted"])


# ------------------------------------------------------------------------- write & read back

def test_outcomes_round_trip_every_field(ledger):
    start(ledger, "run-1")
    written = [
        oc("run-1", "Alice@Corp.example", was_read=True, source_folder="inbox",
           via_group="staff@corp.example", verdict_time=T0 - timedelta(minutes=5),
           disposition="MALICIOUS", requested_by="analyst@corp.example", comment="ticket 42",
           attempts=3, mode="auto", trigger="post_delivery", provider="google"),
        oc("run-1", "bob@corp.example", status="failed", reason="provider_error",
           error_code="ServiceUnavailable", error_message="still 503 after 6 attempts",
           at=5),
    ]
    assert ledger.record_outcomes(iter(written)) == 2
    assert ledger.outcomes_for_run("run-1") == written
    run = ledger.run("run-1")
    assert run["state"] == "running" and run["preview"] is False
    assert run["message_id"] == MSG and run["destination"] == "junk"


def test_attempts_zero_is_kept_in_detail_rows(ledger):
    """0 attempts means no provider was asked (answered from the ledger, refused by policy,
    provider unavailable); it must not read back as 1."""
    start(ledger, "run-1")
    ledger.record_outcomes([
        oc("run-1", "asked@corp.example", attempts=4),
        oc("run-1", "skipped@corp.example", status="already_in_destination", attempts=0,
           error_code="skipped_already_retracted", at=1),
        oc("run-1", "refused@corp.example", status="failed", reason="out_of_scope",
           error_code="protected_mailbox", attempts=0, at=2),
        oc("run-1", "down@corp.example", status="failed", reason="not_authorized",
           error_code="invalid_client", attempts=0, at=3),
    ])
    rows, _ = ledger.details(WINDOW)
    assert {r["recipient"]: r["attempts"] for r in rows} == {
        "asked@corp.example": 4, "skipped@corp.example": 0, "refused@corp.example": 0,
        "down@corp.example": 0}
    assert sorted(o.attempts for o in ledger.outcomes_for_run("run-1")) == [0, 0, 0, 4]
    with pytest.raises(InvalidParameter) as error:
        ledger.record_outcomes([oc("run-1", "bad@corp.example", attempts=-1)])
    assert error.value.field == "outcome.attempts"


def test_naive_times_are_utc(ledger):
    naive = T0.replace(tzinfo=None)
    ledger.record_outcomes([oc("run-1", "a@corp.example", completed_at=naive,
                               requested_at=naive - timedelta(seconds=30))])
    (stored,) = ledger.outcomes_for_run("run-1")
    assert stored.completed_at == T0 and stored.completed_at.tzinfo is not None
    assert ledger.metric_record(WINDOW).time_to_retract.p50_s == 30.0


def test_each_batch_is_committed_as_it_comes(ledger):
    def engine_then_crash():
        for index in range(3):
            yield oc("run-1", "user{}@corp.example".format(index), at=index)
        raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError):
        ledger.record_outcomes(engine_then_crash(), batch_size=1)
    assert len(ledger.outcomes_for_run("run-1")) == 3


@pytest.mark.parametrize("bad, field", [
    ({"status": "moved"}, "outcome.status"),
    ({"status": "failed", "reason": None}, "outcome.reason"),
    ({"status": "retracted", "reason": "not_found"}, "outcome.reason"),
    ({"reason": "flaky", "status": "failed"}, "outcome.reason"),
    ({"destination": "archive"}, "outcome.destination"),
    ({"provider": "yahoo"}, "outcome.provider"),
    ({"disposition": "malicious"}, "outcome.disposition"),
    ({"was_read": "yes"}, "outcome.was_read"),
    ({"recipient": ""}, "outcome.recipient"),
])
def test_bad_outcome_is_refused_before_anything_is_written(ledger, bad, field):
    values = dict(run_id="run-1", message_id=MSG, recipient="x@corp.example",
                  provider="microsoft", destination="junk", mode="manual", trigger="analyst",
                  status="retracted", completed_at=T0)
    values.update(bad)
    batch = [oc("run-1", "good@corp.example"), Outcome(**values)]
    with pytest.raises(InvalidParameter) as error:
        ledger.record_outcomes(batch)
    assert error.value.field == field
    assert ledger.outcomes_for_run("run-1") == []


# ---------------------------------------------------------------------- the counting rule

def test_rerun_of_the_same_request_counts_nothing_twice(ledger):
    start(ledger, "run-1")
    ledger.record_outcomes([oc("run-1", "a@corp.example"), oc("run-1", "b@corp.example"),
                            oc("run-1", "c@corp.example", status="failed")])
    start(ledger, "run-2")  # the same request again: copies are already in junk
    ledger.record_outcomes([oc("run-2", "a@corp.example", "already_in_destination", at=60),
                            oc("run-2", "B@corp.example", "already_in_destination", at=60),
                            oc("run-2", "c@corp.example", status="failed", at=60)])
    assert figures(ledger) == {"total": 3, "retracted": 2, "already_in_destination": 0,
                               "failed": 1, "previewed": 0, "preview_failed": 0}
    assert counted_rows(ledger) == [("run-1", "a@corp.example", "retracted"),
                                    ("run-1", "b@corp.example", "retracted"),
                                    ("run-1", "c@corp.example", "failed")]


def test_retried_chunk_with_the_same_run_id_replaces_a_failure(ledger):
    start(ledger, "run-1")
    ledger.record_outcomes([oc("run-1", "a@corp.example"),
                            oc("run-1", "b@corp.example", status="failed",
                               reason="provider_error")])
    # the workflow retries the whole chunk: a is reported again, b now succeeds
    ledger.record_outcomes([oc("run-1", "a@corp.example", "already_in_destination", at=30),
                            oc("run-1", "b@corp.example", at=30)])
    stored = {o.recipient: o for o in ledger.outcomes_for_run("run-1")}
    assert len(stored) == 2  # no duplicate rows for the run
    assert stored["a@corp.example"].status == "retracted"  # the better outcome stays
    assert stored["a@corp.example"].completed_at == T0
    assert stored["b@corp.example"].status == "retracted"
    assert figures(ledger) == {"total": 2, "retracted": 2, "already_in_destination": 0,
                               "failed": 0, "previewed": 0, "preview_failed": 0}


def test_retried_chunk_repeating_successes_adds_no_rows(ledger):
    batch = [oc("run-1", "a@corp.example"), oc("run-1", "b@corp.example")]
    ledger.record_outcomes(batch)
    ledger.record_outcomes(batch)
    ledger.record_outcomes(batch + batch)  # even within one batch
    assert len(ledger.outcomes_for_run("run-1")) == 2
    assert figures(ledger)["retracted"] == 2


def test_a_later_failure_of_the_same_run_replaces_an_earlier_failure(ledger):
    ledger.record_outcomes([oc("run-1", "a@corp.example", status="failed",
                               reason="provider_error", error_code="503")])
    ledger.record_outcomes([oc("run-1", "a@corp.example", status="failed",
                               reason="not_authorized", error_code="403", at=10)])
    (stored,) = ledger.outcomes_for_run("run-1")
    assert (stored.reason, stored.error_code) == ("not_authorized", "403")
    record = ledger.metric_record(WINDOW)
    assert record.failed == 1 and record.failed_by_reason["not_authorized"] == 1
    assert record.failed_by_reason["provider_error"] == 0


def test_failure_then_success_in_a_new_run_counts_one_retraction(ledger):
    ledger.record_outcomes([oc("run-1", "a@corp.example", status="failed",
                               reason="provider_error")])
    ledger.record_outcomes([oc("run-2", "a@corp.example", at=600)])
    ledger.record_outcomes([oc("run-3", "a@corp.example", "already_in_destination", at=900)])
    assert figures(ledger) == {"total": 1, "retracted": 1, "already_in_destination": 0,
                               "failed": 0, "previewed": 0, "preview_failed": 0}
    assert counted_rows(ledger) == [("run-2", "a@corp.example", "retracted")]


def test_restore_then_second_retraction_counts_again(ledger):
    ledger.record_outcomes([oc("run-1", "a@corp.example", source_folder="inbox")])
    ledger.record_outcomes([oc("run-2", "a@corp.example", destination="inbox", at=60,
                               source_folder="junk")])  # undo
    ledger.record_outcomes([oc("run-3", "a@corp.example", at=120)])  # retracted again
    ledger.record_outcomes([oc("run-4", "a@corp.example", "already_in_destination", at=180)])
    assert figures(ledger, destination="junk") == {
        "total": 2, "retracted": 2, "already_in_destination": 0, "failed": 0,
        "previewed": 0, "preview_failed": 0}
    assert figures(ledger)["total"] == 3  # and the restore itself, to the inbox
    assert counted_rows(ledger) == [("run-1", "a@corp.example", "retracted"),
                                    ("run-2", "a@corp.example", "retracted"),
                                    ("run-3", "a@corp.example", "retracted")]
    episodes = {r["run_id"]: r["episode"] for r in ledger.details(WINDOW)[0]}
    assert episodes == {"run-1": 1, "run-2": 1, "run-3": 2, "run-4": 2}


def test_already_in_destination_then_retracted_counts_once_as_retracted(ledger):
    ledger.record_outcomes([oc("run-1", "a@corp.example", "already_in_destination")])
    # the user moved it back out; the next run moves it again: still one copy
    ledger.record_outcomes([oc("run-2", "a@corp.example", at=60)])
    assert figures(ledger) == {"total": 1, "retracted": 1, "already_in_destination": 0,
                               "failed": 0, "previewed": 0, "preview_failed": 0}


def test_failure_episode_survives_a_move_elsewhere(ledger):
    ledger.record_outcomes([oc("run-1", "a@corp.example", status="failed",
                               reason="provider_error")])
    ledger.record_outcomes([oc("run-2", "a@corp.example", destination="trash", at=10)])
    ledger.record_outcomes([oc("run-3", "a@corp.example", status="failed", at=20)])
    assert figures(ledger, destination="junk")["failed"] == 1
    assert figures(ledger, destination="trash")["retracted"] == 1


def test_previews_are_counted_apart_once_per_copy(ledger):
    start(ledger, "preview-1", preview=True)
    ledger.record_outcomes([oc("preview-1", "a@corp.example", "previewed"),
                            oc("preview-1", "b@corp.example", "previewed"),
                            oc("preview-1", "c@corp.example", status="failed")])
    start(ledger, "preview-2", preview=True)  # previewed again: nothing new
    ledger.record_outcomes([oc("preview-2", "a@corp.example", "previewed", at=10),
                            oc("preview-2", "c@corp.example", "previewed", at=10)])
    assert figures(ledger) == {"total": 0, "retracted": 0, "already_in_destination": 0,
                               "failed": 0, "previewed": 3, "preview_failed": 0}
    start(ledger, "run-1")  # the real thing
    ledger.record_outcomes([oc("run-1", "a@corp.example", at=20)])
    start(ledger, "preview-3", preview=True)  # a moved since: its preview is new
    ledger.record_outcomes([oc("preview-3", "a@corp.example", status="failed", at=30),
                            oc("preview-3", "b@corp.example", status="failed", at=30)])
    assert figures(ledger) == {"total": 1, "retracted": 1, "already_in_destination": 0,
                               "failed": 0, "previewed": 3, "preview_failed": 1}
    assert ledger.retracted_recipients(MSG, "junk", ["a@corp.example", "b@corp.example"]) \
        == {"a@corp.example"}


def test_a_preview_run_cannot_retract(ledger):
    start(ledger, "preview-1", preview=True)
    with pytest.raises(InvalidParameter) as error:
        ledger.record_outcomes([oc("preview-1", "a@corp.example", "previewed"),
                                oc("preview-1", "b@corp.example", "retracted")])
    assert error.value.field == "outcome.status" and "preview" in str(error.value)
    assert ledger.outcomes_for_run("preview-1") == []


def test_recipients_compare_case_insensitively(ledger):
    ledger.record_outcomes([oc("run-1", "Alice@Corp.Example")])
    ledger.record_outcomes([oc("run-2", "alice@corp.example", at=5)])
    assert figures(ledger)["total"] == 1


def test_only_one_counted_row_per_episode_is_enforced_by_the_database(ledger):
    ledger.record_outcomes([oc("run-1", "a@corp.example")])
    with ledger.engine.connect() as conn:
        row = dict(conn.execute(select(outcomes_table)).mappings().one())
    row.pop("id")
    row["run_id"] = "forged"  # a second counted row in the same episode of the same copy
    with pytest.raises(IntegrityError) as error, ledger.engine.begin() as conn:
        conn.execute(outcomes_table.insert().values(row))
    assert "uq_outcomes_counted_episode" in str(error.value) or \
        "outcomes.message_id, outcomes.recipient_key" in str(error.value)
    row["counted"] = False  # an uncounted duplicate (a rerun) is fine
    with ledger.engine.begin() as conn:
        conn.execute(outcomes_table.insert().values(row))


# ----------------------------------------------------------------------------- skip list

def test_retracted_recipients_follow_the_latest_placement(ledger):
    ledger.record_outcomes([oc("run-1", "A@corp.example"),
                            oc("run-1", "b@corp.example", "already_in_destination"),
                            oc("run-1", "c@corp.example", status="failed")])
    asked = ["a@CORP.example", "b@corp.example", "c@corp.example", "d@corp.example"]
    assert ledger.retracted_recipients(MSG, "junk", asked) == {"a@CORP.example",
                                                               "b@corp.example"}
    ledger.record_outcomes([oc("run-2", "a@corp.example", destination="inbox", at=60)])
    assert ledger.retracted_recipients(MSG, "junk", asked) == {"b@corp.example"}
    assert ledger.retracted_recipients(MSG, "inbox", asked) == {"a@CORP.example"}
    assert ledger.retracted_recipients("<other@x>", "junk", asked) == set()
    with pytest.raises(InvalidParameter) as error:
        ledger.retracted_recipients(MSG, "archive", asked)
    assert error.value.field == "destination"


def test_retracted_recipients_handles_large_lists(ledger):
    names = ["user{:05d}@corp.example".format(i) for i in range(1500)]
    ledger.record_outcomes(oc("run-1", name) for name in names[::2])
    assert ledger.retracted_recipients(MSG, "junk", names) == set(names[::2])


# ------------------------------------------------------------------------------ details

def _mix(ledger):
    """Twelve outcomes, one per minute, with one distinguishing value each."""
    start(ledger, "run-1")
    varied = [
        {}, {"provider": "google"}, {"mode": "auto"}, {"trigger": "post_delivery"},
        {"disposition": "SPOOF"}, {"destination": "trash"}, {"status": "failed"},
        {"status": "failed", "reason": "not_a_mailbox"}, {"message_id": "<other@evil>"},
        {"status": "already_in_destination"}, {}, {},
    ]
    written = []
    for index, extra in enumerate(varied):
        written.append(oc("run-1", "user{:02d}@corp.example".format(index), at=60 * index,
                          **extra))
    ledger.record_outcomes(written)
    return written


def _pages(ledger, limit, **query):
    rows, cursor, pages = [], None, 0
    while True:
        page, cursor = ledger.details(WINDOW, limit=limit, cursor=cursor, **query)
        rows += page
        pages += 1
        if cursor is None:
            return rows, pages


def test_details_pages_newest_first_without_gaps(ledger):
    written = _mix(ledger)
    rows, pages = _pages(ledger, 5)
    assert pages == 3
    assert [r["recipient"] for r in rows] == [o.recipient for o in reversed(written)]
    assert all(r["counted"] for r in rows)
    assert rows[0]["time_to_retract_s"] == 60.0 + 11 * 60


def test_details_pages_through_equal_completion_times(ledger):
    ledger.record_outcomes(oc("run-1", "u{}@corp.example".format(i)) for i in range(7))
    rows, pages = _pages(ledger, 2)
    assert pages == 4 and len({r["id"] for r in rows}) == 7


@pytest.mark.parametrize("query, expected", [
    ({"filters": {"provider": "google"}}, ["user01"]),
    ({"filters": {"mode": "auto"}}, ["user02"]),
    ({"filters": {"trigger": "post_delivery"}}, ["user03"]),
    ({"filters": {"disposition": "spoof"}}, ["user04"]),
    ({"filters": {"destination": "trash"}}, ["user05"]),
    ({"status": "failed"}, ["user07", "user06"]),
    ({"status": "failed", "reason": "not_a_mailbox"}, ["user07"]),
    ({"reason": "not_found"}, ["user06"]),
    ({"recipient": "USER10@corp.example"}, ["user10"]),
    ({"message_id": "<other@evil>"}, ["user08"]),
    ({"status": "already_in_destination"}, ["user09"]),
    ({"filters": {"mode": "manual", "provider": "microsoft"}, "status": "retracted"},
     ["user11", "user10", "user08", "user05", "user04", "user03", "user00"]),
])
def test_details_filters(ledger, query, expected):
    _mix(ledger)
    rows, _ = _pages(ledger, 1, **query)
    assert [r["recipient"].split("@")[0] for r in rows] == expected


def test_details_window_bounds_are_half_open(ledger):
    _mix(ledger)
    window = parse_window(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=5))
    rows, _ = ledger.details(window)
    assert [r["recipient"][:6] for r in rows] == ["user04", "user03", "user02"]


@pytest.mark.parametrize("query, field", [
    ({"status": "moved"}, "status"), ({"reason": "gone"}, "reason"),
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "5"}, "limit"),
    ({"filters": {"colour": "red"}}, "colour"), ({"filters": {"provider": "aol"}}, "provider"),
])
def test_details_bad_input_names_the_parameter(ledger, query, field):
    with pytest.raises(InvalidParameter) as error:
        ledger.details(WINDOW, **query)
    assert error.value.field == field


def test_forged_cursors_are_refused(ledger, tmp_path):
    _mix(ledger)
    _, cursor = ledger.details(WINDOW, limit=2)
    body, mac = cursor.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    decoded["p"][1] += 5  # skip rows by editing the position
    forged_body = base64.urlsafe_b64encode(json.dumps(decoded).encode()).decode().rstrip("=")
    other = Ledger(ledger_db.sqlite_url(tmp_path, "other.db"))
    other.record_outcomes([oc("run-9", "x{}@corp.example".format(i)) for i in range(3)])
    _, foreign = other.details(WINDOW, limit=1)
    other.close()
    for bad in (forged_body + "." + mac, "garbage", cursor + "x", foreign,
                body + "." + mac[::-1]):
        with pytest.raises(InvalidParameter) as error:
            ledger.details(WINDOW, limit=2, cursor=bad)
        assert error.value.field == "cursor"
    with pytest.raises(InvalidParameter) as error:  # a cursor continues only its own query
        ledger.details(WINDOW, limit=2, cursor=cursor, status="failed")
    assert error.value.field == "cursor" and "different query" in str(error.value)
    page, _ = ledger.details(WINDOW, limit=2, cursor=cursor)  # the genuine one still works
    assert len(page) == 2


# ---------------------------------------------------------------------------------- runs

def test_runs_list_page_and_finish(ledger):
    for index in range(5):
        ledger.record_run_started(RetractionRequest(
            message_id=MSG, recipients=("a@corp.example",), destination="junk",
            run_id="run-{}".format(index), requested_at=T0 + timedelta(minutes=index),
            preview=index == 4))
    ledger.record_outcomes([oc("run-1", "a@corp.example"),
                            oc("run-1", "b@corp.example", status="failed")])
    record = ledger.record_run_finished("run-1")
    assert (record.total, record.retracted, record.failed) == (2, 1, 1)
    ledger.record_run_finished("run-2", "failed", {"total": 0})
    assert ledger.run("run-1")["metric_record"] == record.to_dict()
    assert ledger.run("run-1")["state"] == "finished"
    assert ledger.run("run-4")["preview"] is True
    page, cursor = ledger.runs(limit=2)
    assert [r["run_id"] for r in page] == ["run-4", "run-3"]
    page, cursor = ledger.runs(limit=2, cursor=cursor)
    assert [r["run_id"] for r in page] == ["run-2", "run-1"]
    page, cursor = ledger.runs(limit=2, cursor=cursor)
    assert [r["run_id"] for r in page] == ["run-0"] and cursor is None
    running, _ = ledger.runs(state="running")
    assert [r["run_id"] for r in running] == ["run-4", "run-3", "run-0"]
    window = parse_window(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))
    assert [r["run_id"] for r in ledger.runs(window)[0]] == ["run-2", "run-1"]
    ledger.record_run_started(RetractionRequest(message_id=MSG, recipients=("a@x",),
                                                destination="junk", run_id="run-1"))
    assert ledger.run("run-1")["state"] == "running"  # a retried run runs again
    assert ledger.run("nope") is None


def test_run_record_is_grouped_in_sql_with_the_in_memory_figures(ledger):
    """The run's record comes from grouped SQL; it must equal the in-memory rule over the
    run's outcomes: copies another run counts first, a retried chunk's better outcome, mixed
    words, durations (p50/p95/max); and a preview run's own track."""
    start(ledger, "run-0")
    ledger.record_outcomes([oc("run-0", "u00@corp.example")])  # counted by run-0, not run-1
    start(ledger, "run-1")
    first = [oc("run-1", "u{:02d}@corp.example".format(i), at=i * 7,
                verdict_time=T0 - timedelta(seconds=30 + i),
                was_read=(None, True, False)[i % 3], provider=("microsoft", "google")[i % 2],
                disposition=(None, "SPOOF")[i % 2])
             for i in range(20)]
    first[3] = oc("run-1", "u03@corp.example", status="failed", reason="provider_error")
    first[4] = oc("run-1", "U04@Corp.example", status="failed", reason="not_a_mailbox")
    first[5] = oc("run-1", "u05@corp.example", status="already_in_destination", at=2)
    retried = [oc("run-1", "u03@corp.example", at=300),
               oc("run-1", "u04@corp.example", status="failed")]
    ledger.record_outcomes(first)
    ledger.record_outcomes(retried)
    start(ledger, "run-p", preview=True)
    ledger.record_outcomes([oc("run-p", "a@corp.example", status="previewed"),
                            oc("run-p", "b@corp.example", status="failed")])
    for run_id, preview in (("run-1", False), ("run-p", True), ("run-0", False)):
        expected = record_from_outcomes(ledger.outcomes_for_run(run_id), preview=preview)
        record = ledger.record_run_finished(run_id)
        assert record.to_dict() == expected.to_dict()
        assert ledger.run(run_id)["metric_record"] == expected.to_dict()
    record = ledger.run("run-1")["metric_record"]
    assert (record["total"], record["retracted"], record["failed"]) == (20, 18, 1)
    assert record["failed_by_reason"]["not_found"] == 1  # the retried chunk's latest failure
    assert record["time_to_retract"]["count"] == 18
    assert record["time_to_retract"]["max_s"] == 360.0  # u03, retracted at +300 s
    assert ledger.run("run-p")["metric_record"]["preview_failed"] == 1


@pytest.mark.parametrize("call, field", [
    (lambda ledger: ledger.record_run_finished("nope"), "run_id"),
    (lambda ledger: ledger.record_run_finished("run-1", "done"), "state"),
    (lambda ledger: ledger.runs(state="paused"), "state"),
    (lambda ledger: ledger.runs(limit=-1), "limit"),
    (lambda ledger: ledger.record_outcomes([], batch_size=0), "batch_size"),
])
def test_run_calls_name_bad_parameters(ledger, call, field):
    start(ledger, "run-1")
    with pytest.raises(InvalidParameter) as error:
        call(ledger)
    assert error.value.field == field


# ------------------------------------------------------------------------ engine & urls

@pytest.mark.parametrize("url, needle", [
    ("sqlite://", "file path"), ("sqlite:///:memory:", "file path"),
    ("mysql://root@localhost/db", "not supported"), ("not a url", "not a database URL"),
    ("postgresql+psycopg2://u@h/db", "psycopg 3"),
])
def test_bad_ledger_urls(url, needle):
    with pytest.raises(InvalidParameter) as error:
        Ledger(url)
    assert error.value.field == "ledger_url" and needle in str(error.value)


def test_password_never_appears_in_url_errors():
    with pytest.raises(InvalidParameter) as error:
        Ledger("mysql://root:hunter2@localhost/db")
    assert "hunter2" not in str(error.value)


def test_sqlite_ledger_creates_its_directory_and_uses_wal(tmp_path):
    path = tmp_path / "deep" / "er" / "ledger.db"
    with Ledger("sqlite:///" + str(path)) as ledger:
        ledger.record_outcomes([oc("run-1", "a@corp.example")])
        with ledger.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert sqlite3.connect(str(path)).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --------------------------------------------------------------------------- concurrency

def _writer(url, worker, copies, shared):
    """One action process: its own run over its own copies plus copies every worker
    touches, in small batches as a provider would report them."""
    with Ledger(url) as ledger:
        run_id = "run-w{}".format(worker)
        ledger.record_run_started(RetractionRequest(
            message_id=MSG, recipients=("a@corp.example",), destination="junk",
            run_id=run_id, requested_at=T0))
        names = ["w{}-{}@corp.example".format(worker, i) for i in range(copies)]
        names += ["shared{}@corp.example".format(i) for i in range(shared)]
        batch = [oc(run_id, name, status="retracted" if i % 3 else "already_in_destination",
                    at=i % 50) for i, name in enumerate(names)]
        ledger.record_outcomes(batch, batch_size=25)


def test_concurrent_writers_lose_nothing_and_count_each_copy_once(url):
    Ledger(url).close()  # create the schema; then many processes write at once
    workers, copies, shared = 6, 150, 40
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(url, w, copies, shared))
                 for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    with Ledger(url) as ledger:
        total_rows = sum(len(ledger.outcomes_for_run("run-w{}".format(w)))
                         for w in range(workers))
        assert total_rows == workers * (copies + shared)
        record = ledger.metric_record(WINDOW)
        assert record.total == workers * copies + shared  # each shared copy counted once
        with ledger.engine.connect() as conn:
            counted = conn.execute(select(outcomes_table.c.recipient_key).where(
                outcomes_table.c.counted.is_(True))).scalars().all()
        assert len(counted) == len(set(counted)) == workers * copies + shared
