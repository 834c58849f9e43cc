"""Sequence models (lstm, cnn, transformer): reproducible safetensors artifacts, causal windows,
importance, a planted temporal pattern that only they can see, and the pipeline on a real pair."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import load_pair

from brain_tasks.ml.importance import compute_importance
from brain_tasks.ml.models import SEQUENCE_TYPES, TABULAR_TYPES, load_model, make_trainer
from brain_tasks.ml.pipeline import TrainConfig, train_and_evaluate
from tests.workers import REPO

# Small enough for seconds per fit; the defaults are what bench/train.py measures.
TINY = {"window": 8, "purge": 2, "hidden": 8, "epochs": 2, "batch_size": 64, "min_val_rows": 50}


def _rows(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A label that depends on the previous row's `signal` (so only a window sees it)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=["signal", "a", "b", "c", "d"])
    X.loc[X.index % 13 == 0, "c"] = np.nan  # missing values become the training mean
    y = 0.01 * X["signal"].shift(1).fillna(0.0) + 0.003 * rng.normal(size=n)
    return X, y.to_numpy()


@pytest.mark.parametrize("model_type", SEQUENCE_TYPES)
def test_two_trainings_give_identical_bytes_and_the_artifact_reloads_to_identical_predictions(
    model_type: str,
) -> None:
    X, y = _rows()
    a = make_trainer(model_type, TINY, seed=3).fit(X, y)
    b = make_trainer(model_type, TINY, seed=3).fit(X, y)
    data = a.to_bytes()
    assert data == b.to_bytes()
    assert a.artifact_format == "safetensors"
    # A plain safetensors file (no pickle): 8-byte header length, then a JSON header whose metadata holds
    # the description.
    (length,) = struct.unpack("<Q", data[:8])
    assert data[8:9] == b"{"
    header = json.loads(data[8: 8 + length])
    description = json.loads(header["__metadata__"]["brain_tasks"])
    assert description["model_type"] == model_type and description["feature_names"] == list(X.columns)
    assert description["params"]["window"] == 8 and len(description["scaling"]["mean"]) == 5
    loaded = load_model("safetensors", data)
    assert np.array_equal(loaded.predict(X), a.predict(X))
    assert loaded.context_rows == a.context_rows == 7
    assert np.array_equal(loaded.predict(X[X.columns[::-1]]), a.predict(X))  # features matched by name
    assert make_trainer(model_type, TINY, seed=4).fit(X, y).to_bytes() != data  # the seed is used


@pytest.mark.parametrize("model_type", SEQUENCE_TYPES)
def test_a_prediction_reads_only_its_own_row_and_the_context_rows_before_it(model_type: str) -> None:
    X, y = _rows()
    model = make_trainer(model_type, TINY, seed=0).fit(X, y)
    full = model.predict(X)
    assert full.shape == (len(X),) and np.isfinite(full).all()
    # Changing the future does not change the past ...
    future = X.copy()
    future.iloc[400:] = 99.0
    np.testing.assert_allclose(model.predict(future)[:400], full[:400], rtol=0, atol=1e-6)
    # ... and the pipeline's seam: a block predicted with `context_rows` rows before it equals the same
    # rows predicted inside the whole frame.
    c = model.context_rows
    np.testing.assert_allclose(model.predict(X.iloc[300 - c: 350])[-50:], full[300:350], rtol=0, atol=1e-6)
    # Rows further back do not matter once the window is full.
    old = X.copy()
    old.iloc[: 300 - c] = -5.0
    np.testing.assert_allclose(model.predict(old)[300:350], full[300:350], rtol=0, atol=1e-6)


def test_scaling_comes_from_the_fitted_rows_before_the_purged_validation_block() -> None:
    X, y = _rows()
    params = {**TINY, "val_fraction": 0.2, "purge": 5}
    model = make_trainer("cnn", params, seed=0).fit(X, y).model
    training = model.description["training"]
    fit_end = training["fit_rows"]
    assert fit_end == len(X) - 120 - 5 and training["validation_rows"] == 120
    np.testing.assert_allclose(model.mean, X.iloc[:fit_end].mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(model.scale, X.iloc[:fit_end].std(ddof=0).to_numpy(), rtol=1e-12)
    # Rows after the fitted part (validation, purge) leave the scaling untouched.
    shifted = X.copy()
    shifted.iloc[fit_end:] += 1000.0
    other = make_trainer("cnn", params, seed=0).fit(shifted, y).model
    assert other.description["scaling"] == model.description["scaling"]


def test_importance_of_a_window_model_has_the_usual_frame_and_finds_the_lagged_signal() -> None:
    X, y = _rows(1500)
    params = {**TINY, "epochs": 8, "hidden": 16, "learning_rate": 5e-3}
    model = make_trainer("lstm", params, seed=0).fit(X, y)
    imp = compute_importance(model, X, y, sample_rows=400, seed=0)
    assert list(imp.columns) == ["method", "feature", "importance", "rank"]
    assert set(imp["method"]) == {"shap", "permutation", "correlation"}
    for method in ("shap", "permutation"):
        g = imp[imp["method"] == method]
        assert sorted(g["rank"]) == [1, 2, 3, 4, 5]
        assert g.iloc[0]["feature"] == "signal", (method, g)
    pd.testing.assert_frame_equal(imp, compute_importance(model, X, y, sample_rows=400, seed=0))
    # The expected-gradients values add up to the prediction minus the background's mean, approximately.
    contrib = model.model.contributions(X, np.arange(600, 620))
    err = contrib.sum(axis=1) - model.predict(X)[600:620]
    assert np.abs(err).mean() < 0.5 * np.abs(model.predict(X)[600:620] - contrib[:, -1]).mean() + 1e-6


def test_torch_stays_out_of_the_client_the_app_and_the_non_ml_commands() -> None:
    code = ("import sys, brain_tasks.client, brain_tasks.app, brain_tasks.cli, brain_tasks.ml.pipeline, "
            "brain_tasks.ml.models; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


# --- the planted temporal pattern ----------------------------------------------------------------


def order_market(n: int, strength: float, seed: int) -> pd.DataFrame:
    """5m candles in blocks of four bars A B X C.  A, B and X move up or down by a coin flip; C goes
    the way the order of A and B points (up after down-then-up, down after up-then-down) with probability
    0.5 + strength / 2, and is three times as large.  Decided at X's close, C is the next bar.

    Bar-level features cannot carry this: every return feature at X sums A and B together (ret_3 and
    longer) or leaves both out (ret_1), and volatility features ignore direction; only a window that
    holds A's and B's own one-bar returns in order does.  strength 0 is pure noise of the same shape."""
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], n)
    is_c = (np.arange(n) % 4 == 3) & (np.arange(n) >= 3)
    c = np.flatnonzero(is_c)
    p_up = 0.5 + strength * (sign[c - 2] - sign[c - 3]) / 4
    sign[c] = np.where(rng.random(len(c)) < p_up, 1.0, -1.0)
    r = sign * 0.002 * np.exp(0.3 * rng.standard_normal(n)) * np.where(is_c, 3.0, 1.0)
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = 0.0005 * np.abs(rng.standard_normal(n)) * close
    return pd.DataFrame({
        "ts": pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) + wick, "low": np.minimum(open_, close) - wick,
        "close": close, "volume": rng.lognormal(3.0, 0.5, n),
    })


_SMALL = {"hidden": 16, "epochs": 30, "patience": 8, "dropout": 0.0, "batch_size": 64, "learning_rate": 5e-3}
# Filled at the decision close (lag 0) and one bar ahead: the pattern is about the very next bar.
PLANTED = TrainConfig(horizon=1, execution_lag=0, embargo=1, cost_bps=0.0, n_folds=2, window=4, min_rows=500,
                      regime_lookback=500, lstm_params=_SMALL, cnn_params=_SMALL,
                      transformer_params={**_SMALL, "layers": 1})


def _t_stat(model_type: str, candles: pd.DataFrame) -> float:
    s = train_and_evaluate(candles, model_type, PLANTED, with_importance=False).oos["strategy_return"].to_numpy()
    return float(s.mean() / s.std(ddof=1) * math.sqrt(len(s)))


@pytest.mark.slow
def test_sequence_models_find_a_planted_order_pattern_that_tabular_models_cannot_see() -> None:
    planted = order_market(4000, 1.0, seed=0)
    tabular = {m: _t_stat(m, planted) for m in TABULAR_TYPES}
    assert all(abs(t) < 3.0 for t in tabular.values()), tabular
    sequence = {m: _t_stat(m, planted) for m in SEQUENCE_TYPES}
    assert all(t > 4.0 for t in sequence.values()), sequence


@pytest.mark.slow
def test_sequence_models_on_pure_noise_are_centred_on_zero() -> None:
    noise = {m: _t_stat(m, order_market(4000, 0.0, seed=0)) for m in SEQUENCE_TYPES}
    assert all(abs(t) < 3.0 for t in noise.values()), noise


# --- the pipeline on a real pair -------------------------------------------------------------------


def test_lstm_goes_through_the_pipeline_on_a_real_pair() -> None:
    candles = load_pair("LTC")
    config = TrainConfig(n_folds=3, window=16, importance_rows=200,
                         lstm_params={"hidden": 16, "epochs": 3, "batch_size": 128})
    result = train_and_evaluate(candles, "lstm", config)
    oos = result.oos
    assert oos["ts"].is_unique and np.isfinite(oos[["pred", "label", "strategy_return"]].to_numpy()).all()
    for fold in result.folds:  # out of sample after the purge and embargo; context rows carry no labels
        assert fold["test_start"] > fold["train_end"] + pd.Timedelta("5min") * 26
    assert result.metrics["n_bars"] == len(oos) and all(math.isfinite(v) for v in result.metrics.values())
    assert result.artifact_format == "safetensors" and result.params["window"] == 16
    assert result.params["purge"] == config.horizon + config.execution_lag + config.embargo
    model = load_model(result.artifact_format, result.artifact)
    assert model.feature_names == result.feature_names and model.context_rows == 15
    imp = result.importance
    assert set(imp["method"]) == {"shap", "permutation", "correlation"}
    assert set(imp["feature"]) == set(result.feature_names)


def test_the_window_and_the_sequence_params_are_part_of_the_config_hash() -> None:
    base = TrainConfig()
    assert TrainConfig(window=16).config_hash() != base.config_hash()
    assert TrainConfig(lstm_params={"hidden": 8}).config_hash() != base.config_hash()
    assert TrainConfig.from_dict(json.loads(json.dumps(base.to_dict()))) == base
    params = TrainConfig(window=16, lstm_params={"hidden": 8}).model_params("lstm")
    assert params == {"window": 16, "purge": 26, "hidden": 8}
    assert "window" not in base.model_params("lightgbm")
