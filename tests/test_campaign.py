"""`retraction.campaign`: run ids, chunking, approval, joining a chunk to its run, the skip
list's "which run put it there", and aggregating a run from the real ledger (SQLite, and
PostgreSQL when EMAIL_RETRACTION_TEST_POSTGRES_URL is set)."""
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from ledger_db import BACKENDS, database_url
from retraction import campaign
from retraction.config import load_settings
from retraction.ledger import Ledger
from retraction.model import Destination, Mode, Outcome, RetractionRequest, Trigger, new_run_id
from retraction.policy import Policy
from retraction.validation import InvalidRequest

MSGID = "<wave@evil.example>"


@pytest.fixture(params=BACKENDS)
def ledger(request, tmp_path):
    with database_url(request.param, str(tmp_path)) as url:
        with Ledger(url) as opened:
            yield opened


def request_for(recipients, **kw):
    base = dict(message_id=MSGID, recipients=tuple(recipients), destination=Destination.JUNK)
    base.update(kw)
    return RetractionRequest(**base)


def outcome(request, recipient, status, reason=None, **kw):
    return Outcome(run_id=request.run_id, message_id=request.message_id, recipient=recipient,
                   provider="microsoft", destination=request.destination.value,
                   mode=request.mode.value, trigger=request.trigger.value, status=status,
                   reason=reason, requested_at=request.requested_at, **kw)


def test_run_ids():
    made = new_run_id()
    assert campaign.run_id(made) == made
    assert campaign.run_id(" %s " % made.upper()) == made
    dashed = "%s-%s-%s-%s-%s" % (made[:8], made[8:12], made[12:16], made[16:20], made[20:])
    assert campaign.run_id(dashed) == made
    for bad in ("", "x" * 32, made[:-1], made + "0", made[:8] + "-" + made[8:], None, 7,
                made[:16] + "'; DROP" + made[23:]):
        with pytest.raises(InvalidRequest) as caught:
            campaign.run_id(bad)
        assert caught.value.field == "run_id"


def test_chunks_keep_order_and_size():
    assert campaign.chunks(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert campaign.chunks(["a"], 500) == [["a"]]
    assert campaign.chunks([], 3) == []


def test_chunk_size_and_concurrency_defaults_and_bounds():
    settings = load_settings({"limits": {"chunk_size": 250, "chunk_concurrency": 3,
                                         "max_recipients": 1000}})
    assert campaign.chunk_size(None, settings) == 250
    assert campaign.chunk_size("40", settings) == 40
    assert campaign.concurrency(None, settings) == 3
    assert campaign.concurrency(64, settings) == 64
    for field, fn, bad in (("chunk_size", campaign.chunk_size, 0),
                           ("chunk_size", campaign.chunk_size, 1001),
                           ("chunk_size", campaign.chunk_size, "ten"),
                           ("chunk_size", campaign.chunk_size, True),
                           ("concurrency", campaign.concurrency, 65),
                           ("concurrency", campaign.concurrency, -1)):
        with pytest.raises(InvalidRequest) as caught:
            fn(bad, settings)
        assert caught.value.field == field


def test_failed_chunk_count():
    assert campaign.failed_chunk_count(None) == 0
    assert campaign.failed_chunk_count("2") == 2
    for bad in (-1, "-1", 1.5, True, "many"):
        with pytest.raises(InvalidRequest) as caught:
            campaign.failed_chunk_count(bad)
        assert caught.value.field == "failed_chunks"


def test_approval_reasons():
    policy = Policy(load_settings({"approval": {"threshold": 3, "hard_delete": True},
                                   "allow_hard_delete": True}))
    assert campaign.approval(policy, 3, Destination.JUNK) == (False, None)
    assert campaign.approval(policy, 4, Destination.JUNK) == (
        True, "4 copies is more than approval.threshold (3)")
    assert campaign.approval(policy, 1, Destination.HARD_DELETE) == (
        True, "hard_delete is asked for and approval.hard_delete is on")


def test_join_run(ledger):
    started = request_for(["a@corp.example"], mode=Mode.AUTO, trigger=Trigger.DISPOSITION,
                          requested_at=datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc))
    ledger.record_run_started(started)
    chunk = request_for(["b@corp.example"], mode=Mode.AUTO, trigger=Trigger.DISPOSITION)
    joined = campaign.join_run(ledger, chunk, started.run_id)
    assert joined.run_id == started.run_id and joined.requested_at == started.requested_at
    assert joined.recipients == ("b@corp.example",)
    with pytest.raises(InvalidRequest) as caught:
        campaign.join_run(ledger, replace(chunk, destination=Destination.TRASH),
                          started.run_id)
    assert caught.value.field == "run_id"
    assert "run is for destination='junk', this chunk asks 'trash'" in str(caught.value)
    # A run the ledger does not know (or no ledger): the id only labels the outcomes.
    other = new_run_id()
    assert campaign.join_run(ledger, chunk, other).run_id == other
    assert campaign.join_run(None, chunk, other).requested_at == chunk.requested_at


