"""Outcomes remember the distribution list a member's copy was found through (`via_group`),
and details by recipient get their own index.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    # ADD COLUMN of a nullable column is native on SQLite and PostgreSQL: no table rebuild,
    # existing rows keep every value and read via_group as NULL.
    op.add_column("outcomes", sa.Column("via_group", sa.String(320)))
    op.create_index("ix_outcomes_recipient_key", "outcomes", ["recipient_key", "completed_at"])


def downgrade():
    op.drop_index("ix_outcomes_recipient_key", table_name="outcomes")
    with op.batch_alter_table("outcomes") as batch:
        batch.drop_column("via_group")
