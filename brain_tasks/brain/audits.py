"""The signal_audits table: the nightly audit's verdict on each served signal, written once.

Keyed as the signal it audits (symbol, bar ts, model type, version).  "Served since the last audit" is
what has no audit row yet: a signal is audited once, so a correction found later does not rewrite what
an earlier audit saw, and an audit interrupted half way resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from brain_tasks.brain import store
from brain_tasks.brain.tables import SignalAudit, SignalRecord
from brain_tasks.timekeeping import to_utc


def _audited() -> Any:
    a = SignalAudit
    return sa.exists().where(a.symbol == SignalRecord.symbol, a.ts == SignalRecord.ts,
                             a.model_type == SignalRecord.model_type, a.version == SignalRecord.version)


def unaudited(engine: sa.Engine, symbol: str, until: dt.datetime) -> list[dict[str, Any]]:
    """The signals of `symbol` served up to `until` and not audited yet, oldest bar first.  A stale
    signal (no bar, no model) has nothing to decide again and is left out."""
    stmt = (sa.select(SignalRecord.__table__)
            .where(SignalRecord.symbol == symbol, SignalRecord.stale.is_(False),
                   SignalRecord.served_at <= to_utc(until), ~_audited())
            .order_by(SignalRecord.ts, SignalRecord.model_type, SignalRecord.version))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def write(engine: sa.Engine, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert audit rows; a signal audited already keeps its first verdict."""
    return store.upsert(engine, SignalAudit.__table__, [dict(r) for r in rows], conflict="nothing") if rows else 0


def listing(engine: sa.Engine, symbol: str | None = None, *, mismatches: bool = False,
            limit: int | None = 50) -> list[dict[str, Any]]:
    """Audit rows, newest bar first (only those that differ with `mismatches`)."""
    a = SignalAudit
    stmt = sa.select(a.__table__)
    if symbol is not None:
        stmt = stmt.where(a.symbol == symbol)
    if mismatches:
        stmt = stmt.where(a.same.is_(False))
    stmt = stmt.order_by(a.ts.desc(), a.symbol)
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def counts(engine: sa.Engine, symbol: str | None = None, since: dt.datetime | None = None) -> dict[str, Any]:
    """{"audited", "mismatches", "last_audit"} over the audits made since `since` (default: all)."""
    a = SignalAudit
    stmt = sa.select(sa.func.count(), sa.func.count().filter(a.same.is_(False)), sa.func.max(a.audited_at))
    if symbol is not None:
        stmt = stmt.where(a.symbol == symbol)
    if since is not None:
        stmt = stmt.where(a.audited_at >= to_utc(since))
    with engine.connect() as conn:
        total, bad, last = conn.execute(stmt).one()
    if last is not None and last.tzinfo is None:  # SQLite aggregates lose the column's type
        last = last.replace(tzinfo=dt.timezone.utc)
    elif isinstance(last, str):
        last = dt.datetime.fromisoformat(last).replace(tzinfo=dt.timezone.utc)
    return {"audited": int(total or 0), "mismatches": int(bad or 0), "last_audit": last}


def counts_by_symbol(engine: sa.Engine, since: dt.datetime) -> dict[str, tuple[int, int]]:
    """symbol -> (signals audited, mismatches) over the audits made since `since`."""
    a = SignalAudit
    stmt = (sa.select(a.symbol, sa.func.count(), sa.func.count().filter(a.same.is_(False)))
            .where(a.audited_at >= to_utc(since)).group_by(a.symbol))
    with engine.connect() as conn:
        return {symbol: (int(n), int(bad)) for symbol, n, bad in conn.execute(stmt)}
