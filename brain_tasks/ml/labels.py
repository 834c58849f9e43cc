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
    return pd.Series(candles["close"].to_numpy(dtype="float64"), index=pd.DatetimeIndex(candles["ts"], name="ts"))


def bar_returns(candles: pd.DataFrame) -> pd.Series:
    """Simple return from the close of bar t to the close of bar t+1, stamped t (NaN on the last bar).

    It is what a position decided at bar t's close earns next, so ``position[t] * bar_returns[t]``
    is causal.
    """
    close = _close(candles)
    return (close.shift(-1) / close - 1.0).rename("bar_return")


def forward_return(candles: pd.DataFrame, horizon: int, cost_bps: float) -> pd.Series:
    """Simple return over the next ``horizon`` bars, net of a round trip, stamped at the decision bar.

    The label is what the better side (long or short) would keep after paying the round trip:
    ``sign(r) * max(|r| - 2 * cost_bps / 1e4, 0)``, so moves too small to pay for the trade are 0.
    The last ``horizon`` bars have no label (NaN).
    """
    if horizon < 1:
        raise DataError(f"horizon must be >= 1 bar, got {horizon}")
    if cost_bps < 0 or not np.isfinite(cost_bps):
        raise DataError(f"cost_bps must be a finite non-negative number, got {cost_bps}")
    close = _close(candles)
    raw = close.shift(-horizon) / close - 1.0
    round_trip = 2.0 * cost_bps / 1e4
    net = np.sign(raw) * (raw.abs() - round_trip).clip(lower=0.0)
    return net.rename("label")
