"""Alembic environment of the ledger: always online, on the connection (and transaction) the
ledger hands over in `config.attributes["connection"]` (see retraction.ledger.migrate).

To add a revision: write versions/NNNN_<what>.py by hand (revision = "NNNN",
down_revision = the previous one), then bump SCHEMA_HEAD in retraction/ledger/schema.py and
the head tables there; tests/test_ledger_migrations.py checks they agree.
"""
from alembic import context

from retraction.ledger.schema import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("the ledger migrates online only, through retraction.ledger.migrate")

context.configure(connection=connection, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
