"""The ledger: the durable store of outcomes and metric records (SQLAlchemy Core; SQLite
for one node, PostgreSQL via psycopg 3 for several).

    from retraction.ledger import Ledger
    with Ledger("sqlite:////var/lib/email_retraction/ledger.db") as ledger:
        ledger.record_run_started(request)
        ledger.record_outcomes(outcomes)
        ledger.record_run_finished(request.run_id, "finished")
        record = ledger.metric_record(parse_window(last="24h"))
        ledger.record_decision(message_id, "rejected", decided_by="bob", comment="...")
        rows, next_cursor = ledger.decisions(parse_window(last="7d"))

Counting rule: see `retraction.ledger.episodes`. Schema versions: `migrations/`, applied
when the ledger opens (alembic is imported only then).
"""
from __future__ import annotations

from retraction.ledger.migrate import LedgerVersionError, downgrade, migrate, stored_version
from retraction.ledger.schema import SCHEMA_HEAD
from retraction.ledger.store import DECISIONS, MAX_LIMIT, RUN_STATES, Ledger
from retraction.metrics.errors import InvalidParameter

__all__ = ["DECISIONS", "Ledger", "InvalidParameter", "LedgerVersionError", "MAX_LIMIT",
           "RUN_STATES", "SCHEMA_HEAD", "downgrade", "migrate", "stored_version"]
