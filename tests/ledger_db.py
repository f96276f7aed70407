"""Database URLs for the ledger tests: a SQLite file per test, or a private schema on the
PostgreSQL server named by EMAIL_RETRACTION_TEST_POSTGRES_URL (dropped afterwards), so test
runs never see each other's rows."""
from __future__ import annotations

import os
import sys
import uuid
from contextlib import contextmanager
from typing import Iterator

import pytest

_LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib")
if _LIB not in sys.path:  # normally tests/conftest.py puts lib/ first; keep these runnable alone
    sys.path.insert(0, _LIB)

POSTGRES_ENV = "EMAIL_RETRACTION_TEST_POSTGRES_URL"
POSTGRES_SKIP = "PostgreSQL suite skipped: set {}".format(POSTGRES_ENV)

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql",
                 marks=pytest.mark.skipif(not os.environ.get(POSTGRES_ENV),
                                          reason=POSTGRES_SKIP)),
]


def sqlite_url(directory: str, name: str = "ledger.db") -> str:
    return "sqlite:///" + os.path.join(str(directory), name)


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A URL whose connections live in a fresh schema of the test server."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    base = make_url(os.environ[POSTGRES_ENV])
    schema = "ledger_test_" + uuid.uuid4().hex[:12]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql('CREATE SCHEMA "{}"'.format(schema))
    try:
        url = base.update_query_dict({"options": "-csearch_path={}".format(schema)})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql('DROP SCHEMA "{}" CASCADE'.format(schema))
        admin.dispose()


@contextmanager
def database_url(backend: str, directory: str) -> Iterator[str]:
    if backend == "sqlite":
        yield sqlite_url(directory)
    else:
        with postgres_schema_url() as url:
            yield url
