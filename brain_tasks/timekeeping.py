"""Time, once: the clock, the two UTC rules and the length of a timeframe.

- `now()` is the one clock.  Everything that stamps a row or judges an age asks it.
- `to_utc` is the strict rule used inside the Brain (`brain/`): a naive time is refused, since guessing
  its zone is how a series gets shifted by hours.
- `parse_utc` is for what comes from outside (a user's argument, an exchange payload, a file): naive
  means UTC and an integer is epoch milliseconds, as ccxt and freqtrade write them.
- `timeframe_seconds` parses a ccxt timeframe ('5m', '1h', '1d') without importing ccxt.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import numpy as np
import pandas as pd

from brain_tasks.errors import DataError

# ccxt's units (Exchange.parse_timeframe): a month is 30 days and a year 365.
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "M": 30 * 86400, "y": 365 * 86400}
_TIMEFRAME = re.compile(r"([1-9][0-9]*)([smhdwMy])")


class BadTime(DataError):
    """Not a time (the `check` names the data-quality finding it leaves)."""

    check = "bad_window"


class BadTimeframe(DataError):
    """Not a ccxt timeframe."""

    check = "invalid_timeframe"


def now() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.timezone.utc)


def to_utc(value: Any, what: str = "timestamp") -> dt.datetime:
    """`value` (datetime, pandas Timestamp, numpy datetime64 or ISO string) as an aware UTC datetime.

    Naive values are refused with a DataError."""
    if isinstance(value, np.datetime64):
        raise DataError(f"{what}: naive numpy datetime64 {value!r}; pass a timezone-aware UTC time")
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        raise DataError(f"{what}: naive datetime {value!r}; Brain timestamps must be timezone-aware UTC")
    return ts.tz_convert("UTC").to_pydatetime()


def parse_utc(value: Any) -> pd.Timestamp | None:
    """Outside input (datetime, ISO string, epoch-ms int) as a UTC Timestamp; naive means UTC.

    None stays None; anything that is not a time raises BadTime."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return pd.Timestamp(int(value), unit="ms", tz="UTC")
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise BadTime(f"invalid timestamp {value!r}") from exc
    if ts is pd.NaT:
        raise BadTime(f"invalid timestamp {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def timeframe_seconds(timeframe: Any) -> int:
    """The bar length of a ccxt timeframe string in seconds ('5m' -> 300); BadTimeframe otherwise."""
    match = _TIMEFRAME.fullmatch(timeframe) if isinstance(timeframe, str) else None
    if match is None:
        raise BadTimeframe(f"invalid timeframe {timeframe!r}: expected a ccxt timeframe such as '5m' or '1h'")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def day_end(day: dt.date) -> dt.datetime:
    """Data visible on an as-of date: everything strictly before the next UTC midnight."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
