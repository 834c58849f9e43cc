"""The position-sizing agent: a planted market where it must learn to size down, pure noise where it
must not beat flat, determinism, the exported policy against SB3's, and the gate's statistics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from brain_tasks.errors import DataError
from brain_tasks.ml import sharpe, sizing
from brain_tasks.ml.sizing import AGENT, SIGN, VOL_TARGET, SizerConfig


def planted(n: int = 8000, seed: int = 1, informative: bool = True, rho: float = 0.5,
            block: int = 400) -> pd.DataFrame:
    """An OOS frame whose prediction correlates `rho` with the bar's return in the low-volatility
    blocks and is pure noise in the high-volatility ones (4x the volatility); all noise when not
    `informative`."""
    rng = np.random.default_rng(seed)
    high = (np.arange(n) // block) % 2 == 1
    sigma = np.where(high, 0.008, 0.002)
    r = rng.standard_normal(n) * sigma
    signal = rho * r / sigma + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    pred = np.where(high | (not informative), rng.standard_normal(n), signal) * 1e-3
    return pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC"), "fold": 0,
                         "pred": pred, "label": r, "bar_return": r, "strategy_return": 0.0,
                         "regime": np.where(high, "high", "low")})


CONFIG = SizerConfig(cost_bps=1.0, embargo=2)


@pytest.fixture(scope="module")
def informative() -> sizing.SizerResult:
    return sizing.train_sizer(planted(), CONFIG)


@pytest.fixture(scope="module")
def noise() -> sizing.SizerResult:
    return sizing.train_sizer(planted(informative=False), CONFIG)


def test_the_agent_sizes_down_where_the_prediction_is_noise_and_beats_fixed_sizing(informative):
    res = informative
    by_regime = {g: m["mean_abs_position"] for g, m in res.regime_metrics.items()}
    assert by_regime["high"] < 0.25 * by_regime["low"], by_regime
    assert res.gate.active == AGENT, res.gate.reason
    for baseline in (SIGN, VOL_TARGET):
        test = res.gate.tests[baseline]
        assert test.diff > 0 and test.p_greater < 0.01, (baseline, test)
    assert res.metrics["agent_sizes"] == 1.0 and res.sizer.active == AGENT
    assert res.sizer_metrics[AGENT]["sharpe"] > max(res.sizer_metrics[b]["sharpe"] for b in (SIGN, VOL_TARGET))
    # Nested walk-forward: every test bar comes after the training bars and the purge + embargo.
    assert res.split.test_start - res.split.train_end == CONFIG.delay + CONFIG.embargo
    assert res.oos["ts"].min() > planted()["ts"].iloc[res.split.train_end - 1]
    assert len(res.oos) == res.split.n - res.split.test_start == res.metrics["n_test_bars"]


def test_on_pure_noise_the_agent_does_not_beat_flat(noise):
    assert noise.gate.vs_flat.p_greater >= 0.05, noise.gate.vs_flat
    assert noise.metrics["mean_abs_position"] < 0.5


def test_two_trainings_give_identical_weights_and_the_artifact_round_trips():
    frame = planted(n=1600, seed=3)
    config = dataclasses.replace(CONFIG, total_timesteps=1024, n_steps=64, batch_size=128, n_epochs=2,
                                 min_train_bars=400, min_test_bars=200)
    first, second = sizing.train_sizer(frame, config), sizing.train_sizer(frame, config)
    assert first.artifact == second.artifact
    loaded = sizing.Sizer.from_bytes(first.artifact)
    assert loaded.description == first.sizer.description
    assert sorted(loaded.weights) == sorted(first.sizer.weights)
    for name, w in first.sizer.weights.items():
        assert loaded.weights[name].dtype == np.float32 and np.array_equal(loaded.weights[name], w)
    assert loaded.to_bytes() == first.artifact
    assert not first.artifact.startswith(b"PK")  # not SB3's zip (which pickles)
    with pytest.raises(ValueError, match="not a brain sizer"):
        from safetensors.numpy import save

        sizing.Sizer.from_bytes(save({"w": np.zeros(2, np.float32)}))


def test_the_numpy_policy_acts_like_the_sb3_policy():
    frame = sizing.prepare(planted(n=3000, seed=5))
    config = dataclasses.replace(CONFIG, total_timesteps=4096, n_steps=128)
    pred, r = frame["pred"].to_numpy(), frame["bar_return"].to_numpy()
    hit, vol = sizing.rolling_inputs(pred, r, config.delay, config.hit_window, config.vol_window)
    scales = sizing.Scales.fit(pred, r, vol, config.episode_length)
    static = sizing.static_features(pred, hit, vol, frame["regime"].to_numpy(), scales)
    model = sizing.fit_ppo(static, r, config, scales)
    policy = sizing.Sizer({"hidden": list(config.hidden)}, sizing.export_weights(model, config))
    rng = np.random.default_rng(0)
    books = np.column_stack([rng.choice(config.allowed_actions, len(static)), -rng.exponential(0.5, len(static))])
    obs = np.column_stack([static, books]).astype(np.float32)
    obs = np.concatenate([obs, rng.uniform(-5, 5, (2000, obs.shape[1])).astype(np.float32)])
    theirs, _ = model.predict(obs, deterministic=True)
    ours = policy.act(obs)
    assert len(set(theirs.tolist())) > 1  # a policy that always says the same thing would prove little
    assert np.array_equal(ours, theirs)


def test_size_for_serves_each_sizer_and_the_latest_observation_matches_training():
    frame = sizing.prepare(planted(n=600, seed=2))
    config = SizerConfig(allow_short=False, embargo=2)
    pred, r = frame["pred"].to_numpy(), frame["bar_return"].to_numpy()
    hit, vol = sizing.rolling_inputs(pred, r, config.delay, config.hit_window, config.vol_window)
    scales = sizing.Scales.fit(pred, r, vol, config.episode_length)
    rng = np.random.default_rng(1)
    weights = {"pi.0.weight": rng.normal(size=(32, 9)), "pi.0.bias": rng.normal(size=32),
               "pi.1.weight": rng.normal(size=(32, 32)), "pi.1.bias": rng.normal(size=32),
               "out.weight": rng.normal(size=(3, 32)), "out.bias": rng.normal(size=3)}
    sizer = sizing.Sizer({"format": sizing.FORMAT_VERSION, "config": config.to_dict(), "scales":
                          dataclasses.asdict(scales), "hidden": [32, 32], "active": AGENT},
                         {k: v.astype(np.float32) for k, v in weights.items()})
    sizer = sizing.Sizer.from_bytes(sizer.to_bytes())
    # The serving path builds the same vector the agent was trained and judged on.
    history = r.copy()
    history[-config.delay:] = np.nan  # not known yet at the last bar
    obs = sizing.latest_observation(pred, history, frame["regime"].iloc[-1], sizer, position=0.5, drawdown=-0.01)
    static = sizing.static_features(pred, hit, vol, frame["regime"].to_numpy(), scales)[-1]
    book = sizing.Book(0.0, scales, 0.0)
    book.position, book.equity = 0.5, 0.99
    np.testing.assert_allclose(sizer.vector(obs), book.observe(static), rtol=1e-6)
    assert config.allowed_actions == (0.0, 0.5, 1.0)
    assert sizing.size_for(sizer, obs) in config.allowed_actions
    down = {**obs, "pred": -1.0}
    assert sizing.size_for(sizer, down, use=SIGN) == 0.0  # spot: no short side
    up = {"pred": 2.0, "realised_vol": 4 * scales.vol_ref}
    assert sizing.size_for(sizer, up, use=SIGN) == 1.0
    assert sizing.size_for(sizer, up, use=VOL_TARGET) == pytest.approx(0.25)
    assert sizing.size_for(sizer, {"pred": 2.0}, use=VOL_TARGET) == 1.0
    with pytest.raises(ValueError, match="unknown sizer"):
        sizing.size_for(sizer, up, use="martingale")


def test_the_gates_one_sided_sharpe_test_holds_its_size_under_autocorrelation_and_has_power():
    """The gate asks "does the agent beat this baseline?" with the project's one Sharpe-difference test
    (`ml.sharpe`, per bar, one-sided `p_greater`).  AR(1) returns (phi 0.5) with equal true Sharpe: it
    rejects near alpha, where an iid test would reject far more often; a real difference is found."""
    rng = np.random.default_rng(11)
    n, reps, phi = 1000, 300, 0.5

    def ar1(mean: float) -> np.ndarray:
        e = rng.standard_normal(n)
        x = np.empty(n)
        x[0] = e[0]
        for t in range(1, n):
            x[t] = phi * x[t - 1] + e[t]
        return mean + x * np.sqrt(1 - phi**2)

    def test(a: np.ndarray, b: np.ndarray) -> sharpe.SharpeDifference:
        return sharpe.sharpe_difference_test(a, b, 1.0)

    rejections = sum(test(ar1(0.02), ar1(0.02)).p_greater < 0.05 for _ in range(reps))
    assert rejections / reps < 0.09
    strong = test(ar1(0.3), ar1(0.0))
    assert strong.p_greater < 0.01 and strong.diff > 0
    flat = test(np.zeros(100), np.zeros(100))
    assert flat.p_greater == 1.0 and flat.diff == 0.0
    losing = test(np.zeros(500), ar1(-0.3)[:500])
    assert losing.p_greater < 0.01  # flat beats a losing strategy


def test_too_few_bars_is_a_data_error_and_configs_round_trip():
    with pytest.raises(DataError, match="out-of-sample bars"):
        sizing.train_sizer(planted(n=400), CONFIG)
    with pytest.raises(DataError, match="lacks columns"):
        sizing.prepare(planted(n=10).drop(columns=["regime"]))
    assert SizerConfig.from_dict(CONFIG.to_dict()) == CONFIG
    assert SizerConfig.from_dict(CONFIG.to_dict()).config_hash() == CONFIG.config_hash()
    assert CONFIG.config_hash() != dataclasses.replace(CONFIG, risk_weight=0.3).config_hash()
    assert SizerConfig(allow_short=False).allowed_actions == (0.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="risk_term"):
        SizerConfig(risk_term="vibes")
