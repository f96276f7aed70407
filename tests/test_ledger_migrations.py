"""Schema versions: a new ledger is created at head and matches the schema the code queries;
a version-1 ledger with rows upgrades without losing any; the cold path never imports
alembic; concurrent first opens migrate once."""
from __future__ import annotations

import multiprocessing
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import ledger_db
import pytest
from sqlalchemy import MetaData, inspect, select

from retraction.ledger import (SCHEMA_HEAD, Ledger, LedgerVersionError, downgrade, migrate,
                               stored_version)
from retraction.ledger.connect import create_ledger_engine
from retraction.ledger.migrate import MIGRATIONS
from retraction.ledger.rows import outcome_row
from retraction.ledger.schema import VERSION_TABLE, metadata
from retraction.metrics import parse_window, record_from_outcomes
from retraction.model import Outcome

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
WINDOW = parse_window(since=T0 - timedelta(days=1), until=T0 + timedelta(days=1))
MSG = "<phish-1@evil.example>"


@pytest.fixture(params=ledger_db.BACKENDS)
def url(request, tmp_path):
    with ledger_db.database_url(request.param, tmp_path) as value:
        yield value


def outcome(run_id, name, status="retracted", at=0, **extra):
    values = dict(run_id=run_id, message_id=MSG, recipient=name + "@corp.example",
                  provider="microsoft", destination="junk", mode="auto",
                  trigger="disposition", status=status,
                  reason="not_found" if status == "failed" else None,
                  disposition="MALICIOUS", was_read=status == "retracted",
                  verdict_time=T0, requested_at=T0,
                  completed_at=T0 + timedelta(seconds=10 + at))
    values.update(extra)
    return Outcome(**values)


def test_head_constant_names_the_newest_script():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


