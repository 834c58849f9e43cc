"""The out-of-distribution gate, model expiry and the nightly audit of served signals.

Revision ID: 0006
Revises: 0005

model_manifests.distribution_sha256 (the version's input description, an artifact); signals gain
in_distribution, dissimilarity, model_age_seconds and context (all NULL in rows served before); the
signal_audits table.  Versions and signals from before keep NULLs: such a version is served without
the gate, and such a signal is audited from what its row says.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
# 0005 is the replay branch's revision: when both are merged, this revises 0005 (one line).
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("model_manifests") as batch:
        batch.add_column(sa.Column("distribution_sha256", sa.String(length=64), nullable=True))
    with op.batch_alter_table("signals") as batch:
        batch.add_column(sa.Column("in_distribution", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("dissimilarity", sa.Double(), nullable=True))
        batch.add_column(sa.Column("model_age_seconds", sa.Double(), nullable=True))
        batch.add_column(sa.Column("context", _JSON, nullable=True))
    op.create_table(
        "signal_audits",
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("model_type", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("served_at", _TS, nullable=False),
        sa.Column("audited_at", _TS, nullable=False),
        sa.Column("same", sa.Boolean(), nullable=False),
        sa.Column("differences", _JSON, nullable=False),
        sa.Column("corrections", _JSON, nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("symbol", "ts", "model_type", "version", name=op.f("pk_signal_audits")),
    )
    op.create_index(op.f("ix_signal_audits_audited_at"), "signal_audits", ["audited_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_signal_audits_audited_at"), table_name="signal_audits")
    op.drop_table("signal_audits")
    with op.batch_alter_table("signals") as batch:
        for column in ("context", "model_age_seconds", "dissimilarity", "in_distribution"):
            batch.drop_column(column)
    with op.batch_alter_table("model_manifests") as batch:
        batch.drop_column("distribution_sha256")
