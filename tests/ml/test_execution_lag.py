"""Execution lag: a decision at bar t's close is filled later, which is what removes the bid-ask
bounce "edge" of thin pairs from the metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brain_tasks.errors import DataError
from brain_tasks.ml.labels import bar_returns, forward_return
from brain_tasks.ml.metrics import strategy_metrics, strategy_returns


def _bouncing(n: int = 20_000, seed: int = 3) -> pd.DataFrame:
    """Closes that print at the bid or the ask at random around a random-walk mid price."""
    rng = np.random.default_rng(seed)
    mid = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    close = mid * (1 + 2e-3 * rng.choice([-1.0, 1.0], n))
    ts = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    return pd.DataFrame({"ts": ts, "open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                         "volume": 1.0})


def test_lagged_returns_and_labels_start_at_the_fill():
    c = _bouncing(50)
    close = c["close"].to_numpy()
    assert bar_returns(c, lag=1).iloc[5] == pytest.approx(close[7] / close[6] - 1)
    assert forward_return(c, 3, 0.0, lag=1).iloc[5] == pytest.approx(close[9] / close[6] - 1)
    assert bar_returns(c, lag=1).iloc[-2:].isna().all() and forward_return(c, 3, 0.0, lag=1).iloc[-4:].isna().all()
    with pytest.raises(DataError):
        bar_returns(c, lag=-1)


def test_the_bounce_pays_only_when_filled_at_the_decision_close():
    c = _bouncing()
    last_move = c["close"].pct_change().fillna(0.0)
    fade = -last_move  # bet on the bounce reverting
    ppy = 365 * 288
    at_close = strategy_metrics(strategy_returns(fade.iloc[:-1], bar_returns(c).iloc[:-1], 0.0), ppy)
    lagged = strategy_metrics(strategy_returns(fade.iloc[:-2], bar_returns(c, lag=1).iloc[:-2], 0.0), ppy)
    assert at_close["sharpe"] > 50  # an "edge" no order could capture
    assert abs(lagged["sharpe"]) < 5  # one standard error over 20,000 bars is sqrt(105120 / 20000) = 2.3
