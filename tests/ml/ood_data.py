"""Feature matrices for the out-of-distribution gate's tests and benchmark (``bench/ood.py``).

Real rows come from the bundled sample; stationary rows from a GARCH(1,1) process with Student-t
shocks (heavy tails and volatility clustering, one regime throughout); regime-switching rows from
``market.synthetic.SyntheticSource``.  Splits are in time, as walk-forward: fit, a gap of one label
span, calibration, a gap, a later held-out block.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brain_tasks.market.synthetic import SyntheticSource
from brain_tasks.ml.pipeline import TrainConfig, build_dataset
from tests.ml.conftest import load_pair

# Purge a label's span between blocks, as the walk-forward splits do (horizon + execution lag).
GAP = TrainConfig().horizon + TrainConfig().execution_lag


def real_features(base: str) -> pd.DataFrame:
    """The feature matrix of a real sample pair (BASE/BTC, 5m) as training sees it."""
    X, _, _ = build_dataset(load_pair(base), TrainConfig())
    return X


def garch_t_candles(n: int, seed: int, *, omega: float = 2e-7, alpha: float = 0.05, beta: float = 0.9,
                    df: float = 5.0) -> pd.DataFrame:
    """5m candles from a stationary GARCH(1,1) with unit-variance Student-t shocks: heavy tails and
    serially dependent volatility, but one regime, so every block has the same distribution.  The
    defaults keep the fourth moment finite ((alpha + beta)^2 + alpha^2 (kurtosis - 1) < 1 for t5)."""
    rng = np.random.default_rng(seed)
    shocks = rng.standard_t(df, n + 500) / np.sqrt(df / (df - 2))
    var = np.empty(n + 500)
    v = omega / (1 - alpha - beta)
    r = np.empty(n + 500)
    for i in range(n + 500):
        var[i] = v
        r[i] = np.sqrt(v) * shocks[i]
        v = omega + alpha * r[i] ** 2 + beta * v
    r, sigma = r[500:], np.sqrt(var[500:])  # burn-in: start from the stationary distribution
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.standard_normal((2, n))) * sigma * 0.6
    ts = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    volume = rng.lognormal(3.0, 0.4, n) * (1 + np.abs(r) / sigma.mean())
    return pd.DataFrame({"ts": ts, "open": open_, "high": np.maximum(open_, close) * np.exp(wick[0]),
                         "low": np.minimum(open_, close) * np.exp(-wick[1]), "close": close, "volume": volume})


def garch_features(n: int, seed: int) -> pd.DataFrame:
    X, _, _ = build_dataset(garch_t_candles(n, seed), TrainConfig(min_rows=100))
    return X


def regime_features(seed: int, days: int = 30) -> pd.DataFrame:
    """Features of ``SyntheticSource``'s regime-switching path (regimes last about two days)."""
    src = SyntheticSource(seed, start="2024-01-01", end=pd.Timestamp("2024-01-01") + pd.Timedelta(days=days))
    X, _, _ = build_dataset(src.fetch_candles("BTC/USDT", "5m"), TrainConfig())
    return X


def split(X: pd.DataFrame, fit: float = 0.6, cal: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(fit, calibration, held-out) blocks in time order, a label span apart."""
    n = len(X)
    a, b = int(fit * n), int((fit + cal) * n)
    return X.iloc[:a], X.iloc[a + GAP: b], X.iloc[b + GAP:]


def shifted(X: pd.DataFrame, feature: str, scale: float, k: float = 4.0) -> pd.DataFrame:
    """X with ``feature`` moved by ``k`` robust standard deviations (``scale``), every other one kept."""
    out = X.copy()
    out[feature] = out[feature] + k * scale
    return out
