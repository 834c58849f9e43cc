"""Labels, purged walk-forward splits, and the leakage test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold

from brain_tasks.errors import DataError
from brain_tasks.ml.labels import bar_returns, forward_return
from brain_tasks.ml.metrics import strategy_returns
from brain_tasks.ml.models import make_trainer
from brain_tasks.ml.validation import walk_forward_splits


def _candles(close: list[float]) -> pd.DataFrame:
    ts = pd.date_range("2024-01-01", periods=len(close), freq="1h", tz="UTC")
    c = np.asarray(close, dtype=float)
    return pd.DataFrame({"ts": ts, "open": c, "high": c, "low": c, "close": c, "volume": 1.0})


def test_forward_return_is_net_of_a_round_trip() -> None:
    candles = _candles([100.0, 101.0, 99.0, 99.05, 102.0])
    y = forward_return(candles, horizon=1, cost_bps=10.0)  # round trip = 20 bps
    expected = [0.01 - 0.002, -(2 / 101) + 0.002, 0.0, 2.95 / 99.05 - 0.002, np.nan]
    np.testing.assert_allclose(y.to_numpy(), expected, atol=1e-15)
    y2 = forward_return(candles, horizon=2, cost_bps=0.0)
    np.testing.assert_allclose(y2.to_numpy()[:3], [-0.01, 99.05 / 101 - 1, 102 / 99 - 1])
    assert y2.iloc[-2:].isna().all()
    assert y.index.equals(pd.DatetimeIndex(candles["ts"]))


def test_bar_returns_are_next_bar_simple_returns() -> None:
    br = bar_returns(_candles([100.0, 110.0, 99.0]))
    np.testing.assert_allclose(br.to_numpy()[:2], [0.1, -0.1])
    assert np.isnan(br.iloc[-1])


def test_bad_label_arguments_raise() -> None:
    with pytest.raises(DataError):
        forward_return(_candles([1.0, 2.0, 3.0]), horizon=0, cost_bps=1.0)
    with pytest.raises(DataError):
        forward_return(_candles([1.0, 2.0, 3.0]), horizon=1, cost_bps=-1.0)


@pytest.mark.parametrize("scheme", ["expanding", "sliding"])
@pytest.mark.parametrize("n, folds, horizon, embargo", [(1000, 5, 12, 12), (577, 3, 1, 0), (5000, 7, 48, 24)])
def test_walk_forward_purges_and_embargoes(scheme: str, n: int, folds: int, horizon: int, embargo: int) -> None:
    splits = walk_forward_splits(n, folds, horizon, embargo, scheme=scheme)
    assert len(splits) == folds
    tests = np.concatenate([t for _, t in splits])
    assert np.array_equal(tests, np.arange(tests[0], n))  # contiguous, in order, to the last row
    min_train = n // (folds + 1)
    for train, test in splits:
        assert np.all(np.diff(train) == 1) and np.all(np.diff(test) == 1)
        # No training label (i, i + horizon] reaches the test block, plus the embargo.
        assert train.max() + horizon + embargo < test.min()
        assert train.max() + horizon + embargo == test.min() - 1
        if scheme == "sliding":
            assert len(train) == min_train
        else:
            assert train[0] == 0
    assert splits[0][0].size == min_train


def test_walk_forward_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError):
        walk_forward_splits(100, 5, 40, 40)
    with pytest.raises(ValueError):
        walk_forward_splits(100, 2, 1, 1, scheme="random")


def _noise_problem(seed: int, n: int = 1500, horizon: int = 10) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A random walk: nothing is predictable, the label overlaps its neighbours' labels."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.01, n)
    close = 100 * np.cumprod(1 + r)
    candles = pd.DataFrame(
        {
            "ts": pd.date_range("2024", periods=n, freq="1h", tz="UTC"),
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": 1.0,
        }
    )
    y = forward_return(candles, horizon, 0.0).to_numpy()
    br = bar_returns(candles).to_numpy()
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    X["t"] = np.arange(n, dtype=float)  # lets a tree find a row's neighbours in time
    keep = ~np.isnan(y)
    return X[keep].reset_index(drop=True), y[keep], br[keep]


def _sharpe_of(pred: np.ndarray, br: np.ndarray) -> float:
    s = strategy_returns(pred, br, cost_bps=0.0).to_numpy()
    return float(s.mean() / s.std(ddof=1))


@pytest.mark.slow
def test_leakage_purged_oos_sharpe_is_centred_on_zero_unpurged_is_not() -> None:
    params = {"num_boost_round": 30, "num_leaves": 15, "min_data_in_leaf": 10, "learning_rate": 0.1}
    purged, leaky = [], []
    horizon = 10
    for seed in range(16):
        X, y, br = _noise_problem(seed, horizon=horizon)
        oos_pred, oos_br = [], []
        for train, test in walk_forward_splits(len(y), 4, horizon, horizon):
            model = make_trainer("lightgbm", params, seed=seed).fit(X.iloc[train], y[train])
            oos_pred.append(model.predict(X.iloc[test]))
            oos_br.append(br[test])
        purged.append(_sharpe_of(np.concatenate(oos_pred), np.concatenate(oos_br)))
        pred = np.empty(len(y))
        for train, test in KFold(4, shuffle=True, random_state=seed).split(X):
            pred[test] = make_trainer("lightgbm", params, seed=seed).fit(X.iloc[train], y[train]).predict(X.iloc[test])
        leaky.append(_sharpe_of(pred, br))
    purged, leaky = np.array(purged), np.array(leaky)
    t_purged = purged.mean() / (purged.std(ddof=1) / np.sqrt(len(purged)))
    t_leaky = leaky.mean() / (leaky.std(ddof=1) / np.sqrt(len(leaky)))
    print(
        f"per-bar OOS Sharpe purged {purged.mean():+.4f} (t={t_purged:+.2f}), "
        f"unpurged {leaky.mean():+.4f} (t={t_leaky:+.2f})"
    )
    assert abs(t_purged) < 3.0
    assert t_leaky > 6.0 and leaky.mean() > 5 * abs(purged.mean())