def test_placed_by_names_the_run_that_counts(ledger):
    first = request_for(["a@corp.example", "b@corp.example", "c@corp.example"])
    ledger.record_run_started(first)
    ledger.record_outcomes([outcome(first, "a@corp.example", "retracted"),
                            outcome(first, "B@corp.example", "already_in_destination"),
                            outcome(first, "c@corp.example", "failed", "not_found")])
    second = request_for(["a@corp.example"])
    ledger.record_run_started(second)
    ledger.record_outcomes([outcome(second, "a@corp.example", "already_in_destination")])
    found = ledger.placed_by(MSGID, "junk", ["A@corp.example", "b@corp.example",
                                             "c@corp.example", "d@corp.example"])
    assert found == {"A@corp.example": campaign.Earlier(first.run_id, "retracted"),
                     "b@corp.example": campaign.Earlier(first.run_id,
                                                        "already_in_destination")}
    assert ledger.placed_by(MSGID, "trash", ["a@corp.example"]) == {}
    # Restored to the inbox: no longer in junk, so nothing to skip there.
    undo = request_for(["a@corp.example"], destination=Destination.INBOX)
    ledger.record_run_started(undo)
    ledger.record_outcomes([outcome(undo, "a@corp.example", "retracted")])
    assert ledger.placed_by(MSGID, "junk", ["a@corp.example"]) == {}
    assert ledger.placed_by(MSGID, "inbox", ["a@corp.example"]) == {
        "a@corp.example": campaign.Earlier(undo.run_id, "retracted")}


def test_placed_by_reads_many_recipients_in_pieces(ledger):
    recipients = ["u%04d@corp.example" % i for i in range(950)]
    run = request_for(recipients)
    ledger.record_run_started(run)
    ledger.record_outcomes([outcome(run, r, "retracted") for r in recipients[::2]])
    found = ledger.placed_by(MSGID, "junk", recipients)
    assert sorted(found) == recipients[::2]
    assert {e.run_id for e in found.values()} == {run.run_id}


def test_aggregate_run_is_idempotent_and_follows_retries(ledger):
    t0 = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)
    run = request_for(["a@corp.example", "b@corp.example", "c@corp.example"],
                      requested_at=t0)
    ledger.record_run_started(run)
    ledger.record_outcomes([
        outcome(run, "a@corp.example", "retracted", was_read=False,
                completed_at=t0 + timedelta(seconds=4)),
        outcome(run, "b@corp.example", "failed", "provider_error",
                completed_at=t0 + timedelta(seconds=5)),
    ])  # c's chunk never ran
    first = campaign.aggregate_run(ledger, run.run_id, failed_chunks=1)
    assert first["state"] == "failed" and ledger.run(run.run_id)["state"] == "failed"
    record = first["metric_record"]
    assert (record["total"], record["retracted"], record["failed"]) == (2, 1, 1)
    assert record["failed_by_reason"]["provider_error"] == 1
    assert record["time_to_retract"] == {"count": 1, "p50_s": 4.0, "p95_s": 4.0, "max_s": 4.0}
    assert first["card"].splitlines()[0] == "Retraction run %s · one run" % run.run_id
    # The retried chunk and the one that never ran, then aggregation again.
    ledger.record_run_started(run)
    ledger.record_outcomes([
        outcome(run, "b@corp.example", "retracted", was_read=True,
                completed_at=t0 + timedelta(seconds=9)),
        outcome(run, "c@corp.example", "already_in_destination",
                completed_at=t0 + timedelta(seconds=10)),
    ])
    again = campaign.aggregate_run(ledger, run.run_id, failed_chunks=0)
    assert again["state"] == "finished" and ledger.run(run.run_id)["state"] == "finished"
    record = again["metric_record"]
    assert (record["total"], record["retracted"], record["already_in_destination"],
            record["failed"], record["read"], record["unread"]) == (3, 2, 1, 0, 1, 1)
    assert record["time_to_retract"] == {"count": 2, "p50_s": 6.5, "p95_s": 8.75, "max_s": 9.0}
    assert ledger.run(run.run_id)["metric_record"] == record
    with pytest.raises(InvalidRequest) as caught:
        campaign.aggregate_run(ledger, new_run_id(), 0)
    assert caught.value.field == "run_id"
