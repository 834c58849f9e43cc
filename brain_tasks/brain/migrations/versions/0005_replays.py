"""Replays: the replays, their decisions and their results; model_registry.origin.

Revision ID: 0005
Revises: 0004
"""
from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Every version trained before this revision came from a retrain.
    with op.batch_alter_table("model_registry") as batch:
        batch.add_column(sa.Column("origin", sa.String(length=16), server_default="retrain", nullable=False))
    op.create_table(
        "replays",
        sa.Column("replay_id", sa.String(length=96), nullable=False),
        sa.Column("symbols", _JSON, nullable=False),
        sa.Column("models", _JSON, nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("end", sa.Date(), nullable=False),
        sa.Column("every", sa.String(length=16), nullable=False),
        sa.Column("grid", _JSON, nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("summary", _JSON, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("replay_id", name=op.f("pk_replays")),
    )
    op.create_table(
        "replay_decisions",
        sa.Column("replay_id", sa.String(length=96), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(length=96), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("step_end", _TS, nullable=False),
        sa.Column("choices", _JSON, nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("replay_id", "symbol", "step", "policy", name=op.f("pk_replay_decisions")),
    )
    op.create_table(
        "replay_results",
        sa.Column("replay_id", sa.String(length=96), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("policy", sa.String(length=96), nullable=False),
        sa.Column("metrics", _JSON, nullable=False),
        sa.Column("n_bars", sa.Integer(), nullable=False),
        sa.Column("inputs", sa.String(length=64), nullable=False),
        sa.Column("returns", sa.LargeBinary(), nullable=False),
        sa.Column("positions", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("replay_id", "symbol", "policy", name=op.f("pk_replay_results")),
    )


def downgrade() -> None:
    op.drop_table("replay_results")
    op.drop_table("replay_decisions")
    op.drop_table("replays")
    with op.batch_alter_table("model_registry") as batch:
        batch.drop_column("origin")
