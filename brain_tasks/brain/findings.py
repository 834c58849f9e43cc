"""data_quality_logs: one row per finding, logged once, resolved when a later collection no longer sees it.

The key is (source, symbol, timeframe, data_kind, check, ts_start): seeing the same problem again moves
``last_seen`` and keeps ``first_seen``; a finding that was resolved and comes back is reopened.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain.tables import DataQualityLog
from brain_tasks.timekeeping import to_utc
from brain_tasks.market.quality import Finding

_KEY = ("source", "symbol", "timeframe", "data_kind", "check", "ts_start")
_MOVING = ("ts_end", "severity", "details", "last_seen", "resolved", "resolved_at")
_CHUNK = 500


def _py(ts: Any) -> dt.datetime | None:
    return None if ts is None else to_utc(ts)


def _insert(engine: sa.Engine) -> Any:
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(DataQualityLog)


def key_of(source: str, symbol: str, timeframe: str | None) -> dict[str, str]:
    """The stored key columns: never NULL, cut to the column widths (a hostile symbol string is data)."""
    return {"source": str(source)[:32], "symbol": str(symbol)[:64], "timeframe": (timeframe or "")[:8]}


def record_findings(engine: sa.Engine, source: str, symbol: str, timeframe: str | None,
                    findings: Iterable[Finding], *, now: Any) -> int:
    """Upsert findings; the same finding keeps its first_seen and gets last_seen = ``now``."""
    now_dt = _py(now)
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    base = key_of(source, symbol, timeframe)
    for f in findings:
        row = {**base, "data_kind": f.data_kind[:16], "check": f.check[:32], "ts_start": _py(f.ts_start),
               "ts_end": _py(f.ts_end), "severity": f.severity, "details": f.details, "first_seen": now_dt,
               "last_seen": now_dt, "resolved": False, "resolved_at": None}
        rows[tuple(row[k] for k in _KEY)] = row  # one row per key: the last word of the batch wins
    if not rows:
        return 0
    stmt = _insert(engine)
    stmt = stmt.on_conflict_do_update(index_elements=list(_KEY), set_={c: getattr(stmt.excluded, c) for c in _MOVING})
    with engine.begin() as conn:
        conn.execute(stmt, list(rows.values()))  # executemany: SQLAlchemy batches it within the driver's limits
    return len(rows)


def resolve_findings(engine: sa.Engine, source: str, symbol: str, timeframe: str | None, data_kind: str, *,
                     window_start: Any, window_end: Any, still_open: Iterable[Finding], now: Any,
                     checks: Iterable[str] | None = None, skip_checks: Iterable[str] = ()) -> int:
    """Mark unresolved findings of ``data_kind`` starting in ``[window_start, window_end)`` that are not in
    ``still_open`` as resolved at ``now``; returns how many.  Only the ``checks`` the caller evaluated
    may be resolved: restrict them with ``checks`` or leave some out with ``skip_checks``."""
    base = key_of(source, symbol, timeframe)
    t = DataQualityLog.__table__
    keep = {(f.check, _py(f.ts_start)) for f in still_open if f.data_kind == data_kind}
    cond = [t.c.source == base["source"], t.c.symbol == base["symbol"], t.c.timeframe == base["timeframe"],
            t.c.data_kind == data_kind, t.c.resolved.is_(False)]
    if window_start is not None:
        cond.append(t.c.ts_start >= _py(window_start))
    if window_end is not None:
        cond.append(t.c.ts_start < _py(window_end))
    if checks is not None:
        cond.append(t.c.check.in_(list(checks)))
    skip = list(skip_checks)
    if skip:
        cond.append(t.c.check.not_in(skip))
    with engine.begin() as conn:
        rows = conn.execute(sa.select(t.c.check, t.c.ts_start).where(*cond)).all()
        gone: dict[str, list[dt.datetime]] = {}
        for c, ts in rows:
            if (c, ts) not in keep:
                gone.setdefault(c, []).append(ts)
        for check, starts in gone.items():
            for i in range(0, len(starts), _CHUNK):
                conn.execute(sa.update(t).where(*cond[:5], t.c.check == check, t.c.ts_start.in_(starts[i:i + _CHUNK]))
                             .values(resolved=True, resolved_at=_py(now)))
    return sum(len(v) for v in gone.values())


def read_findings(engine: sa.Engine, *, source: str | None = None, symbol: str | None = None,
                  data_kind: str | None = None, check: str | None = None,
                  resolved: bool | None = None) -> pd.DataFrame:
    """data_quality_logs rows matching the given columns, oldest first."""
    t = DataQualityLog.__table__
    cond = []
    for col, value in (("source", source), ("symbol", symbol), ("data_kind", data_kind), ("check", check),
                       ("resolved", resolved)):
        if value is not None:
            cond.append(t.c[col] == value)
    stmt = sa.select(t).where(*cond).order_by(t.c.ts_start, t.c.check)
    with engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
    cols = [c.name for c in t.columns]
    return pd.DataFrame([dict(r) for r in rows], columns=cols)


def open_findings(engine: sa.Engine, source: str, symbol: str, timeframe: str | None, data_kind: str,
                  check: str) -> list[tuple[dt.datetime, dt.datetime | None]]:
    """(ts_start, ts_end) of the unresolved findings of one check, oldest first (gap backfill uses it)."""
    base = key_of(source, symbol, timeframe)
    t = DataQualityLog.__table__
    stmt = (sa.select(t.c.ts_start, t.c.ts_end)
            .where(t.c.source == base["source"], t.c.symbol == base["symbol"], t.c.timeframe == base["timeframe"],
                   t.c.data_kind == data_kind, t.c.check == check, t.c.resolved.is_(False))
            .order_by(t.c.ts_start))
    with engine.connect() as conn:
        return [(r.ts_start, r.ts_end) for r in conn.execute(stmt)]