def test_new_ledger_is_created_at_head_exactly_as_the_code_expects(url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    Ledger(url).close()
    engine = create_ledger_engine(url)
    assert stored_version(engine) == SCHEMA_HEAD
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        differences = compare_metadata(context, metadata)
        names = set(inspect(conn).get_table_names())
    engine.dispose()
    assert differences == []
    assert names == {"meta", "runs", "outcomes", "copies", "episodes", "decisions", VERSION_TABLE}


def _write_v1(engine, written):
    """Rows as version-1 code stored them: every column but via_group, which 0001 lacks."""
    tables = MetaData()
    tables.reflect(engine)
    assert "via_group" not in tables.tables["outcomes"].c
    rows = []
    for item in written:
        row = outcome_row(item, preview=False)
        row.pop("via_group")
        row.update(counted=True, episode=1)
        rows.append(row)
    with engine.begin() as conn:
        conn.execute(tables.tables["runs"].insert(), [{
            "run_id": "run-v1", "message_id": MSG, "destination": "junk", "mode": "auto",
            "trigger": "disposition", "disposition": "MALICIOUS", "preview": False,
            "requested_at": T0, "state": "finished", "metric_record": {"total": 3}}])
        conn.execute(tables.tables["outcomes"].insert(), rows)
        conn.execute(tables.tables["copies"].insert(), [{
            "message_id": MSG, "recipient_key": row["recipient_key"],
            "location": "junk" if row["status"] == "retracted" else None,
            "moves": 1 if row["status"] == "retracted" else 0} for row in rows])
        conn.execute(tables.tables["episodes"].insert(), [{
            "message_id": MSG, "recipient_key": row["recipient_key"], "destination": "junk",
            "episode": 1, "run_id": "run-v1", "rank": 3 if row["status"] == "retracted" else 1,
            "placed": row["status"] == "retracted", "preview_episode": 0, "preview_rank": 0}
            for row in rows])


def _dump(engine, table):
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as conn:
        rows = conn.execute(select(tables.tables[table])).mappings().all()
    return sorted((dict(row) for row in rows), key=lambda r: repr(sorted(r.items())))


def test_version_1_ledger_upgrades_without_losing_rows(url):
    engine = create_ledger_engine(url)
    migrate(engine, "0001")
    assert stored_version(engine) == "0001"
    v1 = [outcome("run-v1", "a"), outcome("run-v1", "b", at=20),
          outcome("run-v1", "c", status="failed", at=30)]
    _write_v1(engine, v1)
    tables = ("outcomes", "runs", "copies", "episodes")
    before = {table: _dump(engine, table) for table in tables}

    with Ledger(url) as ledger:  # opening upgrades
        assert stored_version(engine) == SCHEMA_HEAD
        after = {table: _dump(engine, table) for table in before}
        for table in before:
            assert len(after[table]) == len(before[table])
        assert [{k: v for k, v in row.items() if k != "via_group"} for row in
                after["outcomes"]] == before["outcomes"]
        assert all(row["via_group"] is None for row in after["outcomes"])
        assert after["runs"] == before["runs"]
        assert after["copies"] == before["copies"] and after["episodes"] == before["episodes"]
        assert ledger.outcomes_for_run("run-v1") == v1
        assert ledger.metric_record(WINDOW).to_dict() == \
            record_from_outcomes(v1, window=WINDOW).to_dict()

        # the new column works, and counting carries on over the old rows
        ledger.record_outcomes([
            outcome("run-v2", "a", "already_in_destination", at=100),
            outcome("run-v2", "c", at=100),
            outcome("run-v2", "d", via_group="staff@corp.example", at=100)])
        record = ledger.metric_record(WINDOW)
        assert (record.total, record.retracted, record.failed) == (4, 4, 0)
        rows, _ = ledger.details(WINDOW, recipient="d@corp.example")
        assert rows[0]["via_group"] == "staff@corp.example"
    engine.dispose()


def test_downgrade_to_version_1_keeps_rows(url):
    with Ledger(url) as ledger:
        ledger.record_outcomes([outcome("run-1", "a", via_group="staff@corp.example"),
                                outcome("run-1", "b", status="failed")])
    engine = create_ledger_engine(url)
    downgrade(engine, "0001")
    assert stored_version(engine) == "0001"
    rows = _dump(engine, "outcomes")
    assert len(rows) == 2 and "via_group" not in rows[0]
    names = {index["name"] for index in inspect(engine).get_indexes("outcomes")}
    assert "uq_outcomes_counted_episode" in names and "ix_outcomes_recipient_key" not in names
    with Ledger(url) as ledger:  # and up again
        assert len(ledger.outcomes_for_run("run-1")) == 2
    engine.dispose()


def test_schema_newer_than_the_code_is_refused(url):
    Ledger(url).close()
    engine = create_ledger_engine(url)
    for version in ("0099", "zzz"):
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE {} SET version_num = '{}'".format(
                VERSION_TABLE, version))
        with pytest.raises(LedgerVersionError) as error:
            Ledger(url)
        assert version in str(error.value)
    engine.dispose()


def test_behind_without_upgrade_is_refused(url):
    engine = create_ledger_engine(url)
    migrate(engine, "0001")
    with pytest.raises(LedgerVersionError):
        Ledger(url, upgrade=False)
    Ledger(url).close()
    assert stored_version(engine) == SCHEMA_HEAD
    engine.dispose()


OPEN_AND_REPORT = """
import sys
sys.path.insert(0, {lib!r})
from retraction.ledger import Ledger
Ledger({url!r}).close()
print("alembic" in sys.modules)
"""


def _imports_alembic(url):
    script = OPEN_AND_REPORT.format(lib=ledger_db._LIB, url=url)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip() == "True"


def test_cold_start_imports_alembic_only_to_upgrade(url):
    assert _imports_alembic(url) is True  # a new ledger: created by the migrations
    assert _imports_alembic(url) is False  # current: one version query, no alembic


def _open(url):
    Ledger(url).close()


def test_processes_opening_a_new_ledger_at_once_migrate_it_once(url):
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_open, args=(url,)) for _ in range(5)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    engine = create_ledger_engine(url)
    with engine.connect() as conn:
        versions = conn.exec_driver_sql(
            "SELECT version_num FROM {}".format(VERSION_TABLE)).scalars().all()
    engine.dispose()
    assert versions == [SCHEMA_HEAD]
