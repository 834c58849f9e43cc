"""The rollback rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from brain_tasks.ml.rollback import rollback_decision


def _market(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.01, n)


def test_a_clearly_worse_champion_is_rolled_back() -> None:
    m = _market(2000)
    noise = np.random.default_rng(1).normal(0, 0.002, 2000)
    d = rollback_decision(m - 0.001 + noise, m, margin=0.0002, min_samples=288)
    assert d.action == "rollback"
    assert "roll back" in d.reason and "2000 bars" in d.reason
    assert d.stats["mean_diff"] == pytest.approx(0.001, abs=2e-4) and d.stats["p_value"] < 0.05
    assert all(isinstance(v, float) and math.isfinite(v) for v in d.stats.values())


def test_a_shortfall_within_the_margin_keeps_the_champion() -> None:
    m = _market(2000)
    noise = np.random.default_rng(1).normal(0, 0.002, 2000)
    d = rollback_decision(m - 0.0001 + noise, m, margin=0.0005, min_samples=288)
    assert d.action == "keep" and "within the margin" in d.reason


def test_a_noisy_shortfall_is_not_significant() -> None:
    rng = np.random.default_rng(2)
    prev = rng.normal(0, 0.01, 300)
    champ = rng.normal(0, 0.01, 300) - 0.0005  # worse on average, but buried in noise
    d = rollback_decision(champ, prev, margin=0.0, min_samples=288)
    assert d.action == "keep" and "not significant" in d.reason and d.stats["p_value"] > 0.05


def test_too_few_samples_is_insufficient_evidence() -> None:
    m = _market(100)
    d = rollback_decision(m - 0.01, m, margin=0.0, min_samples=288)
    assert d.action == "insufficient_evidence" and "need 288" in d.reason


def test_series_are_paired_by_timestamp_and_nans_dropped() -> None:
    ts = pd.date_range("2024", periods=400, freq="5min", tz="UTC")
    m = pd.Series(_market(400), index=ts)
    champion = (m - 0.002).iloc[50:]
    previous = m.copy()
    previous.iloc[100] = np.nan
    d = rollback_decision(champion, previous.iloc[::-1], margin=0.0, min_samples=300)
    assert d.stats["n"] == 349 and d.action == "rollback"
    assert d.stats["mean_diff"] == pytest.approx(0.002)  # identical bars: the shortfall is exact
    with pytest.raises(ValueError):
        rollback_decision(np.zeros(5), np.zeros(6), margin=0.0, min_samples=2)
