"""Promotion and live rollback: paired, autocorrelation-robust tests with fixed seeded outcomes."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import signal, stats

from brain_tasks.ml.rollback import (
    Decision,
    live_rollback_decision,
    promotion_decision,
    rollback_decision,
)


def _market(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.01, n)


def _noise(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.002, n)


def _json_safe(d: Decision) -> None:
    json.dumps(d.stats, allow_nan=False)
    assert d.reason.endswith(".") and ". " not in d.reason  # one sentence
    assert {"n", "mean_diff", "se", "t_stat", "p_value", "method", "lags"} <= set(d.stats)


def test_a_candidate_no_worse_than_the_champion_is_promoted() -> None:
    m = _market(2000)
    d = promotion_decision(m + _noise(2000), m)
    assert d.action == "promote" and d.reason.startswith("Promote the candidate: over 2000 paired bars")
    better = promotion_decision(m + 0.0005 + _noise(2000), m)
    assert better.action == "promote" and "more than the champion" in better.reason
    _json_safe(d)


def test_a_significantly_worse_candidate_keeps_the_champion() -> None:
    m = _market(2000)
    d = promotion_decision(m - 0.001 + _noise(2000), m)
    assert d.action == "keep" and d.reason.startswith("Keep the champion") and "significant" in d.reason
    assert d.stats["mean_diff"] == pytest.approx(0.001, abs=2e-4) and d.stats["p_value"] < 0.05
    _json_safe(d)
    within = promotion_decision(m - 0.0001 + _noise(2000), m, margin=0.0005)
    assert within.action == "promote" and "within the margin" in within.reason


def test_a_worse_live_champion_is_rolled_back_and_a_noisy_one_kept() -> None:
    m = _market(2000)
    d = live_rollback_decision(m - 0.001 + _noise(2000), m)
    assert d.action == "rollback" and d.reason.startswith("Roll back to the previous champion")
    _json_safe(d)
    rng = np.random.default_rng(2)
    noisy = live_rollback_decision(rng.normal(0, 0.01, 300) - 0.0005, rng.normal(0, 0.01, 300))
    assert noisy.action == "keep" and "not significant" in noisy.reason and noisy.stats["p_value"] > 0.05


def test_too_few_paired_bars_is_insufficient_evidence() -> None:
    m = _market(100)
    for d in (promotion_decision(m - 0.01, m), live_rollback_decision(m - 0.01, m)):
        assert d.action == "insufficient_evidence" and "only 100 paired" in d.reason and "288" in d.reason


def test_series_are_paired_by_timestamp_and_nans_dropped() -> None:
    ts = pd.date_range("2024", periods=400, freq="5min", tz="UTC")
    m = pd.Series(_market(400), index=ts)
    champion = (m - 0.002).iloc[50:]
    previous = m.copy()
    previous.iloc[100] = np.nan
    d = live_rollback_decision(champion, previous.iloc[::-1], min_samples=300)
    assert d.stats["n"] == 349 and d.action == "rollback"
    assert d.stats["mean_diff"] == pytest.approx(0.002)  # identical bars: the shortfall is exact
    assert rollback_decision(champion, previous, margin=0.0, min_samples=300).action == "rollback"
    with pytest.raises(ValueError):
        live_rollback_decision(np.zeros(5), np.zeros(6), min_samples=3)


@pytest.mark.parametrize("phi", [-0.3, 0.0, 0.3])
def test_false_rollbacks_under_autocorrelated_returns(phi: float) -> None:
    """Two versions with the same (zero) mean whose difference is AR(1): rolled back at most 5% of the
    time, within three simulation sds; the iid t-test over-rejects at phi = 0.3."""
    reps, n = 1000, 500
    rng = np.random.default_rng(17)
    d = signal.lfilter([1.0], [1.0, -phi], rng.standard_normal((reps, n + 100)), axis=1)[:, 100:] * 0.002
    market = rng.normal(0, 0.01, (reps, n))
    rate = np.mean([live_rollback_decision(market[i] - d[i], market[i]).action == "rollback" for i in range(reps)])
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
    if phi == 0.3:
        naive = np.mean(stats.ttest_1samp(d, 0.0, axis=1, alternative="greater").pvalue <= 0.05)
        assert naive > 0.08
