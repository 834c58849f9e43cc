"""training_runs by attempt: one row per (attempt, symbol) with the step reached, progress and deadline.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-30 21:50:00

Existing rows become one attempt per run whose id is the run id (a run had exactly one row per symbol,
the state of its latest enqueue).  Rows left pending or running (an embedded command used to leave
them behind) are closed as cancelled: nothing will ever finish them, and reconcile_runs must not
re-drive a run from before attempts existed.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')
_OLD = ('run_id', 'symbol', 'as_of', 'state', 'models', 'error', 'details', 'started_at', 'finished_at')
_TYPES = {'as_of': sa.Date(), 'models': _JSON, 'details': _JSON, 'started_at': sa.DateTime(timezone=True),
          'finished_at': sa.DateTime(timezone=True)}


def _rows(table: str, columns: Sequence[str]) -> list[dict]:
    conn = op.get_bind()
    t = sa.Table(table, sa.MetaData(), *(sa.Column(c, _TYPES.get(c, sa.String())) for c in columns))
    return [dict(r._mapping) for r in conn.execute(sa.select(t))]


def _create_old() -> None:
    op.create_table('training_runs',
    sa.Column('run_id', sa.String(length=96), nullable=False),
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('models', _JSON, nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('details', _JSON, nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('run_id', 'symbol', name=op.f('pk_training_runs'))
    )


def upgrade() -> None:
    rows = _rows('training_runs', _OLD)
    op.drop_table('training_runs')
    table = op.create_table('training_runs',
    sa.Column('attempt_id', sa.String(length=96), nullable=False),
    sa.Column('symbol', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=96), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('step', sa.String(length=32), nullable=True),
    sa.Column('models', _JSON, nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('details', _JSON, nullable=False),
    sa.Column('redrives', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('progress_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deadline', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('attempt_id', 'symbol', name=op.f('pk_training_runs'))
    )
    op.create_index(op.f('ix_training_runs_run_id'), 'training_runs', ['run_id'], unique=False)
    op.create_index(op.f('ix_training_runs_state'), 'training_runs', ['state'], unique=False)
    if rows:
        kinds = ('retrain', 'nightly')
        stale = {'state': 'cancelled', 'error': 'left unfinished before runs had attempts (migration 0003)'}
        op.bulk_insert(table, [
            {**r, **(stale if r['state'] in ('pending', 'running') else {}),
             'attempt_id': r['run_id'], 'step': None, 'redrives': 0, 'deadline': None,
             'kind': r['run_id'].split('-', 1)[0] if r['run_id'].split('-', 1)[0] in kinds else 'retrain',
             'progress_at': r['finished_at'] or r['started_at']}
            for r in rows])


def downgrade() -> None:
    """Back to one row per (run, symbol): each run keeps its latest attempt."""
    rows = _rows('training_runs', _OLD + ('attempt_id',))
    latest: dict[str, tuple] = {}
    for r in rows:
        key = (r['started_at'] is not None, r['started_at'] or 0, r['attempt_id'])
        if r['symbol'] == '*' and (r['run_id'] not in latest or key > latest[r['run_id']]):
            latest[r['run_id']] = key
    keep = [{c: r[c] for c in _OLD} for r in rows
            if r['run_id'] in latest and r['attempt_id'] == latest[r['run_id']][2]]
    op.drop_index(op.f('ix_training_runs_state'), table_name='training_runs')
    op.drop_index(op.f('ix_training_runs_run_id'), table_name='training_runs')
    op.drop_table('training_runs')
    _create_old()
    if keep:
        op.bulk_insert(sa.table('training_runs', *(sa.column(c, _TYPES.get(c, sa.String())) for c in _OLD)), keep)
