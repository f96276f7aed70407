"""The ledger's tables at the head schema version (SQLAlchemy Core).

Migrations in `migrations/versions` build the same tables step by step; a test checks that
upgrading an empty database to head yields exactly these definitions.

- outcomes: one row per copy per run (unique (run_id, recipient_key)). `counted` marks the
  one row of each episode that the metrics count (see `retraction.ledger.episodes`);
  `facets` packs the metric words (`retraction.ledger.facets`); `ttr_ms` is the time to
  retract, computed once at write time.
- runs: one row per run with its request, state and metric record (JSON).
- copies: one row per copy of a message (message, mailbox): where the ledger last saw it and
  how often we moved it. Writers lock these rows, so concurrent writers of one copy
  serialise while everyone else proceeds.
- episodes: per copy and destination, the episode number and which row counts in it.
- decisions: analysts' answers to approval inquiries (approved / rejected), one row per
  answer, kept whether or not a run followed (since 0003).
- meta: small key/value settings of this ledger (the cursor signing key).
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, BigInteger, Boolean, Column, DateTime, Index, Integer, MetaData,
                        String, Table, Text, text)
from sqlalchemy.types import TypeDecorator

SCHEMA_HEAD = "0003"  # keep equal to the newest revision in migrations/versions
VERSION_TABLE = "ledger_alembic_version"

WORD = 32  # DESIGN words are short; 32 leaves room
MESSAGE_ID = 998  # RFC 5322 line limit
ADDRESS = 320  # RFC 5321 path limit
RUN_ID = 64


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (which stores naive text)
    and PostgreSQL (timestamptz) alike. Naive input is taken as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # raw text from a SQLite expression, not a column
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: an alias of the rowid

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
})

meta = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "runs", metadata,
    Column("run_id", String(RUN_ID), primary_key=True),
    Column("message_id", String(MESSAGE_ID), nullable=False),
    Column("destination", String(WORD), nullable=False),
    Column("mode", String(WORD), nullable=False),
    Column("trigger", String(WORD), nullable=False),
    Column("disposition", String(WORD)),
    Column("provider", String(WORD)),
    Column("preview", Boolean, nullable=False, default=False),
    Column("requested_by", Text),
    Column("comment", Text),
    Column("verdict_time", UTCDateTime),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("state", String(WORD), nullable=False),
    Column("metric_record", JSON),
    Index("ix_runs_requested_at", "requested_at", "run_id"),
    Index("ix_runs_message_id", "message_id"),
)

outcomes = Table(
    "outcomes", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("run_id", String(RUN_ID), nullable=False),
    Column("message_id", String(MESSAGE_ID), nullable=False),
    Column("recipient", String(ADDRESS), nullable=False),
    Column("recipient_key", String(ADDRESS), nullable=False),  # lower(recipient)
    Column("provider", String(WORD)),
    Column("destination", String(WORD), nullable=False),
    Column("mode", String(WORD), nullable=False),
    Column("trigger", String(WORD), nullable=False),
    Column("disposition", String(WORD)),
    Column("status", String(WORD), nullable=False),
    Column("reason", String(WORD)),
    Column("error_code", Text),
    Column("error_message", Text),
    Column("was_read", Boolean),
    Column("source_folder", Text),
    Column("via_group", String(ADDRESS)),  # since 0002
    Column("verdict_time", UTCDateTime),
    Column("requested_at", UTCDateTime),
    Column("completed_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=1),
    Column("requested_by", Text),
    Column("comment", Text),
    Column("preview", Boolean, nullable=False, default=False),
    Column("counted", Boolean, nullable=False),
    Column("episode", Integer, nullable=False),
    Column("facets", Integer, nullable=False),
    Column("ttr_ms", BigInteger),
    Index("uq_outcomes_run_id_recipient_key", "run_id", "recipient_key", unique=True),
    # details, newest first (keyset on completed_at, id)
    Index("ix_outcomes_completed_at", "completed_at", "id"),
    # a copy's history; details by message
    Index("ix_outcomes_copy", "message_id", "recipient_key", "destination"),
    # details by recipient (since 0002)
    Index("ix_outcomes_recipient_key", "recipient_key", "completed_at"),
    # the metric record: one range scan of a covering index, grouped by facets
    Index("ix_outcomes_metrics", "counted", "completed_at", "facets", "ttr_ms"),
    # time-to-retract percentiles: walk retracted durations in order, skipping to a rank
    Index("ix_outcomes_ttr", "counted", "status", "ttr_ms", "completed_at", "facets"),
    # the counting rule's invariant: one counted row per episode of a copy
    Index("uq_outcomes_counted_episode", "message_id", "recipient_key", "destination",
          "preview", "episode", unique=True,
          sqlite_where=text("counted = 1")),  # PostgreSQL's where: see `for_postgresql`
)

copies = Table(
    "copies", metadata,
    Column("message_id", String(MESSAGE_ID), primary_key=True),
    Column("recipient_key", String(ADDRESS), primary_key=True),
    Column("location", String(WORD)),  # destination the ledger last saw the copy in
    Column("moves", Integer, nullable=False, default=0),  # `retracted` outcomes recorded
)

episodes = Table(
    "episodes", metadata,
    Column("message_id", String(MESSAGE_ID), primary_key=True),
    Column("recipient_key", String(ADDRESS), primary_key=True),
    Column("destination", String(WORD), primary_key=True),
    Column("episode", Integer, nullable=False),
    Column("run_id", String(RUN_ID)),  # run of the counted row; None: no open episode
    Column("rank", Integer, nullable=False),
    Column("placed", Boolean, nullable=False),  # the copy was seen in this destination
    Column("preview_episode", Integer, nullable=False),
    Column("preview_run_id", String(RUN_ID)),
    Column("preview_rank", Integer, nullable=False),
    Column("preview_moves", Integer),  # copies.moves when that preview episode opened
)

decisions = Table(
    "decisions", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("decided_at", UTCDateTime, nullable=False),
    Column("decision", String(WORD), nullable=False),  # approved | rejected
    Column("message_id", String(MESSAGE_ID), nullable=False),
    Column("run_id", String(RUN_ID)),  # the run it concerns, when one is known
    Column("decided_by", Text),
    Column("comment", Text),
    Column("copies", Integer),
    Column("destination", String(WORD)),
    Column("trigger", String(WORD)),
    Column("disposition", String(WORD)),
    # decisions of a window, newest first (keyset on decided_at, id)
    Index("ix_decisions_decided_at", "decided_at", "id"),
    Index("ix_decisions_message_id", "message_id"),
)


def for_postgresql() -> None:
    """Give the tables their PostgreSQL-only options. Called when a PostgreSQL engine is made:
    naming a `postgresql_*` option at import would load SQLAlchemy's whole PostgreSQL package
    (asyncpg support and all, ~20 ms) into every SQLite process too."""
    index = next(i for i in outcomes.indexes if i.name == "uq_outcomes_counted_episode")
    index.dialect_kwargs["postgresql_where"] = text("counted")
