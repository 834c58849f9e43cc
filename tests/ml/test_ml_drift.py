"""Feature drift on serially dependent, heavy-tailed data: calibrated false alarms, power, windows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import signal

from brain_tasks.ml.drift import autocorrelation_time, drift_windows, feature_drift, psi
from brain_tasks.timekeeping import timeframe_seconds

N_REF, N_CUR = 720, 168


def _ar1(rng: np.random.Generator, phi: float, p: int, t3: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """p independent stationary AR(1) features, the reference window followed by the current one."""
    n = N_REF + N_CUR
    e = rng.standard_t(3, (p, n + 2000)) if t3 else rng.standard_normal((p, n + 2000))
    x = signal.lfilter([1.0], [1.0, -phi], e, axis=1)[:, 2000:].T
    cols = [f"x{j}" for j in range(p)]
    return pd.DataFrame(x[:N_REF], columns=cols), pd.DataFrame(x[N_REF:], columns=cols)


def _rate(rng: np.random.Generator, phi: float, p: int, reps: int, t3: bool = False) -> float:
    return float(np.mean([feature_drift(*_ar1(rng, phi, p, t3))["drifted"].any() for _ in range(reps)]))


def _bound(reps: int) -> float:
    return 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)  # 5% within three simulation sds


def test_fixed_psi_threshold_would_fire_far_too_often() -> None:
    """Why calibration is needed: with 30 bins PSI >= 0.1 fires on most no-drift samples."""
    rng = np.random.default_rng(0)
    fired = np.mean([psi(rng.normal(size=N_REF), rng.normal(size=N_CUR), bins=30) >= 0.1 for _ in range(200)])
    assert fired > 0.8


def test_no_false_alarms_on_a_persistent_series_that_did_not_change() -> None:
    """The audit's case: AR(1) phi 0.9, 720 vs 168 rows, no change: 68% false alarms before."""
    assert _rate(np.random.default_rng(1), 0.9, 1, 300) <= _bound(300)


@pytest.mark.slow
@pytest.mark.parametrize("t3", [False, True], ids=["normal", "t3"])
@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9, 0.98])
def test_false_alarms_per_feature_at_every_dependence_level(phi: float, t3: bool) -> None:
    assert _rate(np.random.default_rng(int(phi * 100) + t3), phi, 1, 300, t3) <= _bound(300)


@pytest.mark.slow
@pytest.mark.parametrize("phi", [0.0, 0.9])
def test_false_alarms_family_wise_over_twenty_features(phi: float) -> None:
    assert _rate(np.random.default_rng(5), phi, 20, 100) <= _bound(100)


def test_half_a_standard_deviation_shift_is_caught_ninety_percent_of_the_time() -> None:
    rng = np.random.default_rng(12)
    hits, wrong = [], []
    for _ in range(200):
        ref, cur = _ar1(rng, 0.0, 3)
        cur["x0"] += 0.5
        d = feature_drift(ref, cur).set_index("feature")["drifted"]
        hits.append(d["x0"])
        wrong.append(d.drop("x0").any())
    assert np.mean(hits) >= 0.9
    assert np.mean(wrong) <= _bound(200)  # the flag names the feature that moved (Holm: family-wise)


def test_autocorrelation_time_follows_the_dependence() -> None:
    rng = np.random.default_rng(3)
    for phi, tau in ((0.0, 1.0), (0.5, 3.0), (0.9, 19.0)):
        ref, cur = _ar1(rng, phi, 1)
        x = pd.concat([ref, cur])["x0"].to_numpy()
        assert autocorrelation_time(x[:N_REF], x[N_REF:]) == pytest.approx(tau, rel=0.35)
    # A level shift between the windows is not mistaken for persistence.
    ref, cur = _ar1(rng, 0.0, 1)
    assert autocorrelation_time(ref["x0"], cur["x0"] + 3.0) < 1.3


def test_result_columns_and_how_much_it_moved() -> None:
    rng = np.random.default_rng(3)
    ref, cur = _ar1(rng, 0.0, 3)
    cur["x0"] += 1.0
    ref["constant"], cur["constant"] = 1.0, 1.0
    ref["only_in_reference"] = 0.0
    out = feature_drift(ref, cur, seed=0)
    assert list(out["feature"]) == ["x0", "x1", "x2", "constant"]
    for col in ("feature", "psi", "psi_threshold", "ks_stat", "ks_pvalue", "drifted", "pvalue", "effect_size",
                "n_eff_reference", "n_eff_current"):
        assert col in out.columns
    row = out.set_index("feature").loc["x0"]
    assert row["drifted"] and row["psi"] > row["psi_threshold"] and row["effect_size"] == pytest.approx(1.0, abs=0.2)
    assert row["pvalue"] >= row["ks_pvalue"] and row["n_eff_current"] <= N_CUR
    assert out["drifted"].sum() == 1
    const = out.set_index("feature").loc["constant"]
    assert not const["drifted"] and const["psi"] == 0.0 and const["pvalue"] == 1.0
    pd.testing.assert_frame_equal(out, feature_drift(ref, cur, seed=0))


def test_thresholds_scale_with_the_effective_window_size() -> None:
    rng = np.random.default_rng(5)
    small = feature_drift(pd.DataFrame({"x": rng.normal(size=200)}), pd.DataFrame({"x": rng.normal(size=50)}))
    large = feature_drift(pd.DataFrame({"x": rng.normal(size=5000)}), pd.DataFrame({"x": rng.normal(size=2000)}))
    assert small["psi_threshold"].iloc[0] > 5 * large["psi_threshold"].iloc[0]
    ref, cur = _ar1(rng, 0.95, 1)
    persistent = feature_drift(ref, cur).iloc[0]
    assert persistent["n_eff_current"] < N_CUR / 10 and persistent["psi_threshold"] > 0.3


@pytest.mark.parametrize(
    "timeframe, n, current, reference",
    [("5m", 20_000, 288, 1152), ("1m", 20_000, 1440, 5760), ("1h", 5000, 168, 672), ("1d", 400, 80, 320)],
)
def test_nightly_windows_follow_the_timeframe(timeframe: str, n: int, current: int, reference: int) -> None:
    index = pd.date_range("2024-01-01", periods=n, freq=pd.Timedelta(seconds=timeframe_seconds(timeframe)), tz="UTC")
    ref, cur = drift_windows(index, timeframe)
    assert cur.sum() == current and ref.sum() == reference
    assert cur[-current:].all() and ref[n - current - reference : n - current].all()  # adjacent, most recent last
