"""Trading metrics: checked against empyrical-reloaded on the real sample, plus edge cases."""

from __future__ import annotations

import json
import math

import empyrical
import numpy as np
import pandas as pd
import pytest
from conftest import PAIRS, load_pair
from scipy import signal, stats

from brain_tasks.ml.labels import bar_returns
from brain_tasks.ml.metrics import (
    DEFAULT_WEIGHTS,
    FLAT_METRICS,
    LOG_GROWTH_CAP,
    RATIO_CAP,
    bars_per_year,
    composite_score,
    deflated_sharpe_ratio,
    evaluate,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    sharpe_standard_error,
    strategy_metrics,
    strategy_returns,
)


def test_bars_per_year_uses_a_365_day_year() -> None:
    assert bars_per_year("5m") == 365 * 288
    assert bars_per_year("1h") == 8760
    assert bars_per_year("8h") == 1095
    assert bars_per_year("1d") == 365


@pytest.mark.parametrize("pair", PAIRS)
def test_metrics_match_empyrical_reloaded_on_real_returns(pair: str) -> None:
    """Library checked against: empyrical-reloaded (sharpe_ratio, sortino_ratio, max_drawdown,
    calmar_ratio) with annualization = bars per year of 5m bars, within 1e-9."""
    ppy = bars_per_year("5m")
    br = bar_returns(load_pair(pair)).dropna()
    momentum = strategy_returns(np.sign(br.shift(1).fillna(0.0)).to_numpy(), br, cost_bps=5.0)
    for r in (br, momentum):
        m = strategy_metrics(r, ppy)
        assert m["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r, annualization=ppy), abs=1e-9)
        assert m["sortino"] == pytest.approx(empyrical.sortino_ratio(r, annualization=ppy), abs=1e-9)
        assert m["max_drawdown"] == pytest.approx(empyrical.max_drawdown(r), abs=1e-9)
        assert m["calmar"] == pytest.approx(empyrical.calmar_ratio(r, annualization=ppy), abs=1e-9)
        assert m["total_return"] == pytest.approx(empyrical.cum_returns_final(r), abs=1e-9)
        assert m["n_bars"] == len(r)


def test_strategy_returns_charge_cost_on_position_changes() -> None:
    bar = pd.Series([0.01, -0.02, 0.03, 0.01])
    pred = [1.0, 1.0, -1.0, 0.0]
    out = strategy_returns(pred, bar, cost_bps=10.0)
    # enter long (1 unit), hold, flip to short (2 units), close (1 unit)
    expected = [0.01 - 0.001, -0.02, -0.03 - 0.002, 0.0 - 0.001]
    np.testing.assert_allclose(out.to_numpy(), expected, rtol=0, atol=1e-15)
    thresholded = strategy_returns([0.0005, 0.002, -0.0001, -0.003], bar, cost_bps=0.0, threshold=0.001)
    np.testing.assert_allclose(thresholded.to_numpy(), [0.0, -0.02, 0.0, -0.01])


def test_profit_factor_and_hit_ratio() -> None:
    m = strategy_metrics([0.02, -0.01, 0.0, 0.03, -0.02], 365)
    assert m["profit_factor"] == pytest.approx(0.05 / 0.03)
    assert m["hit_ratio"] == pytest.approx(2 / 4)  # flat bars are not trades


@pytest.mark.parametrize(
    "returns",
    [
        [],
        [0.0],
        [0.0] * 50,
        [0.5, 0.4, -0.1],
        [0.001] * 50,
        [0.01, 0.02, 0.0, 0.03],
        [-0.01] * 10,
        [-1.0, 0.5],
        [1e-3, np.nan, 2e-3],
    ],
)
def test_metric_dicts_are_always_finite_and_json_safe(returns: list[float]) -> None:
    pred = np.ones(len(returns))
    label = np.asarray(returns, dtype=float)
    out = evaluate(pred, label, np.nan_to_num(label), 8760, 5.0)
    assert set(DEFAULT_WEIGHTS) - {"psr"} <= set(out) and {"accuracy", "n_trades", "psr", "composite"} <= set(out)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    json.dumps(out, allow_nan=False)
    assert all(math.isfinite(v) for v in strategy_metrics(returns, 8760).values())


def test_only_gains_are_capped_not_infinite() -> None:
    m = strategy_metrics([0.01, 0.02, 0.015], 365)
    assert m["profit_factor"] == RATIO_CAP and m["calmar"] == RATIO_CAP and m["max_drawdown"] == 0.0


def test_equity_is_compounded_in_log_space_so_long_series_do_not_overflow() -> None:
    """200k bars of +1% grow equity to e^1990: a product overflows to inf; the log sum does not."""
    r = np.concatenate([np.full(200_000, 0.01), [-0.5], np.full(10, 0.01)])
    m = strategy_metrics(r, 8760)
    assert m["max_drawdown"] == pytest.approx(-0.5, abs=1e-12)
    assert m["total_return"] == pytest.approx(math.expm1(LOG_GROWTH_CAP)) and math.isfinite(m["total_return"])
    assert all(math.isfinite(v) for v in m.values())
    ruined = strategy_metrics([0.1, -1.0, 0.2], 365)
    assert ruined["total_return"] == -1.0 and ruined["max_drawdown"] == -1.0


def test_a_strategy_that_never_trades_ranks_exactly_as_flat_and_above_losers() -> None:
    flat = evaluate(np.zeros(500), np.zeros(500), np.random.default_rng(0).normal(0, 0.01, 500), 8760, 5.0)
    for key, value in FLAT_METRICS.items():
        assert flat[key] == value, key
    assert composite_score(flat) == pytest.approx(composite_score(FLAT_METRICS))
    rng = np.random.default_rng(1)
    for _ in range(20):  # losers of every shape, including many small wins and rare large losses
        r = np.where(rng.random(500) < 0.9, 0.001, -0.012) + rng.normal(0, 1e-4, 500)
        loser = strategy_metrics(r, 8760) | {"psr": probabilistic_sharpe_ratio(r)}
        assert loser["sharpe"] < 0 and loser["hit_ratio"] > 0.8
        assert composite_score(loser) <= composite_score(flat)


def _ar1(n: int, phi: float, reps: int, rng: np.random.Generator) -> np.ndarray:
    e = rng.standard_normal((reps, n + 200))
    return signal.lfilter([1.0], [1.0, -phi], e, axis=1)[:, 200:] * 0.01


@pytest.mark.parametrize("phi", [-0.3, 0.0, 0.3])
def test_psr_false_positive_rate_under_autocorrelated_returns(phi: float) -> None:
    """Zero-mean AR(1) returns: PSR > 0.95 at most 5% of the time, within three simulation sds
    (bench/stats.py measures 4.8-5.2% on 4000 paths), where the iid formula gives 12-13% at phi = 0.3."""
    reps = 1000
    paths = _ar1(500, phi, reps, np.random.default_rng(7))
    rate = np.mean([probabilistic_sharpe_ratio(p) > 0.95 for p in paths])
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
    if phi == 0.3:
        assert np.mean([probabilistic_sharpe_ratio(p, method="iid") > 0.95 for p in paths]) > 0.09


def test_sharpe_standard_error_matches_lo_under_iid_normal_returns() -> None:
    r = np.random.default_rng(3).normal(0.001, 0.01, 20_000)
    sr = r.mean() / r.std(ddof=1)
    assert sharpe_standard_error(r) == pytest.approx(math.sqrt((1 + sr**2 / 2) / len(r)), rel=0.05)
    assert sharpe_standard_error(r, method="iid") == pytest.approx(math.sqrt((1 + sr**2 / 2) / len(r)), rel=0.05)
    # Positive autocorrelation inflates the error by about sqrt((1 + phi) / (1 - phi)).
    ar = _ar1(20_000, 0.5, 1, np.random.default_rng(4))[0]
    assert sharpe_standard_error(ar) == pytest.approx(math.sqrt(3 / len(ar)), rel=0.1)
    assert sharpe_standard_error([0.01, 0.01, 0.01]) == math.inf


def test_deflated_sharpe_ratio_is_the_psr_against_the_expected_maximum() -> None:
    r = np.random.default_rng(5).normal(0.002, 0.01, 2000)
    assert deflated_sharpe_ratio(r, n_trials=1, trial_sharpe_variance=0.01) == probabilistic_sharpe_ratio(r)
    v, n = 0.03**2, 50
    gamma = 0.5772156649015329
    sr0 = math.sqrt(v) * ((1 - gamma) * stats.norm.ppf(1 - 1 / n) + gamma * stats.norm.ppf(1 - 1 / (n * math.e)))
    assert expected_max_sharpe(n, v) == pytest.approx(sr0)
    dsr = deflated_sharpe_ratio(r, n_trials=n, trial_sharpe_variance=v)
    assert dsr == pytest.approx(probabilistic_sharpe_ratio(r, benchmark=sr0)) and dsr < probabilistic_sharpe_ratio(r)


def test_psr_matches_bailey_lopez_de_prado(eth: pd.DataFrame) -> None:
    r = bar_returns(eth).dropna().to_numpy()
    sr = r.mean() / r.std(ddof=1)
    g3, g4 = stats.skew(r), stats.kurtosis(r, fisher=False)
    z = sr * math.sqrt(len(r) - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    assert probabilistic_sharpe_ratio(r, method="iid") == pytest.approx(stats.norm.cdf(z), abs=1e-12)
    assert probabilistic_sharpe_ratio(r, benchmark=sr) == pytest.approx(0.5, abs=1e-12)


def test_psr_grows_with_sample_length_at_the_same_sharpe() -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal(200)
    base = (base - base.mean()) / base.std(ddof=1) * 0.01 + 0.001  # per-bar Sharpe 0.1 exactly
    short, long_ = probabilistic_sharpe_ratio(base[:50]), probabilistic_sharpe_ratio(np.tile(base, 10))
    assert 0.5 < short < long_ <= 1.0
    assert probabilistic_sharpe_ratio(-base) < 0.5


def test_composite_is_bounded_and_configurable() -> None:
    huge = {
        "sharpe": 1e9,
        "sortino": 1e9,
        "calmar": 1e9,
        "max_drawdown": 0.0,
        "profit_factor": 1e9,
        "hit_ratio": 1.0,
        "psr": 1.0,
    }
    awful = {
        "sharpe": -1e9,
        "sortino": -1e9,
        "calmar": -1e9,
        "max_drawdown": -1.0,
        "profit_factor": 0.0,
        "hit_ratio": 0.0,
        "psr": 0.0,
    }
    assert composite_score(huge) == pytest.approx(1.0)
    assert composite_score(awful) == pytest.approx(-1.0)
    # One blown-up metric moves the score by at most its weight's share.
    mid = {k: 0.0 for k in huge} | {"profit_factor": 1.0, "hit_ratio": 0.5, "psr": 0.5, "max_drawdown": -0.5}
    assert composite_score(mid) == pytest.approx(0.0)
    assert composite_score(mid | {"sharpe": 1e12}) <= DEFAULT_WEIGHTS["sharpe"] / sum(DEFAULT_WEIGHTS.values()) + 1e-12
    assert composite_score({"sharpe": 3.0}, {"sharpe": 1.0}) == pytest.approx(math.tanh(1.0))
    with pytest.raises(ValueError):
        composite_score(huge, {"made_up": 1.0})


def test_evaluate_carries_what_selection_needs() -> None:
    r = np.random.default_rng(8).normal(0.0005, 0.01, 1000)
    out = evaluate(np.ones(1000), r, r, 8760, 0.0)
    for key in ("psr", "sharpe_se", "sharpe_per_bar", "skew", "kurtosis", "n_bars"):
        assert isinstance(out[key], float) and math.isfinite(out[key]), key
    assert out["sharpe_se"] == pytest.approx(sharpe_standard_error(r), rel=1e-3)
    assert out["psr"] == pytest.approx(probabilistic_sharpe_ratio(r), rel=1e-3)


def test_evaluate_counts_trades_and_accuracy() -> None:
    pred = np.array([0.1, 0.2, -0.1, -0.3, 0.0, 0.4])
    label = np.array([0.01, -0.02, -0.01, 0.0, 0.02, 0.03])
    out = evaluate(pred, label, label, 365, 0.0)
    assert out["n_trades"] == 4  # enter long, flip short, go flat, go long
    assert out["accuracy"] == pytest.approx(3 / 5)  # bars with a non-zero label: 1, 0, 1, 0(flat), 1
