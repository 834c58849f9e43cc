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

`model_specific_edges` is built differently (see its docstring): the model types' edges live in
different volatility regimes, on a signal that momentum features cannot read.
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


# model_specific_edges: the volatility follows blocks in a two-day cycle, quiet 16 h, medium 10.5 h, wild
# 13 h, medium 10.5 h (50 h: not a whole number of days, so the time of day says nothing about the block),
# at these multiples of base_vol.  The regime classifier's lookback (7 days) then holds about 30-40% quiet
# bars and 23-31% wild ones: its 25% quantile falls among the quiet bars and its 75% one near the top of
# the medium ones.
LEVELS = (1.0, 1.5, 2.25)
QUIET, MEDIUM, WILD = 0, 1, 2
CYCLE = ((QUIET, 192), (MEDIUM, 126), (WILD, 156), (MEDIUM, 126))
_PASSES = 12


def block_kinds(n: int) -> np.ndarray:
    """The planted volatility block (QUIET, MEDIUM, WILD) of each of n bars from the first."""
    one = np.concatenate([np.full(bars, kind) for kind, bars in CYCLE])
    return np.resize(one, n)


def model_specific_edges(seed: int, days: int, beta_linear: float = 1.0, beta_tree: float = 1.3,
                         phi: float = 0.6, rho: float = 0.9, start: str = "2024-01-01",
                         base_vol: float = 0.003) -> tuple[pd.DataFrame, np.ndarray]:
    """Candles where the linear model's edge lives in the 'low' volatility regime and the trees' in the
    others, and the regime label each bar's edge followed.

    Two AR(1) states x_t and u_t (persistence `phi`, unit variance, correlated `rho` with each other) are
    revealed bar by bar by the candle itself: x by the volume, exp(3 + x_t), which the features read as
    `vol_z_48` / `vol_z_288`; u by where the close sits in the bar's range, `close_pos` = 0.5 + u_t / 8
    (the range is 20 sigma wide, so it does not depend on u and `range_hl` says nothing of it).  They move
    the bar after the fill (a position decided at t is filled at t+1 with the one-bar execution lag and
    earns bar t+2):

        r_{t+2} = sigma_t * f_t + sigma_{t+2} * eps,   eps ~ N(0, 1)

    - bars the Brain classifies 'low': f = beta_linear * (x - u) / sd(x - u).  Linear in two features,
      along their difference: x and u agree 90% of the time, so each feature alone says little and an
      axis-aligned tree needs many splits (a staircase along the diagonal) to follow it; a linear model
      reads it with two coefficients;
    - 'normal', 'high', 'extreme': f = beta_tree * (|x| - E|x|), a threshold on |x| that no linear
      function of the features represents (it is uncorrelated with x and u);
    - warm-up bars (no label yet): no edge.
    The states' persistence is short (phi 0.6): the edges move the mean of the next bars only briefly, so
    momentum features see little of them (in `regime_edges`, with phi 0.95, the linear model caught the
    "tree" edge through momentum).

    sigma_t follows the blocks (`CYCLE`, `LEVELS`).  The regime is the Brain's own causal label
    (`ml.regimes.volatility_regimes` with the training defaults) on the final candles: the edge moves
    the returns a little, and so the labels near a quantile, so the candles are rebuilt until the labels
    they give are the ones their edges followed (at most `_PASSES` passes; a few dozen of 16k bars may
    still differ, and the labels returned are the final candles' own).  Planting on the label rather
    than on the blocks keeps the first hours of a block, which the 48-bar volatility still files under
    the block before, from carrying the other model's edge into a regime.
    """
    from brain_tasks.ml.pipeline import TrainConfig
    from brain_tasks.ml.regimes import volatility_regimes

    rng = np.random.default_rng(seed)
    n = days * BARS_PER_DAY
    z = rng.normal(size=(n, 2))
    shock_x, shock_u = z[:, 0], rho * z[:, 0] + np.sqrt(1 - rho ** 2) * z[:, 1]
    x, u = np.empty(n), np.empty(n)
    x[0], u[0] = shock_x[0], shock_u[0]
    keep = np.sqrt(1 - phi ** 2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + keep * shock_x[i]
        u[i] = phi * u[i - 1] + keep * shock_u[i]
    diagonal = (x - u) / np.sqrt(2 * (1 - rho))
    sigma = np.asarray(LEVELS)[block_kinds(n)] * base_vol
    eps = rng.normal(size=n)
    close_pos = np.clip(0.5 + u / 8, 0.02, 0.98)
    ts = pd.date_range(start, periods=n, freq="5min", tz="UTC")
    config = TrainConfig()
    labels = np.where(block_kinds(n) == QUIET, "low", "normal").astype(object)
    for _ in range(_PASSES):
        f = np.where(labels == "low", beta_linear * diagonal, beta_tree * (np.abs(x) - np.sqrt(2 / np.pi)))
        f = np.where(pd.isna(labels), 0.0, f)
        r = np.zeros(n)
        r[2:] = sigma[:-2] * f[:-2] + sigma[2:] * eps[2:]
        close = 100.0 * np.exp(np.cumsum(r))
        open_ = np.concatenate([[100.0], close[:-1]])
        span = 20 * sigma * close
        frame = pd.DataFrame({"ts": ts, "open": open_,
                              "high": np.maximum(close + (1 - close_pos) * span, np.maximum(open_, close)),
                              "low": np.minimum(close - close_pos * span, np.minimum(open_, close)),
                              "close": close, "volume": np.exp(3.0 + x)})
        found = volatility_regimes(frame, window=config.regime_window, lookback=config.regime_lookback)
        found = found.astype(object).where(found.notna(), None).to_numpy()
        if (pd.Series(found).fillna("-") == pd.Series(labels).fillna("-")).all():
            break
        labels = found
    return frame, found
