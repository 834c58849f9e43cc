"""The shared frame conventions of market data, and the helpers every source uses to reach them.

Each data kind is a DataFrame with a tz-aware UTC ``ts`` column and the value columns below; the
Brain tables use the same names, so a frame goes to storage without renaming.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from brain_tasks.errors import DataError
from brain_tasks.timekeeping import parse_utc, timeframe_seconds
from brain_tasks.market.symbols import validate_symbol  # the rule lives in symbols.py; re-exported

CANDLE_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
FUNDING_COLUMNS = ("ts", "rate", "mark_price")
OPEN_INTEREST_COLUMNS = ("ts", "open_interest", "open_interest_value")
LIQUIDATION_COLUMNS = ("ts", "side", "price", "amount", "value", "liq_id")
SENTIMENT_COLUMNS = ("ts", "score", "magnitude", "n_items")

COLUMNS: dict[str, tuple[str, ...]] = {
    "candles": CANDLE_COLUMNS,
    "funding": FUNDING_COLUMNS,
    "open_interest": OPEN_INTEREST_COLUMNS,
    "liquidations": LIQUIDATION_COLUMNS,
    "sentiment": SENTIMENT_COLUMNS,
}
# Columns a row may leave empty; every other value column is required.
OPTIONAL = {"mark_price", "open_interest_value", "value", "magnitude", "n_items"}
KINDS = tuple(COLUMNS)



class BadRequest(DataError):
    """A request that can never succeed (bad symbol string, timeframe or window)."""

    check = "bad_request"

    def __init__(self, message: str, *, check: str | None = None) -> None:
        super().__init__(message)
        if check is not None:
            self.check = check


class Unsupported(DataError):
    """The source does not offer this kind of data (or this symbol/timeframe of it)."""

    check = "unsupported"


class UnknownSymbol(DataError):
    """The source does not list the symbol."""

    check = "unknown_symbol"


class ExchangeRejected(DataError):
    """The exchange refused the request for a reason a retry cannot fix (bad request, auth, ...)."""

    check = "exchange_rejected"


class EmptyFile(DataError):
    """A data file without a single row: a finding, not a silent no-op."""

    check = "empty_file"


class Malformed(DataError):
    """The response could not be read as market data (truncated or mis-shaped payload)."""

    check = "malformed"


def timeframe_delta(timeframe: Any) -> pd.Timedelta:
    """The bar length of a ccxt timeframe string ('5m', '1h', '1d')."""
    return pd.Timedelta(seconds=timeframe_seconds(timeframe))


def to_ms(value: pd.Timestamp | None) -> int | None:
    """Epoch milliseconds of a UTC timestamp (what ccxt takes as ``since``)."""
    return None if value is None else int(value.value // 1_000_000)


def ts_series(values: Any) -> pd.Series:
    """Parse a column of timestamps (epoch ms numbers, strings or datetimes) to datetime64[ns, UTC].

    Unparseable values become NaT, so a row check can reject them instead of the whole batch failing.
    """
    s = pd.Series(values)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        out = s if getattr(s.dt, "tz", None) is not None else s.dt.tz_localize("UTC")
        return out.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        numbers = pd.to_numeric(s, errors="coerce")
        numbers = numbers.where(np.isfinite(numbers))
        return pd.to_datetime(numbers, unit="ms", utc=True, errors="coerce").astype("datetime64[ns, UTC]")
    if len(s) and s.map(lambda v: isinstance(v, str) or v is None).all():
        # Text only: one vectorised parse; unreadable entries become NaT for the row check.
        out = pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601")
        return out.astype("datetime64[ns, UTC]")
    parsed = []
    for v in s.tolist():
        try:
            parsed.append(parse_utc(v) if v is not None and not (isinstance(v, float) and np.isnan(v)) else pd.NaT)
        except (DataError, OverflowError):
            parsed.append(pd.NaT)
    return pd.Series(pd.to_datetime(parsed, utc=True), index=s.index).astype("datetime64[ns, UTC]")


def empty_frame(kind: str) -> pd.DataFrame:
    """An empty frame of ``kind`` with the conventional columns and dtypes."""
    cols = COLUMNS[kind]
    data: dict[str, Any] = {"ts": pd.Series([], dtype="datetime64[ns, UTC]")}
    for col in cols[1:]:
        data[col] = pd.Series([], dtype="str" if col in ("side", "liq_id") else "float64")
    return pd.DataFrame(data)


def conform(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Select and order the conventional columns of ``kind``; optional ones missing are added as NaN.

    Raises BadRequest(check='malformed') when a required column is absent.
    """
    cols = COLUMNS[kind]
    missing = [c for c in cols if c not in df.columns and c not in OPTIONAL]
    if missing:
        raise Malformed(f"{kind} frame lacks the column(s) {missing}; has {list(df.columns)}")
    out = df.reindex(columns=list(cols)).reset_index(drop=True)
    out["ts"] = ts_series(out["ts"])
    return out


def freqtrade_pair(stem: str) -> str:
    """The ccxt symbol of a freqtrade file pair: 'ETH_BTC' -> 'ETH/BTC', 'XRP_USDT_USDT' -> 'XRP/USDT:USDT'."""
    parts = stem.split("_")
    if len(parts) == 2:
        return f"{parts[0]}/{parts[1]}"
    if len(parts) == 3:
        return f"{parts[0]}/{parts[1]}:{parts[2]}"
    raise Malformed(f"cannot read a pair from the file name {stem!r}")


def freqtrade_stem(symbol: str) -> str:
    """The freqtrade file pair of a ccxt symbol (the inverse of `freqtrade_pair`)."""
    return validate_symbol(symbol).replace("/", "_").replace(":", "_")
