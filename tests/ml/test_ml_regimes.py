"""Volatility regimes (causal), metrics per regime and the per-regime choice with hysteresis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brain_tasks.ml.metrics import evaluate, strategy_metrics, strategy_returns
from brain_tasks.ml.regimes import REGIMES, metrics_by_regime, select_per_regime, volatility_regimes


def _two_vol_candles(n: int = 3000, jump_at: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    sigma = np.where(np.arange(n) < jump_at, 0.001, 0.01)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1, n) * sigma))
    ts = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    return pd.DataFrame(
        {"ts": ts, "open": close, "high": close * 1.001, "low": close * 0.999, "close": close, "volume": 1.0}
    )


def test_regimes_are_causal_and_labelled(eth: pd.DataFrame) -> None:
    full = volatility_regimes(eth, window=48, lookback=2016)
    assert full.index.equals(pd.DatetimeIndex(eth["ts"]))
    assert set(full.dropna().unique()) == set(REGIMES)
    assert full.iloc[:48].isna().all() and full.iloc[100:].notna().all()
    for cut in (500, 3000):
        prefix = volatility_regimes(eth.iloc[:cut], window=48, lookback=2016)
        pd.testing.assert_series_equal(prefix, full.iloc[:cut])


def test_a_volatility_jump_is_labelled_high_then_the_quantiles_adapt() -> None:
    reg = volatility_regimes(_two_vol_candles(), window=24, lookback=500)
    assert (reg.iloc[1500:2000].isin(["low", "normal", "high", "extreme"])).all()
    assert (reg.iloc[2000:2024] == "extreme").all()  # far above everything seen before
    # Until the new level fills a quarter of the lookback it stays above the trailing 75% quantile.
    assert reg.iloc[2024:2100].isin(["high", "extreme"]).all()
    # Once the lookback holds only the new level, labels spread over the regimes again.
    assert (reg.iloc[2600:] == "extreme").mean() < 0.2


def test_metrics_by_regime_slices_one_strategy_run() -> None:
    rng = np.random.default_rng(1)
    n = 1000
    br = rng.normal(0, 0.01, n)
    pred = rng.normal(size=n)
    label = br.copy()
    regimes = np.array(REGIMES)[rng.integers(0, 3, n)]  # 'extreme' never occurs
    out = metrics_by_regime(pred, label, br, regimes, 8760, 5.0)
    assert list(out) == list(REGIMES)
    assert sum(m["n_bars"] for m in out.values()) == n
    assert out["extreme"]["n_bars"] == 0 and all(np.isfinite(v) for v in out["extreme"].values())
    strat = strategy_returns(pred, br, 5.0).to_numpy()
    for name in ("low", "normal", "high"):
        mask = regimes == name
        assert out[name]["sharpe"] == pytest.approx(strategy_metrics(strat[mask], 8760)["sharpe"])
    overall = evaluate(pred, label, br, 8760, 5.0)
    assert overall["n_bars"] == n


def _m(composite: float, n_bars: float = 500, psr: float = 0.8) -> dict[str, float]:
    return {"composite": composite, "n_bars": n_bars, "psr": psr}


def test_select_per_regime_best_composite_min_bars_and_hysteresis() -> None:
    candidates = {
        "lightgbm": {"low": _m(0.30), "normal": _m(0.20), "high": _m(0.50, n_bars=50), "extreme": _m(0.1, 10)},
        "xgboost": {"low": _m(0.33, psr=0.9), "normal": _m(0.10), "high": _m(0.15), "extreme": _m(0.2, 10)},
        "baseline": {"low": _m(0.10), "normal": _m(0.26), "high": _m(0.00), "extreme": _m(0.3, 10)},
    }
    fresh = select_per_regime(candidates, min_bars=100)
    assert fresh["low"]["model"] == "xgboost" and fresh["low"]["confidence"] == 0.9
    assert fresh["normal"]["model"] == "baseline"
    assert fresh["high"]["model"] == "xgboost"  # lightgbm's 0.50 rests on 50 bars only
    assert fresh["extreme"]["model"] is None and "no candidate" in fresh["extreme"]["reason"]

    champion = {"low": "lightgbm", "normal": "lightgbm", "high": "baseline", "extreme": "baseline"}
    held = select_per_regime(candidates, min_bars=100, champion=champion, margin=0.05)
    assert held["low"]["model"] == "lightgbm" and not held["low"]["switched"]  # 0.33 - 0.30 < margin
    assert "does not beat champion" in held["low"]["reason"]
    assert held["normal"]["model"] == "baseline" and held["normal"]["switched"]  # 0.26 - 0.20 > margin
    assert held["high"]["model"] == "xgboost" and held["high"]["switched"]
    assert held["extreme"]["model"] == "baseline" and "keeping champion" in held["extreme"]["reason"]
    assert all(isinstance(v["score"], float) and isinstance(v["reason"], str) for v in held.values())
    switched = select_per_regime(candidates, min_bars=100, champion=champion, margin=0.0)
    assert switched["low"]["model"] == "xgboost"
