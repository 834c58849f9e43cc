"""Valid rows for any Brain table, built from the schema so every table is covered generically."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain.tables import UTCDateTime

BASE_TS = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def value_for(column: sa.Column[Any], i: int, variant: int = 0) -> Any:
    """A deterministic valid value of `column` for row `i`; `variant` changes non-key values."""
    t = column.type
    i = i + 1000 * variant if not column.primary_key else i
    if isinstance(t, UTCDateTime):
        return BASE_TS + dt.timedelta(hours=i)
    if isinstance(t, sa.Date):
        return dt.date(2024, 1, 1) + dt.timedelta(days=i)
    if isinstance(t, sa.Boolean):
        return i % 2 == 0
    if isinstance(t, sa.Integer):
        return i
    if isinstance(t, sa.Float):
        return i + 0.25
    if isinstance(t, sa.JSON):
        return {"i": i, "tags": ["a", i], "nested": {"x": i / 4}}
    if isinstance(t, sa.LargeBinary):
        return bytes([i % 256, 0, 255])
    if isinstance(t, sa.String):
        return f"{column.name[:4]}{i}"[: t.length or 64]
    raise TypeError(f"no test value for {column!r}")


def make_row(table: sa.Table, i: int, variant: int = 0) -> dict[str, Any]:
    return {c.name: value_for(c, i, variant) for c in table.columns}


def key_of(table: sa.Table, row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c.name] for c in table.primary_key.columns)


def candles(n: int, start: dt.datetime = BASE_TS, symbol: str = "BTC/USDT") -> pd.DataFrame:
    """`n` five-minute binance candles of `symbol` from `start`."""
    ts = pd.date_range(start, periods=n, freq="5min")
    base = np.arange(n, dtype=float) + 100.0
    return pd.DataFrame({"exchange": "binance", "symbol": symbol, "timeframe": "5m", "ts": ts,
                         "open": base, "high": base + 1, "low": base - 1, "close": base + 0.5,
                         "volume": base * 10})
