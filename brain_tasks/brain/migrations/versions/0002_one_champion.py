"""One champion per symbol (enforced by a partial unique index), champion history, regime choices, and
the dependence-aware drift columns (adjusted p-value, effect size, effective sample sizes).

Repairs data written by 0001-era code: where a symbol had several 'champion' rows (a backfill retrain
promoted an older version next to the current one), the version with the latest as-of date stays
champion and the others become 'previous'.  Each remaining champion opens its history, and the latest
per-regime selection (model_registry.selected_regimes) moves into regime_choices, and the column goes:
one place holds the choice.

Revision ID: 0002
Revises: 0001
"""
from collections.abc import Sequence
import datetime as dt

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TS = sa.DateTime(timezone=True)


def _now(dialect: str) -> dt.datetime:
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(tzinfo=None) if dialect == "sqlite" else now


def upgrade() -> None:
    op.create_table(
        "champion_history",
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("model_type", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("from_model_type", sa.String(length=32), nullable=True),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence", _JSON, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("symbol", "event_id", name=op.f("pk_champion_history")),
    )
    op.create_table(
        "regime_choices",
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("regime", sa.String(length=16), nullable=False),
        sa.Column("model_type", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("tradeable", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("details", _JSON, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("symbol", "regime", name=op.f("pk_regime_choices")),
    )
    conn = op.get_bind()
    dialect = conn.dialect.name
    stamp = _now(dialect)
    reg = sa.table("model_registry", sa.column("symbol"), sa.column("model_type"), sa.column("version"),
                   sa.column("as_of"), sa.column("status"), sa.column("updated_at"),
                   sa.column("selected_regimes", _JSON))
    champions = conn.execute(sa.select(reg.c.symbol, reg.c.model_type, reg.c.version, reg.c.as_of)
                             .where(reg.c.status == "champion")
                             .order_by(reg.c.symbol, reg.c.as_of.desc(), reg.c.updated_at.desc(),
                                       reg.c.version.desc())).all()
    kept: dict[str, tuple] = {}
    for row in champions:
        if row.symbol not in kept:
            kept[row.symbol] = row
            continue
        conn.execute(sa.update(reg).where(reg.c.symbol == row.symbol, reg.c.model_type == row.model_type,
                                          reg.c.version == row.version).values(status="previous", updated_at=stamp))
    hist = sa.table("champion_history", *(sa.column(c) for c in (
        "symbol", "event_id", "action", "model_type", "version", "from_model_type", "from_version", "as_of",
        "reason", "created_at")), sa.column("evidence", _JSON))
    for row in kept.values():
        conn.execute(sa.insert(hist).values(
            symbol=row.symbol, event_id="migrated:0002", action="promote", model_type=row.model_type,
            version=row.version, from_model_type=None, from_version=None, as_of=row.as_of,
            reason="champion when the champion history began (migration 0002)", evidence={}, created_at=stamp))
    choices = sa.table("regime_choices", *(sa.column(c) for c in (
        "symbol", "regime", "model_type", "version", "confidence", "tradeable", "reason", "as_of",
        "updated_at")), sa.column("details", _JSON))
    latest: dict[str, object] = {}
    for row in conn.execute(sa.select(reg).order_by(reg.c.symbol, reg.c.as_of.desc())):
        latest.setdefault(row.symbol, row.as_of)
        if row.as_of != latest[row.symbol]:
            continue
        for regime, choice in (row.selected_regimes or {}).items():
            conn.execute(sa.insert(choices).values(
                symbol=row.symbol, regime=regime, model_type=row.model_type, version=row.version,
                confidence=choice.get("confidence"), tradeable=True,
                reason=str(choice.get("reason") or "selected before migration 0002"), as_of=row.as_of,
                details=choice, updated_at=stamp))
    with op.batch_alter_table("feature_drift") as batch:
        for name in ("pvalue", "effect_size", "n_eff_reference", "n_eff_current"):
            batch.add_column(sa.Column(name, sa.Double(), nullable=True))
    with op.batch_alter_table("model_registry") as batch:
        batch.drop_column("selected_regimes")
        batch.create_index("uq_model_registry_one_champion", ["symbol"], unique=True,
                           postgresql_where=sa.text("status = 'champion'"),
                           sqlite_where=sa.text("status = 'champion'"))


def downgrade() -> None:
    with op.batch_alter_table("feature_drift") as batch:
        for name in ("pvalue", "effect_size", "n_eff_reference", "n_eff_current"):
            batch.drop_column(name)
    with op.batch_alter_table("model_registry") as batch:
        batch.drop_index("uq_model_registry_one_champion")
        batch.add_column(sa.Column("selected_regimes", _JSON, nullable=False, server_default="{}"))
    op.drop_table("regime_choices")
    op.drop_table("champion_history")
