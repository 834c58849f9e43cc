"""A seeded market whose volume carries the one informative input, for the importance checks (issue 25).

The log volume carries an AR(1) state ``s`` (``phi``); the next bar's log return is
``beta * sigma * s`` plus noise of scale ``sigma``.  The volume features (``vol_z_48``, ``vol_z_288``:
z-scores of log volume) see ``s``; every other feature is noise with respect to the label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PLANTED_FEATURES = ("vol_z_48", "vol_z_288")


def planted_volume_candles(n: int, seed: int, beta: float = 0.3, phi: float = 0.8, sigma: float = 0.002,
                           start: str = "2024-01-01") -> pd.DataFrame:
    """``n`` 5m candles whose volume state predicts the next bar's return (see the module docstring)."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n)
    s = np.empty(n)
    s[0] = e[0]
    for i in range(1, n):
        s[i] = phi * s[i - 1] + np.sqrt(1 - phi**2) * e[i]  # unit variance
    r = sigma * rng.standard_normal(n)
    r[1:] += beta * sigma * s[:-1]
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    wiggle = np.abs(rng.standard_normal(n)) * sigma * close * 0.5
    ts = pd.date_range(start, periods=n, freq="5min", tz="UTC")
    return pd.DataFrame({"ts": ts, "open": open_, "high": np.maximum(open_, close) + wiggle,
                         "low": np.minimum(open_, close) - wiggle, "close": close,
                         "volume": np.exp(3.0 + 0.5 * s)})
