"""Initial Brain schema: the fifteen tables of models.py.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 06:23:49.433031

"""
from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('candles',
    sa.Column('exchange', sa.String(length=32), nullable=False),
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('timeframe', sa.String(length=8), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('open', sa.Double(), nullable=False),
    sa.Column('high', sa.Double(), nullable=False),
    sa.Column('low', sa.Double(), nullable=False),
    sa.Column('close', sa.Double(), nullable=False),
    sa.Column('volume', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('exchange', 'symbol', 'timeframe', 'ts', name=op.f('pk_candles'))
    )
    op.create_table('data_quality_logs',
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('timeframe', sa.String(length=8), nullable=False),
    sa.Column('data_kind', sa.String(length=16), nullable=False),
    sa.Column('check', sa.String(length=32), nullable=False),
    sa.Column('ts_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ts_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved', sa.Boolean(), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('source', 'symbol', 'timeframe', 'data_kind', 'check', 'ts_start', name=op.f('pk_data_quality_logs'))
    )
    op.create_table('feature_drift',
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('feature', sa.String(length=128), nullable=False),
    sa.Column('psi', sa.Double(), nullable=False),
    sa.Column('psi_threshold', sa.Double(), nullable=False),
    sa.Column('ks_stat', sa.Double(), nullable=False),
    sa.Column('ks_pvalue', sa.Double(), nullable=False),
    sa.Column('drifted', sa.Boolean(), nullable=False),
    sa.Column('reference_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reference_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('current_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('current_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('n_reference', sa.Integer(), nullable=False),
    sa.Column('n_current', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('symbol', 'as_of', 'feature', name=op.f('pk_feature_drift'))
    )
    op.create_table('feature_importance',
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('model_type', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('feature', sa.String(length=128), nullable=False),
    sa.Column('importance', sa.Double(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.PrimaryKeyConstraint('symbol', 'model_type', 'version', 'method', 'feature', name=op.f('pk_feature_importance'))
    )
    op.create_table('funding_rates',
    sa.Column('exchange', sa.String(length=32), nullable=False),
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rate', sa.Double(), nullable=False),
    sa.Column('mark_price', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('exchange', 'symbol', 'ts', name=op.f('pk_funding_rates'))
    )
    op.create_table('liquidations',
    sa.Column('exchange', sa.String(length=32), nullable=False),
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('liq_id', sa.String(length=128), nullable=False),
    sa.Column('side', sa.String(length=8), nullable=False),
    sa.Column('price', sa.Double(), nullable=False),
    sa.Column('amount', sa.Double(), nullable=False),
    sa.Column('value', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('exchange', 'symbol', 'ts', 'liq_id', name=op.f('pk_liquidations'))
    )
    op.create_table('model_artifacts',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('artifact_format', sa.String(length=32), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_model_artifacts'))
    )
    op.create_table('model_comparisons',
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('model_type', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('composite_score', sa.Double(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('is_best', sa.Boolean(), nullable=False),
    sa.Column('metrics', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('symbol', 'as_of', 'config_hash', 'model_type', name=op.f('pk_model_comparisons'))
    )
    op.create_table('model_manifests',
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('model_type', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=False),
    sa.Column('oos_sha256', sa.String(length=64), nullable=False),
    sa.Column('hyperparameters', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('config', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('feature_names', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('feature_hash', sa.String(length=64), nullable=False),
    sa.Column('dataset_digest', sa.String(length=64), nullable=False),
    sa.Column('data_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('data_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('n_rows', sa.Integer(), nullable=False),
    sa.Column('code_version', sa.String(length=32), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('symbol', 'model_type', 'version', name=op.f('pk_model_manifests')),
    sa.UniqueConstraint('symbol', 'model_type', 'as_of', 'config_hash', name='uq_model_manifests_identity')
    )
    op.create_table('model_metrics',
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('model_type', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('evaluation', sa.String(length=32), nullable=False),
    sa.Column('regime', sa.String(length=16), nullable=False),
    sa.Column('metric', sa.String(length=32), nullable=False),
    sa.Column('value', sa.Double(), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.PrimaryKeyConstraint('symbol', 'model_type', 'version', 'evaluation', 'regime', 'metric', name=op.f('pk_model_metrics'))
    )
    op.create_table('model_registry',
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('model_type', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('composite_score', sa.Double(), nullable=True),
    sa.Column('selected_regimes', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('symbol', 'model_type', 'version', name=op.f('pk_model_registry')),
    sa.UniqueConstraint('symbol', 'model_type', 'as_of', 'config_hash', name='uq_model_registry_identity')
    )
    op.create_table('open_interest',
    sa.Column('exchange', sa.String(length=32), nullable=False),
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('open_interest', sa.Double(), nullable=False),
    sa.Column('open_interest_value', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('exchange', 'symbol', 'ts', name=op.f('pk_open_interest'))
    )
    op.create_table('rollback_logs',
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=24), nullable=False),
    sa.Column('model_type', sa.String(length=32), nullable=False),
    sa.Column('from_version', sa.Integer(), nullable=True),
    sa.Column('to_version', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('stats', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('symbol', 'as_of', 'config_hash', name=op.f('pk_rollback_logs'))
    )
    op.create_table('sentiment_scores',
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('score', sa.Double(), nullable=False),
    sa.Column('magnitude', sa.Double(), nullable=True),
    sa.Column('n_items', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('source', 'symbol', 'ts', name=op.f('pk_sentiment_scores'))
    )
    op.create_table('training_runs',
    sa.Column('run_id', sa.String(length=96), nullable=False),
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('models', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('run_id', 'symbol', name=op.f('pk_training_runs'))
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('training_runs')
    op.drop_table('sentiment_scores')
    op.drop_table('rollback_logs')
    op.drop_table('open_interest')
    op.drop_table('model_registry')
    op.drop_table('model_metrics')
    op.drop_table('model_manifests')
    op.drop_table('model_comparisons')
    op.drop_table('model_artifacts')
    op.drop_table('liquidations')
    op.drop_table('funding_rates')
    op.drop_table('feature_importance')
    op.drop_table('feature_drift')
    op.drop_table('data_quality_logs')
    op.drop_table('candles')
