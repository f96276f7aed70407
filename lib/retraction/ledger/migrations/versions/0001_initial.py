"""The first ledger schema: outcomes, runs, copies, episodes, meta.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from retraction.ledger.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(998), nullable=False),
        sa.Column("destination", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("disposition", sa.String(32)),
        sa.Column("provider", sa.String(32)),
        sa.Column("preview", sa.Boolean, nullable=False),
        sa.Column("requested_by", sa.Text),
        sa.Column("comment", sa.Text),
        sa.Column("verdict_time", UTCDateTime),
        sa.Column("requested_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("metric_record", sa.JSON),
        sa.PrimaryKeyConstraint("run_id", name="pk_runs"),
    )
    op.create_index("ix_runs_requested_at", "runs", ["requested_at", "run_id"])
    op.create_index("ix_runs_message_id", "runs", ["message_id"])
    op.create_table(
        "outcomes",
        sa.Column("id", ID, nullable=False, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(998), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("recipient_key", sa.String(320), nullable=False),
        sa.Column("provider", sa.String(32)),
        sa.Column("destination", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("disposition", sa.String(32)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32)),
        sa.Column("error_code", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("was_read", sa.Boolean),
        sa.Column("source_folder", sa.Text),
        sa.Column("verdict_time", UTCDateTime),
        sa.Column("requested_at", UTCDateTime),
        sa.Column("completed_at", UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("requested_by", sa.Text),
        sa.Column("comment", sa.Text),
        sa.Column("preview", sa.Boolean, nullable=False),
        sa.Column("counted", sa.Boolean, nullable=False),
        sa.Column("episode", sa.Integer, nullable=False),
        sa.Column("facets", sa.Integer, nullable=False),
        sa.Column("ttr_ms", sa.BigInteger),
        sa.PrimaryKeyConstraint("id", name="pk_outcomes"),
    )
    op.create_index("uq_outcomes_run_id_recipient_key", "outcomes",
                    ["run_id", "recipient_key"], unique=True)
    op.create_index("ix_outcomes_completed_at", "outcomes", ["completed_at", "id"])
    op.create_index("ix_outcomes_copy", "outcomes",
                    ["message_id", "recipient_key", "destination"])
    op.create_index("ix_outcomes_metrics", "outcomes",
                    ["counted", "completed_at", "facets", "ttr_ms"])
    op.create_index("ix_outcomes_ttr", "outcomes",
                    ["counted", "status", "ttr_ms", "completed_at", "facets"])
    op.create_index("uq_outcomes_counted_episode", "outcomes",
                    ["message_id", "recipient_key", "destination", "preview", "episode"],
                    unique=True, sqlite_where=sa.text("counted = 1"),
                    postgresql_where=sa.text("counted"))
    op.create_table(
        "copies",
        sa.Column("message_id", sa.String(998), nullable=False),
        sa.Column("recipient_key", sa.String(320), nullable=False),
        sa.Column("location", sa.String(32)),
        sa.Column("moves", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("message_id", "recipient_key", name="pk_copies"),
    )
    op.create_table(
        "episodes",
        sa.Column("message_id", sa.String(998), nullable=False),
        sa.Column("recipient_key", sa.String(320), nullable=False),
        sa.Column("destination", sa.String(32), nullable=False),
        sa.Column("episode", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("placed", sa.Boolean, nullable=False),
        sa.Column("preview_episode", sa.Integer, nullable=False),
        sa.Column("preview_run_id", sa.String(64)),
        sa.Column("preview_rank", sa.Integer, nullable=False),
        sa.Column("preview_moves", sa.Integer),
        sa.PrimaryKeyConstraint("message_id", "recipient_key", "destination",
                                name="pk_episodes"),
    )


def downgrade():
    for table in ("episodes", "copies", "outcomes", "runs", "meta"):
        op.drop_table(table)
