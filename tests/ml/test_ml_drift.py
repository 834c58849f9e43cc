"""Feature drift: calibrated false-alarm rate, power, and what the result says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brain_tasks.ml.drift import feature_drift, psi

N_REF, N_CUR = 720, 168


def _frames(rng: np.random.Generator, p: int, shift: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    cols = [f"x{j}" for j in range(p)]
    ref = pd.DataFrame(rng.normal(size=(N_REF, p)), columns=cols)
    cur = pd.DataFrame(rng.normal(size=(N_CUR, p)), columns=cols)
    cur["x0"] += shift
    return ref, cur


def test_fixed_psi_threshold_would_fire_far_too_often() -> None:
    """Why calibration is needed: with 30 bins PSI >= 0.1 fires on most no-drift samples."""
    rng = np.random.default_rng(0)
    fired = np.mean([psi(rng.normal(size=N_REF), rng.normal(size=N_CUR), bins=30) >= 0.1 for _ in range(200)])
    assert fired > 0.8


@pytest.mark.slow
def test_no_drift_alert_rate_is_at_most_five_percent() -> None:
    rng = np.random.default_rng(11)
    single = np.mean([feature_drift(*_frames(rng, 1), seed=i)["drifted"].any() for i in range(1000)])
    # The alert counts per feature *set*: any of five features flagged is one false alarm.
    family = np.mean([feature_drift(*_frames(rng, 5), seed=i)["drifted"].any() for i in range(300)])
    print(f"false-alarm rate: one feature {single:.3f} (1000 runs), five-feature set {family:.3f} (300 runs)")
    assert single <= 0.05
    assert family <= 0.05


@pytest.mark.slow
def test_half_a_standard_deviation_shift_is_caught_ninety_percent_of_the_time() -> None:
    rng = np.random.default_rng(12)
    single = np.mean([feature_drift(*_frames(rng, 1, 0.5), seed=i)["drifted"].iloc[0] for i in range(300)])
    hits, wrong = [], []
    for i in range(150):
        d = feature_drift(*_frames(rng, 5, 0.5), seed=i).set_index("feature")["drifted"]
        hits.append(d["x0"])
        wrong.append(d.drop("x0").any())
    print(f"power at 0.5 sd: one feature {single:.3f}, shifted feature among five {np.mean(hits):.3f}")
    assert single >= 0.9
    assert np.mean(hits) >= 0.9
    assert np.mean(wrong) <= 0.05  # the flag names the feature that moved


def test_result_columns_and_a_readable_shift() -> None:
    rng = np.random.default_rng(3)
    ref, cur = _frames(rng, 3, shift=1.0)
    ref["constant"], cur["constant"] = 1.0, 1.0
    ref["only_in_reference"] = 0.0
    out = feature_drift(ref, cur, seed=0)
    assert list(out["feature"]) == ["x0", "x1", "x2", "constant"]
    for col in ("feature", "psi", "psi_threshold", "psi_pvalue", "ks_stat", "ks_pvalue", "drifted"):
        assert col in out.columns
    row = out.set_index("feature").loc["x0"]
    assert row["drifted"] and row["psi"] > row["psi_threshold"] and row["mean_shift"] == pytest.approx(1.0, abs=0.2)
    assert row["alpha_per_test"] == pytest.approx(0.05 / 4)
    const = out.set_index("feature").loc["constant"]
    assert not const["drifted"] and const["psi"] == 0.0 and const["ks_pvalue"] == 1.0
    again = feature_drift(ref, cur, seed=0)
    pd.testing.assert_frame_equal(out, again)


def test_thresholds_scale_with_window_size() -> None:
    """The calibrated PSI threshold follows (1/n + 1/m): small windows need a larger PSI."""
    rng = np.random.default_rng(5)
    small = feature_drift(pd.DataFrame({"x": rng.normal(size=200)}), pd.DataFrame({"x": rng.normal(size=50)}))
    large = feature_drift(pd.DataFrame({"x": rng.normal(size=5000)}), pd.DataFrame({"x": rng.normal(size=2000)}))
    assert small["psi_threshold"].iloc[0] > 5 * large["psi_threshold"].iloc[0]
