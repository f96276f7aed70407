"""Approval decisions: an analyst's answer to an approval inquiry is kept in the ledger, not
only in the workflow's output.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

from retraction.ledger.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    # A new table only: existing rows are untouched, so the upgrade is instant.
    op.create_table(
        "decisions",
        sa.Column("id", ID, nullable=False, autoincrement=True),
        sa.Column("decided_at", UTCDateTime, nullable=False),
        sa.Column("decision", sa.String(32), nullable=False),
        sa.Column("message_id", sa.String(998), nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("decided_by", sa.Text),
        sa.Column("comment", sa.Text),
        sa.Column("copies", sa.Integer),
        sa.Column("destination", sa.String(32)),
        sa.Column("trigger", sa.String(32)),
        sa.Column("disposition", sa.String(32)),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_decided_at", "decisions", ["decided_at", "id"])
    op.create_index("ix_decisions_message_id", "decisions", ["message_id"])


def downgrade():
    op.drop_index("ix_decisions_message_id", table_name="decisions")
    op.drop_index("ix_decisions_decided_at", table_name="decisions")
    op.drop_table("decisions")
