"""The signals table: every decision served to the Engine, once per (symbol, bar, model type, version).

Revision ID: 0004
Revises: 0003
"""
from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "signals",
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("model_type", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("regime", sa.String(length=16), nullable=True),
        sa.Column("prediction", sa.Double(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("size", sa.Double(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("tradeable", sa.Boolean(), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=True),
        sa.Column("data_age_seconds", sa.Double(), nullable=False),
        sa.Column("served_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("symbol", "ts", "model_type", "version", name=op.f("pk_signals")),
    )


def downgrade() -> None:
    op.drop_table("signals")
