"""Engines for the ledger URL: SQLite (one node) or PostgreSQL via psycopg 3 (several nodes).

SQLite is tuned for several action processes writing at once on one node: WAL (readers never
block the writer), a busy timeout (a writer waits for the lock instead of failing), and write
transactions that take the lock up front (`BEGIN IMMEDIATE`) so two writers never both read
state and then deadlock upgrading to write.
"""
from __future__ import annotations

import os

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from retraction.metrics.errors import InvalidParameter

BUSY_TIMEOUT_MS = 30000
WRITE = {"ledger_write": True}  # execution option: this transaction writes


def create_ledger_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidParameter("ledger_url", "is not a database URL; use "
                                             "sqlite:////path/ledger.db or "
                                             "postgresql+psycopg://user@host/db")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite(parsed)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":  # psycopg 3 is the driver we ship
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.drivername != "postgresql+psycopg":
            raise InvalidParameter("ledger_url", "PostgreSQL needs the psycopg 3 driver: "
                                                 "postgresql+psycopg://...")
        from retraction.ledger.schema import for_postgresql
        for_postgresql()
        return create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=2)
    raise InvalidParameter("ledger_url", "{!r} is not supported; use sqlite or postgresql"
                                         .format(backend))


def _sqlite(url) -> Engine:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise InvalidParameter("ledger_url", "SQLite needs a file path, e.g. "
                                             "sqlite:////opt/stackstorm/ledger.db")
    directory = os.path.dirname(os.path.abspath(database))
    os.makedirs(directory, exist_ok=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        # Let us issue BEGIN ourselves (pysqlite would start DEFERRED transactions lazily).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = {}".format(BUSY_TIMEOUT_MS))
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        write = connection.get_execution_options().get("ledger_write")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
