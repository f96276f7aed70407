"""Schema versioning: one cheap query when the ledger opens; alembic only when behind.

Every StackStorm action is a fresh process, so the common path (schema current) costs one
SELECT and never imports alembic. Upgrades run under a lock (SQLite: BEGIN IMMEDIATE;
PostgreSQL: a transaction advisory lock), so processes opening a new ledger at once migrate
it exactly once.
"""
from __future__ import annotations

import os
from typing import Optional

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from retraction.ledger.connect import WRITE
from retraction.ledger.schema import SCHEMA_HEAD, VERSION_TABLE

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
_PG_LOCK = 0x6C6564676572  # "ledger": the advisory lock key of migrations


class LedgerVersionError(RuntimeError):
    """The stored schema is newer than this code, or unknown to it."""


def stored_version(engine: Engine) -> Optional[str]:
    """The ledger's schema revision; None for an empty database."""
    with engine.connect() as conn:
        try:
            return conn.exec_driver_sql(
                "SELECT version_num FROM {}".format(VERSION_TABLE)).scalar()
        except DBAPIError:
            return None  # no version table yet


def ensure_current(engine: Engine, upgrade: bool = True) -> None:
    version = stored_version(engine)
    if version == SCHEMA_HEAD:
        return
    if version is not None and (not version.isdigit() or int(version) > int(SCHEMA_HEAD)):
        raise LedgerVersionError("the ledger's schema {} is newer than this pack knows ({}); "
                                 "upgrade the pack".format(version, SCHEMA_HEAD))
    if not upgrade:
        raise LedgerVersionError("the ledger's schema {} is behind {}; open it with "
                                 "upgrade=True".format(version, SCHEMA_HEAD))
    migrate(engine)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (alembic, imported here only)."""
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to `revision`, e.g. before reinstalling an older pack."""
    _run(engine, "downgrade", revision)


def _run(engine: Engine, direction: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    with engine.connect() as conn:
        conn = conn.execution_options(**WRITE)
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock({})".format(_PG_LOCK))
            config.attributes["connection"] = conn
            getattr(command, direction)(config, revision)
