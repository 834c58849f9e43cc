"""Seeded 5m candle frames with a planted, known edge, for the replay's planted-market tests.

The edge rides on a hidden AR(1) state s_t (phi 0.95) that the volume reveals (volume = exp(1 + s_t),
so the volume z-score features see it).  The next bar's return is

    r_{t+1} = sigma_t * (beta_t * f_t(s_t) + eps_{t+1}),   eps ~ N(0, 1)

with sigma_t the volatility of the day's block and f_t, beta_t chosen per test:
- `regime_edges`: days alternate between quiet (sigma 0.5x) and wild (sigma 3x) blocks; in quiet days
  f = s (a linear edge: a linear model and a tree both see it), in wild days f = |s| - E|s| (symmetric:
  no linear model can use it, a tree can);
- `flipping_edge`: one linear edge f = s whose sign flips at a given day;
- beta = 0 everywhere is pure noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BARS_PER_DAY = 288
PHI = 0.95


def _state(rng: np.random.Generator, n: int, phi: float = PHI) -> np.ndarray:
    s = np.empty(n)
    s[0] = rng.normal() / np.sqrt(1 - phi ** 2)
    shocks = rng.normal(size=n)
    for i in range(1, n):
        s[i] = phi * s[i - 1] + shocks[i]
    return s * np.sqrt(1 - phi ** 2)  # unit variance


def _candles(start: str, r: np.ndarray, s: np.ndarray, base_vol: float, rng: np.random.Generator) -> pd.DataFrame:
    n = len(r)
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    wiggle = np.abs(rng.normal(size=n)) * base_vol * 0.3
    high = np.maximum(open_, close) * (1 + wiggle)
    low = np.minimum(open_, close) * (1 - wiggle)
    ts = pd.date_range(start, periods=n, freq="5min", tz="UTC")
    return pd.DataFrame({"ts": ts, "open": open_, "high": high, "low": low, "close": close,
                         "volume": np.exp(1.0 + s)})


def regime_edges(seed: int, days: int, beta: float = 0.25, start: str = "2024-01-01",
                 base_vol: float = 0.002) -> pd.DataFrame:
    """Quiet days (linear edge) alternating with wild days (symmetric edge), two days each."""
    rng = np.random.default_rng(seed)
    n = days * BARS_PER_DAY
    s = _state(rng, n)
    day = np.arange(n) // BARS_PER_DAY
    wild = (day // 2) % 2 == 1
    sigma = np.where(wild, 3.0, 0.5) * base_vol
    f = np.where(wild, np.abs(s) - np.sqrt(2 / np.pi), s)
    r = np.zeros(n)
    r[1:] = sigma[:-1] * (beta * f[:-1] + rng.normal(size=n - 1))
    return _candles(start, r, s, base_vol, rng)


def flipping_edge(seed: int, days: int, flip_day: int, beta: float = 0.25, start: str = "2024-01-01",
                  base_vol: float = 0.002) -> pd.DataFrame:
    """A linear edge on the state, beta before `flip_day`, -beta from it on."""
    rng = np.random.default_rng(seed)
    n = days * BARS_PER_DAY
    s = _state(rng, n)
    sign = np.where(np.arange(n) // BARS_PER_DAY < flip_day, 1.0, -1.0)
    r = np.zeros(n)
    r[1:] = base_vol * (beta * sign[:-1] * s[:-1] + rng.normal(size=n - 1))
    return _candles(start, r, s, base_vol, rng)
