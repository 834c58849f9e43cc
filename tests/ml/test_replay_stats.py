"""The pure core of the replay (brain_tasks.ml.replay): trading a policy's choices, and the statistics
that compare policies.  Seeded; each test takes well under a few seconds."""

from __future__ import annotations

import json
import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy import signal, stats

from brain_tasks.ml import replay
from brain_tasks.ml.metrics import deflated_sharpe_ratio, strategy_returns

PPY = 105_120.0  # 5m bars per year


def bars(n: int, seed: int = 0) -> pd.Series:
    idx = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC", name="ts")
    return pd.Series(np.random.default_rng(seed).normal(0.0, 0.01, n), index=idx, name="bar_return")


# --- PBO -----------------------------------------------------------------------------------------------

def naive_pbo(m: np.ndarray, s: int) -> tuple[float, list[float]]:
    """CSCV written out from Bailey, Borwein, Lopez de Prado & Zhu (2015), with replay's stated rules:
    the earliest T % S rows left out, Sharpe = mean / std(ddof=1) (0 without variance), an in-sample
    tie to the lowest column, out-of-sample ties at their average rank, omega = rank / (N + 1)."""
    t, n = m.shape
    size = t // s
    m = m[t - size * s:]
    blocks = [m[i * size:(i + 1) * size] for i in range(s)]

    def sharpe(x: np.ndarray) -> np.ndarray:
        out = []
        for j in range(x.shape[1]):
            sd = x[:, j].std(ddof=1)
            out.append(0.0 if not sd > 1e-12 * abs(x[:, j].mean()) else x[:, j].mean() / sd)
        return np.array(out)

    logits = []
    for combo in combinations(range(s), s // 2):
        train = np.vstack([blocks[i] for i in combo])
        test = np.vstack([blocks[i] for i in range(s) if i not in combo])
        r_is, r_oos = sharpe(train), sharpe(test)
        best = int(np.argmax(r_is))
        omega = stats.rankdata(r_oos, method="average")[best] / (n + 1)
        logits.append(math.log(omega / (1 - omega)))
    return float(np.mean(np.array(logits) <= 0)), logits


@pytest.mark.parametrize("t, n, s, seed", [(203, 5, 6, 1), (160, 7, 8, 2), (97, 4, 4, 3), (333, 10, 8, 4)])
def test_pbo_equals_a_straightforward_cscv(t: int, n: int, s: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = rng.standard_t(4, (t, n)) * 0.01 + rng.normal(0, 0.002, n)
    m[:, 1] = 0.0  # a flat policy: Sharpe exactly 0 in every split (ties with nothing else)
    m[:, 2] = m[:, 3]  # two identical policies: exact ties in and out of sample
    expected, logits = naive_pbo(m, s)
    fast = replay.pbo_cscv(m, n_blocks=s)
    general = replay.pbo_cscv(m, n_blocks=s, metric=replay.sharpe_columns)
    for got in (fast, general):
        assert got["pbo"] == expected
        assert got["logits"] == logits
        assert got["n_combinations"] == math.comb(s, s // 2)
        assert got["bars_per_block"] == t // s and got["rows_left_out"] == t % s


def test_pbo_is_near_one_half_on_noise_and_small_with_a_real_edge() -> None:
    rng = np.random.default_rng(7)
    noise = [replay.pbo_cscv(rng.normal(0, 0.01, (1600, 40)))["pbo"] for _ in range(8)]
    assert 0.35 <= float(np.mean(noise)) <= 0.65, noise
    edge = rng.normal(0, 0.01, (1600, 40))
    edge[:, 17] += 0.0015  # per-bar Sharpe 0.15: the best policy in and out of sample
    assert replay.pbo_cscv(edge)["pbo"] < 0.05


def test_pbo_refuses_what_it_cannot_split() -> None:
    with pytest.raises(ValueError):
        replay.pbo_cscv(np.zeros((100, 3)), n_blocks=5)
    with pytest.raises(ValueError):
        replay.pbo_cscv(np.zeros((20, 3)), n_blocks=16)
    with pytest.raises(ValueError):
        replay.pbo_cscv(np.full((64, 3), np.nan))


# --- Sharpe difference test ---------------------------------------------------------------------------

def ar1_t4(rng: np.random.Generator, phi: float, n: int) -> np.ndarray:
    """Unit-variance stationary AR(1) with Student-t(4) innovations (burn-in 500)."""
    e = rng.standard_t(4, n + 500) / math.sqrt(2.0)
    return signal.lfilter([1.0], [1.0, -phi], e)[500:] * math.sqrt(1.0 - phi * phi)


@pytest.mark.parametrize("phi, rho", [(0.3, 0.0), (0.6, 0.5)])
def test_sharpe_difference_test_holds_its_size_under_dependence_and_heavy_tails(phi: float, rho: float) -> None:
    # Equal true Sharpe (0.05 per bar), AR(1) t(4) returns, correlated policies; 600 repetitions:
    # the 5% test's rejection rate has a binomial sd of 0.9%; allow 3 sd.
    rng = np.random.default_rng(int(phi * 10 + rho * 100))
    reps, n = 600, 2000
    rejected = 0
    for _ in range(reps):
        x, y = ar1_t4(rng, phi, n), ar1_t4(rng, phi, n)
        y = rho * x + math.sqrt(1 - rho * rho) * y
        rejected += replay.sharpe_difference_test(0.05 + x, 0.05 + y, PPY).p_value < 0.05
    assert abs(rejected / reps - 0.05) <= 3 * math.sqrt(0.05 * 0.95 / reps)


def test_sharpe_difference_test_has_power_against_a_planted_difference() -> None:
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(100):
        x, y = ar1_t4(rng, 0.3, 2000), ar1_t4(rng, 0.3, 2000)
        t = replay.sharpe_difference_test(0.15 + x, y, PPY)  # z about 3.5: power about 0.97
        hits += t.p_greater < 0.05 and t.diff > 0
    assert hits >= 90


def test_sharpe_difference_test_answers_degenerate_cases_exactly() -> None:
    r = bars(400).to_numpy()
    flat = np.zeros(400)
    both_flat = replay.sharpe_difference_test(flat, flat, PPY)
    assert both_flat.exact and both_flat.p_value == 1.0 and both_flat.diff == 0.0
    same = replay.sharpe_difference_test(r, r.copy(), PPY)
    assert same.exact and (same.p_value, same.p_greater, same.p_less) == (1.0, 1.0, 1.0)
    scaled = replay.sharpe_difference_test(r, 3.0 * r, PPY)
    assert scaled.exact and scaled.p_value == 1.0
    short = replay.sharpe_difference_test(r[:2], flat[:2], PPY)
    assert short.exact and short.p_value == 1.0 and short.n == 2
    up = replay.sharpe_difference_test(np.full(400, 1e-4), flat, PPY)
    assert up.exact and up.p_greater == 0.0 and up.p_less == 1.0 and math.isfinite(up.diff) and up.diff > 0
    # Against flat the test is the policy's own HAC Sharpe test: finite, not exact.
    vs_flat = replay.sharpe_difference_test(r + 0.002, flat, PPY)
    assert not vs_flat.exact and vs_flat.sharpe_b == 0.0 and vs_flat.p_greater < 0.05
    assert all(math.isfinite(v) for v in vs_flat.to_dict().values() if isinstance(v, float))
    # Series are paired by ts.
    s = bars(400)
    assert replay.sharpe_difference_test(s, s.iloc[::-1], PPY).exact


# --- DSR of the best policy ---------------------------------------------------------------------------

def test_dsr_of_best_deflates_the_best_by_the_number_of_policies() -> None:
    rng = np.random.default_rng(3)
    policies = {f"p{i}": rng.normal(0.0002 * i, 0.01, 3000) for i in range(6)}
    out = replay.dsr_of_best(policies, PPY)
    srs = {k: v.mean() / v.std(ddof=1) for k, v in policies.items()}
    best = max(srs, key=srs.get)
    assert out["best"] == best and out["n_trials"] == 6
    variance = float(np.var(list(srs.values()), ddof=1))
    assert out["dsr"] == deflated_sharpe_ratio(policies[best], n_trials=6, trial_sharpe_variance=variance)
    assert out["benchmark_sharpe"] > 0 and 0.0 <= out["dsr"] <= 1.0


# --- trading a policy ---------------------------------------------------------------------------------

def const(index: pd.DatetimeIndex, value: float) -> pd.Series:
    return pd.Series(value, index=index)


def test_one_model_everywhere_matches_strategy_returns() -> None:
    r = bars(600, seed=1)
    pred = pd.Series(np.random.default_rng(2).normal(size=600), index=r.index)
    regimes = pd.Series(np.random.default_rng(3).choice(["low", "normal", "high", "extreme"], 600), index=r.index)
    regimes.iloc[:5] = None  # warm-up: the OTHERWISE entry applies
    ends = [r.index[0] - pd.Timedelta("5min"), r.index[150], r.index[400]]
    everywhere = {"low": "m", "normal": "m", "high": "m", "extreme": "m", replay.OTHERWISE: "m"}
    for threshold in (None, 0.5):
        got = replay.trade_policy(r, regimes, {"m": pred, "other": -pred}, ["m", everywhere, everywhere], ends,
                                  7.0, threshold)
        want = strategy_returns(pred, r, 7.0, threshold)
        assert np.array_equal(got["net_return"].to_numpy(), want.to_numpy())
        assert list(got.columns) == list(replay.TRADE_COLUMNS)


def test_costs_are_charged_once_per_position_change_across_steps() -> None:
    r = bars(30, seed=4)
    ix = r.index
    preds = {"long_a": const(ix, 1.0), "long_b": const(ix, 2.0), "short": const(ix, -1.0)}
    ends = [ix[0] - pd.Timedelta("5min"), ix[9], ix[19]]  # steps: bars 0-9, 10-19, 20-29
    t = replay.trade_policy(r, const(ix, "normal"), preds, ["long_a", "long_b", "short"], ends, 10.0)
    pos = t["position"].to_numpy()
    assert np.array_equal(pos, np.r_[np.ones(20), -np.ones(10)])
    turnover = np.zeros(30)
    turnover[0], turnover[20] = 1.0, 2.0  # entry; long_a -> long_b keeps the position: free; long -> short
    assert np.array_equal(t["turnover"].to_numpy(), turnover)
    assert np.array_equal(t["net_return"].to_numpy(), pos * r.to_numpy() - turnover * 10.0 / 1e4)
    assert t["step"].tolist() == [0] * 10 + [1] * 10 + [2] * 10


def test_flat_and_buy_and_hold_are_exact() -> None:
    r = bars(50, seed=5)
    ends = [r.index[0] - pd.Timedelta("5min"), r.index[20]]
    flat = replay.flat_policy(r, ends)
    assert (flat["net_return"] == 0).all() and (flat["position"] == 0).all() and (flat["turnover"] == 0).all()
    hold = replay.buy_and_hold_policy(r, ends, 5.0)
    want = r.to_numpy().copy()
    want[0] -= 5.0 / 1e4  # one entry cost, on the first traded bar only
    assert np.array_equal(hold["net_return"].to_numpy(), want)
    m = replay.policy_metrics(hold, PPY)
    assert m["time_in_market"] == 1.0 and m["turnover"] == 1 / 50
    assert replay.policy_metrics(flat, PPY)["sharpe_se"] == 0.0


def test_per_regime_choice_switches_exactly_on_regime_changes() -> None:
    r = bars(12, seed=6)
    ix = r.index
    regime = pd.Series(["low", "low", "high", "high", "high", "low", None, "low", "extreme", "low", "high", "high"],
                       index=ix)
    preds = {"up": const(ix, 1.0), "down": const(ix, -1.0)}
    ends = [ix[0] - pd.Timedelta("5min")]
    t = replay.trade_policy(r, regime, preds, [{"low": "up", "high": "down"}], ends, 5.0)
    # Unknown regime (None) and a regime without a choice (extreme) are flat.
    assert t["position"].tolist() == [1, 1, -1, -1, -1, 1, 0, 1, 0, 1, -1, -1]
    assert t["turnover"].tolist() == [1, 0, 2, 0, 0, 2, 1, 1, 1, 1, 2, 0]
    with_default = replay.trade_policy(r, regime, preds, [{"low": "up", replay.OTHERWISE: "down"}], ends, 5.0)
    assert with_default["position"].tolist() == [1, 1, -1, -1, -1, 1, -1, 1, -1, 1, -1, -1]


def test_bars_up_to_the_first_step_are_not_traded_and_unknown_models_refused() -> None:
    r = bars(20, seed=8)
    t = replay.trade_policy(r, const(r.index, "low"), {}, ["buy_and_hold", "flat"], [r.index[4], r.index[9]], 5.0)
    assert t.index[0] == r.index[5] and len(t) == 15
    assert t["position"].tolist() == [1] * 5 + [0] * 10
    with pytest.raises(ValueError, match="no predictions"):
        replay.trade_policy(r, const(r.index, "low"), {}, ["lightgbm"], [r.index[0]], 5.0)


def test_pooled_returns_average_the_symbols_present() -> None:
    ix = pd.date_range("2024-01-01", periods=4, freq="5min", tz="UTC")
    a = pd.Series([0.01, 0.02, np.nan, 0.04], index=ix)
    b = pd.Series([0.03, 0.00], index=ix[1:3])
    pooled = replay.pooled_returns({"A": a, "B": b})
    assert pooled.tolist() == pytest.approx([0.01, 0.025, 0.0, 0.04], abs=1e-15)


# --- storage ------------------------------------------------------------------------------------------

def test_pack_round_trip_is_float32_exact_with_gaps() -> None:
    r = bars(5000, seed=9)
    r.iloc[100:110] = np.nan  # bars without a return
    gappy = r.drop(r.index[2000:2300])  # bars missing altogether
    data = replay.pack_returns(gappy)
    back = replay.unpack_returns(data)
    assert len(back) == 5000 and back.index.equals(r.index)
    want = gappy.astype("float32").astype("float64")
    got = back.reindex(gappy.index)
    assert np.array_equal(got.to_numpy(), want.to_numpy(), equal_nan=True)
    assert back.iloc[2000:2300].isna().all()
    # float32 keeps 24 significant bits.
    ok = gappy.notna()
    assert np.all(np.abs(got[ok] - gappy[ok]) <= np.abs(gappy[ok]) * 2.0 ** -24)
    assert len(data) <= replay.HEADER_BYTES + 4 * 5000 * 1.01
    flat = replay.pack_returns(pd.Series(0.0, index=r.index))
    assert len(flat) < 200  # a flat policy's zeros cost almost nothing


def test_equity_curve_keeps_the_extremes_and_the_end() -> None:
    r = pd.Series(np.random.default_rng(10).normal(0, 0.01, 50_000),
                  index=pd.date_range("2024-01-01", periods=50_000, freq="5min", tz="UTC"))
    full = np.exp(np.cumsum(np.log1p(r.to_numpy())))
    curve = replay.equity_curve(r, max_points=500)
    assert len(curve) <= 500 and curve.index.is_monotonic_increasing
    assert curve.iloc[-1] == full[-1] and curve.max() == full.max() and curve.min() == full.min()


def test_policy_table_compares_every_policy_with_brain_on_the_same_bars() -> None:
    r = bars(2000, seed=12)
    ix = r.index
    ends = [ix[0] - pd.Timedelta("5min"), ix[999]]
    pred = pd.Series(np.random.default_rng(13).normal(size=2000), index=ix)
    trades = {
        "brain": replay.trade_policy(r, const(ix, "low"), {"m": pred}, [{"low": "m"}, "flat"], ends, 5.0),
        "newest:m": replay.trade_policy(r, const(ix, "low"), {"m": pred}, ["m", "m"], ends, 5.0),
        "flat": replay.flat_policy(r, ends),
        "buy_and_hold": replay.buy_and_hold_policy(r, ends, 5.0),
    }
    table = replay.policy_table(trades, PPY, n_blocks=8)
    assert set(table["policies"]) == set(trades) and table["n_bars"] == 2000
    assert "p_value" not in table["policies"]["brain"]
    assert all(0.0 <= table["policies"][p]["p_value"] <= 1.0 for p in ("newest:m", "flat", "buy_and_hold"))
    assert table["pbo"]["bars_per_block"] == 250 and table["dsr"]["n_trials"] == 4
    json.dumps(table, allow_nan=False)  # JSON-safe: the store and the CLI print it as is
