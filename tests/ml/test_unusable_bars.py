"""A stored bar no computation can use (1e308, NaN, zero, a 1000x print) is skipped by training instead
of failing every later training of its symbol."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import synthetic_candles

from brain_tasks.ml.features import usable_candles
from brain_tasks.ml.pipeline import TrainConfig, build_dataset, train_and_evaluate

FAST = TrainConfig(n_folds=3, importance_rows=200)
PRICES = ["open", "high", "low", "close"]


def poisoned(candles: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    bad = candles.copy()
    rows = [400, 900, 1500, 2100, 2600]
    bad.loc[rows[0], PRICES] = 1e308
    bad.loc[rows[1], "close"] = np.nan
    bad.loc[rows[2], PRICES] = 0.0
    bad.loc[rows[3], "volume"] = np.inf
    bad.loc[rows[4], PRICES] = bad.loc[rows[4], "close"] * 1000
    return bad, rows


def test_usable_candles_drops_exactly_the_unusable_bars_and_keeps_clean_frames_as_they_are():
    candles = synthetic_candles(3000)
    assert usable_candles(candles) is candles
    bad, rows = poisoned(candles)
    kept = usable_candles(bad)
    assert len(kept) == len(candles) - len(rows)
    assert not kept["ts"].isin(candles["ts"].iloc[rows]).any()
    pd.testing.assert_frame_equal(kept, candles.drop(index=rows).reset_index(drop=True))


def test_training_on_poisoned_candles_equals_training_without_the_bad_bars():
    candles = synthetic_candles(3000)
    bad, rows = poisoned(candles)
    result = train_and_evaluate(bad, "baseline", FAST)
    expected = train_and_evaluate(candles.drop(index=rows).reset_index(drop=True), "baseline", FAST)
    assert np.isfinite(result.oos[["pred", "label", "bar_return", "strategy_return"]].to_numpy()).all()
    assert result.dataset_digest == expected.dataset_digest
    assert result.metrics == expected.metrics
    # The dataset rebuilt from the same stored bars (importance, rollback) is the trained one.
    X, _, _ = build_dataset(bad, FAST)
    X2, _, _ = build_dataset(candles.drop(index=rows).reset_index(drop=True), FAST)
    pd.testing.assert_frame_equal(X, X2)
