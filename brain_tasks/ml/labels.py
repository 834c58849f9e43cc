"""Labels and the per-bar returns a strategy earns.

``cost_bps`` is the cost of one unit of turnover (one side of a trade) in basis points, the same unit
the metrics charge on position changes; a round trip (enter + exit) therefore costs ``2 * cost_bps``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brain_tasks.errors import DataError
from brain_tasks.ml.features import validate_candles


def _close(candles: pd.DataFrame) -> pd.Series:
    validate_candles(candles)
    return close_series(candles)


def close_series(candles: pd.DataFrame) -> pd.Series:
    """The closes as float64, indexed by ts (no checks: `bar_returns` validates training data first)."""
    return pd.Series(candles["close"].to_numpy(dtype="float64"), index=pd.DatetimeIndex(candles["ts"], name="ts"))


def close_to_close(close: pd.Series, lag: int = 0) -> pd.Series:
    """The return from close t+lag to close t+lag+1, stamped t: `bar_returns`' formula on its own."""
    return close.shift(-1 - lag) / close.shift(-lag) - 1.0


def _check_lag(lag: int) -> None:
    if lag < 0:
        raise DataError(f"execution lag must be >= 0 bars, got {lag}")


def bar_returns(candles: pd.DataFrame, lag: int = 0) -> pd.Series:
    """Simple return from the close of bar t+lag to the close of bar t+lag+1, stamped t (NaN on the
    last lag+1 bars).

    It is what a position decided at bar t's close and filled ``lag`` bars later earns next, so
    ``position[t] * bar_returns[t]`` is causal.
    """
    _check_lag(lag)
    return close_to_close(_close(candles), lag).rename("bar_return")


def forward_return(candles: pd.DataFrame, horizon: int, cost_bps: float, lag: int = 0) -> pd.Series:
    """Simple return over ``horizon`` bars from the fill (``lag`` bars after the decision), net of a
    round trip, stamped at the decision bar.

    The label is what the better side (long or short) would keep after paying the round trip:
    ``sign(r) * max(|r| - 2 * cost_bps / 1e4, 0)``, so moves too small to pay for the trade are 0.
    The last ``horizon + lag`` bars have no label (NaN).
    """
    if horizon < 1:
        raise DataError(f"horizon must be >= 1 bar, got {horizon}")
    if cost_bps < 0 or not np.isfinite(cost_bps):
        raise DataError(f"cost_bps must be a finite non-negative number, got {cost_bps}")
    _check_lag(lag)
    close = _close(candles)
    raw = close.shift(-horizon - lag) / close.shift(-lag) - 1.0
    round_trip = 2.0 * cost_bps / 1e4
    net = np.sign(raw) * (raw.abs() - round_trip).clip(lower=0.0)
    return net.rename("label")
