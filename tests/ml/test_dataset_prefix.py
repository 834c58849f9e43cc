"""`dataset_prefix`: the training set of a shorter history, cut from one build over a longer history that
starts at the same candle, is the shorter history's own `build_dataset` result, digest for digest (what
a replay's walk relies on, with the digest checked, instead of rebuilding every candidate's training set)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_candles

from brain_tasks.ml.features import usable_candles
from brain_tasks.ml.pipeline import TrainConfig, build_dataset, dataset_digest, dataset_prefix

DAY = 288  # 5m bars


def _cut(candles: pd.DataFrame, end: pd.Timestamp, config: TrainConfig, **extra: pd.DataFrame) -> tuple:
    X, y, _bar = build_dataset(candles, config, **extra)
    ts = pd.DatetimeIndex(usable_candles(candles)["ts"])
    return dataset_prefix(X, y, ts, end, config)


@pytest.mark.parametrize("days", [4.3, 7.9, 8.2, 11.0])  # both sides of the 8-day time-of-day cut
def test_the_prefix_of_a_longer_build_is_the_shorter_histories_training_set(days: float) -> None:
    candles = synthetic_candles(12 * DAY, seed=5)
    candles.loc[1500, "close"] = np.nan  # a skipped bar (`usable_candles`) inside both histories
    config = TrainConfig(min_rows=1)
    end = candles["ts"].iloc[0] + pd.Timedelta(days=days)
    X, y, _bar = build_dataset(candles[candles["ts"] < end].reset_index(drop=True), config)
    Xp, yp = _cut(candles, end, config)
    assert list(Xp.columns) == list(X.columns) and dataset_digest(Xp, yp) == dataset_digest(X, y)
    assert Xp.index.max() < end


def test_the_prefix_holds_with_funding_and_another_horizon(xrp_futures) -> None:  # noqa: ANN001
    candles, funding = xrp_futures
    config = TrainConfig(horizon=6, execution_lag=2, min_rows=1)
    end = candles["ts"].iloc[len(candles) * 2 // 3 + 13]
    short = candles[candles["ts"] < end].reset_index(drop=True)
    X, y, _bar = build_dataset(short, config, funding=funding[funding["ts"] < end].reset_index(drop=True))
    Xp, yp = _cut(candles, end, config, funding=funding)
    assert list(Xp.columns) == list(X.columns) and dataset_digest(Xp, yp) == dataset_digest(X, y)


def test_an_end_before_any_label_gives_no_rows() -> None:
    candles = synthetic_candles(3 * DAY, seed=1)
    config = TrainConfig(min_rows=1)
    Xp, yp = _cut(candles, candles["ts"].iloc[10], config)
    assert Xp.empty and yp.empty
