"""Approval decisions in the ledger (schema 0003), on SQLite and PostgreSQL: recorded, read back
newest first a page at a time, counted per window and filters; bad input refused naming the
parameter; a 0002 ledger upgrades to 0003 keeping its rows, and downgrades again."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import ledger_db
import pytest
from sqlalchemy import inspect

from retraction.automation import DECISIONS as PLAN_DECISIONS
from retraction.ledger import DECISIONS, InvalidParameter, Ledger, downgrade, migrate, \
    stored_version
from retraction.ledger.connect import create_ledger_engine
from retraction.metrics import parse_window
from retraction.model import Outcome

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
MSG = "<phish-1@evil.example>"


@pytest.fixture(params=ledger_db.BACKENDS)
def url(request, tmp_path):
    with ledger_db.database_url(request.param, tmp_path) as value:
        yield value


@pytest.fixture
def ledger(url):
    with Ledger(url) as opened:
        yield opened


def at(minutes):
    return T0 + timedelta(minutes=minutes)


def test_the_words_agree():
    assert DECISIONS == PLAN_DECISIONS == ("approved", "rejected")


def test_a_decision_round_trips(ledger):
    row = ledger.record_decision(MSG, "rejected", decided_by="bob", comment="false positive",
                                 copies=812, destination="trash", trigger="disposition",
                                 disposition="MALICIOUS", decided_at=at(0))
    assert isinstance(row["id"], int)
    assert row == {"id": row["id"], "decided_at": "2026-03-02T12:00:00+00:00",
                   "decision": "rejected", "message_id": MSG, "run_id": None,
                   "decided_by": "bob", "comment": "false positive", "copies": 812,
                   "destination": "trash", "trigger": "disposition",
                   "disposition": "MALICIOUS"}
    rows, cursor = ledger.decisions()
    assert rows == [row] and cursor is None
    bare = ledger.record_decision(MSG, "approved", run_id="a" * 32)
    assert (bare["decided_by"], bare["comment"], bare["copies"], bare["run_id"]) == (
        None, None, None, "a" * 32)
    assert datetime.fromisoformat(bare["decided_at"]) > at(0)  # now, by default


def test_decisions_page_newest_first_and_filter(ledger):
    for minute in range(7):
        ledger.record_decision("<m%d@evil.example>" % (minute % 2), DECISIONS[minute % 3 == 0],
                               decided_by="analyst-%d" % minute, decided_at=at(minute))
    window = parse_window(since=at(1), until=at(6))  # half-open: minutes 1..5
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = ledger.decisions(window, limit=2, cursor=cursor)
        seen += [row["decided_by"] for row in page]
        pages += 1
        if cursor is None:
            break
    assert pages == 3
    assert seen == ["analyst-5", "analyst-4", "analyst-3", "analyst-2", "analyst-1"]
    rejected, _ = ledger.decisions(decision="rejected")
    assert [row["decided_by"] for row in rejected] == ["analyst-6", "analyst-3", "analyst-0"]
    mine, _ = ledger.decisions(message_id="<m1@evil.example>")
    assert [row["decided_by"] for row in mine] == ["analyst-5", "analyst-3", "analyst-1"]
    _, cursor = ledger.decisions(limit=1)
    with pytest.raises(InvalidParameter) as error:  # a cursor continues only its own query
        ledger.decisions(limit=1, cursor=cursor, decision="approved")
    assert error.value.field == "cursor"


def test_counts_per_window_and_filters(ledger):
    asked = [("approved", "disposition", "MALICIOUS", "trash", 0),
             ("rejected", "disposition", "MALICIOUS", "trash", 1),
             ("rejected", "post_delivery", "SUSPICIOUS", "junk", 2),
             ("approved", "analyst", None, "hard_delete", 3),
             ("approved", "phish_submission", "MALICIOUS", "trash", 90)]  # outside the window
    for decision, trigger, disposition, destination, minute in asked:
        ledger.record_decision(MSG, decision, trigger=trigger, disposition=disposition,
                               destination=destination, decided_at=at(minute))
    window = parse_window(since=at(0), until=at(60))
    assert ledger.decision_counts(window) == {"approved": 2, "rejected": 2}
    assert ledger.decision_counts(window, {"trigger": "disposition"}) == {
        "approved": 1, "rejected": 1}
    assert ledger.decision_counts(window, {"disposition": "suspicious"}) == {
        "approved": 0, "rejected": 1}
    assert ledger.decision_counts(window, {"destination": "hard_delete"}) == {
        "approved": 1, "rejected": 0}
    assert ledger.decision_counts(window, {"mode": "manual"}) == {"approved": 1, "rejected": 0}
    assert ledger.decision_counts(window, {"mode": "auto"}) == {"approved": 1, "rejected": 2}
    assert ledger.decision_counts(window, {"provider": "google"}) is None
    assert ledger.decision_counts(parse_window(since=at(200), until=at(300))) == {
        "approved": 0, "rejected": 0}


@pytest.mark.parametrize("call, field", [
    (lambda ledger: ledger.record_decision(MSG, "maybe"), "decision"),
    (lambda ledger: ledger.record_decision(MSG, None), "decision"),
    (lambda ledger: ledger.record_decision("", "approved"), "message_id"),
    (lambda ledger: ledger.record_decision(MSG, "approved", copies=-1), "copies"),
    (lambda ledger: ledger.record_decision(MSG, "approved", copies=True), "copies"),
    (lambda ledger: ledger.record_decision(MSG, "approved", destination="void"), "destination"),
    (lambda ledger: ledger.record_decision(MSG, "approved", trigger="whim"), "trigger"),
    (lambda ledger: ledger.record_decision(MSG, "approved", disposition="EVIL"), "disposition"),
    (lambda ledger: ledger.record_decision(MSG, "approved", run_id="r" * 65), "run_id"),
    (lambda ledger: ledger.decisions(decision="maybe"), "decision"),
    (lambda ledger: ledger.decisions(limit=0), "limit"),
    (lambda ledger: ledger.decision_counts(filters={"colour": "red"}), "colour"),
])
def test_bad_input_names_the_parameter_and_writes_nothing(ledger, call, field):
    with pytest.raises(InvalidParameter) as error:
        call(ledger)
    assert error.value.field == field
    assert ledger.decisions()[0] == []


def test_a_0002_ledger_upgrades_to_0003_and_back(url):
    engine = create_ledger_engine(url)
    migrate(engine, "0002")
    assert "decisions" not in inspect(engine).get_table_names()
    outcome = Outcome(run_id="run-1", message_id=MSG, recipient="a@corp.example",
                      provider="microsoft", destination="junk", mode="manual",
                      trigger="analyst", status="retracted", completed_at=T0)
    with Ledger(url) as ledger:  # opening upgrades
        assert stored_version(engine) == "0003"
        ledger.record_outcomes([outcome])
        ledger.record_decision(MSG, "approved", decided_by="bob")
    downgrade(engine, "0002")
    assert stored_version(engine) == "0002"
    assert "decisions" not in inspect(engine).get_table_names()
    engine.dispose()
    with Ledger(url) as ledger:  # up again: the outcomes stayed, the decisions table is new
        assert ledger.outcomes_for_run("run-1") == [outcome]
        assert ledger.decisions()[0] == []
