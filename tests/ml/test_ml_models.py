"""Trainers: determinism, native formats, SHAP exactness, importance."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import shap
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from brain_tasks.errors import DataError
from brain_tasks.ml.importance import compute_importance, rank_changes, top_k
from brain_tasks.ml.models import TABULAR_TYPES as MODEL_TYPES  # the sequence models: test_deep.py
from brain_tasks.ml.models import DEFAULT_PARAMS, load_model, make_trainer


def _data(n: int = 1500, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 6)), columns=["signal", "weak", "n1", "n2", "n3", "n4"])
    X.loc[X.index % 11 == 0, "n2"] = np.nan  # models must cope with missing values
    y = 0.01 * X["signal"] + 0.004 * X["weak"] + 0.01 * rng.normal(size=n)
    return X, y.to_numpy()


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_same_seed_gives_byte_identical_artifacts_that_reload_and_predict_identically(model_type: str) -> None:
    X, y = _data()
    a = make_trainer(model_type, seed=7).fit(X, y)
    b = make_trainer(model_type, seed=7).fit(X, y)
    assert a.to_bytes() == b.to_bytes()
    la, lb = load_model(a.artifact_format, a.to_bytes()), load_model(b.artifact_format, b.to_bytes())
    assert np.array_equal(la.predict(X), lb.predict(X))
    assert np.array_equal(la.predict(X), a.predict(X))
    assert la.feature_names == list(X.columns)
    # Column order at predict time does not matter: features are matched by name.
    assert np.array_equal(la.predict(X[X.columns[::-1]]), a.predict(X))
    assert np.corrcoef(a.predict(X), X["signal"])[0, 1] > 0.8


def test_seed_is_used() -> None:
    X, y = _data()
    assert (
        make_trainer("lightgbm", seed=1).fit(X, y).to_bytes() != make_trainer("lightgbm", seed=2).fit(X, y).to_bytes()
    )
    assert make_trainer("xgboost", seed=1).fit(X, y).to_bytes() != make_trainer("xgboost", seed=2).fit(X, y).to_bytes()


def test_artifacts_are_native_formats_not_pickle() -> None:
    X, y = _data()
    formats = {}
    for model_type in MODEL_TYPES:
        t = make_trainer(model_type).fit(X, y)
        data = t.to_bytes()
        assert not data.startswith(b"\x80")  # pickle protocol marker
        formats[model_type] = (t.artifact_format, data)
    assert formats["lightgbm"][0] == "lightgbm-text" and formats["lightgbm"][1].startswith(b"tree\nversion=")
    assert formats["xgboost"][0] == "xgboost-ubj" and formats["xgboost"][1][:1] == b"{"
    assert formats["baseline"][0] == "linear-json"
    doc = json.loads(formats["baseline"][1])
    assert doc["feature_names"] == list(X.columns) and len(doc["coef"]) == 6
    with pytest.raises(ValueError):
        load_model("pickle", b"\x80\x04")


def test_baseline_predicts_like_the_scikit_learn_pipeline() -> None:
    X, y = _data()
    model = make_trainer("baseline", {"alpha": 3.0}).fit(X, y)
    ref = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler(), Ridge(alpha=3.0)).fit(X.to_numpy(), y)
    np.testing.assert_allclose(model.predict(X), ref.predict(X.to_numpy()), rtol=0, atol=1e-12)


def test_params_override_defaults_and_bad_input_is_refused() -> None:
    t = make_trainer("lightgbm", {"num_boost_round": 7})
    assert t.params["num_boost_round"] == 7 and t.params["learning_rate"] == DEFAULT_PARAMS["lightgbm"]["learning_rate"]
    X, y = _data(1500)
    assert make_trainer("lightgbm", {"num_boost_round": 7}).fit(X, y).model.booster.num_trees() == 7
    with pytest.raises(ValueError):
        make_trainer("random_forest")
    with pytest.raises(DataError):
        make_trainer("xgboost").fit(X, np.full(len(X), np.nan))
    with pytest.raises(DataError):
        make_trainer("baseline").fit(X, y[:-1])


@pytest.mark.parametrize("model_type", ["lightgbm", "xgboost"])
def test_shap_is_additive_and_equals_shap_tree_explainer(model_type: str) -> None:
    X, y = _data()
    model = load_model(*(lambda t: (t.artifact_format, t.to_bytes()))(make_trainer(model_type, seed=3).fit(X, y)))
    rows = X.iloc[:300]
    contrib = model.contributions(rows)
    assert contrib.shape == (300, 7)
    np.testing.assert_allclose(contrib.sum(axis=1), model.predict(rows), rtol=0, atol=1e-6)
    explainer = shap.TreeExplainer(model.booster)
    values = explainer.shap_values(rows)
    np.testing.assert_allclose(contrib[:, :-1], values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(contrib[:, -1], np.ravel(explainer.expected_value)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_importance_finds_the_signal_under_each_method(model_type: str) -> None:
    X, y = _data(2500)
    model = make_trainer(model_type).fit(X, y)
    imp = compute_importance(model, X, y, sample_rows=1000, seed=0)
    expected = {"shap" if model_type != "baseline" else "variance", "permutation", "correlation"}
    assert set(imp["method"]) == expected
    assert list(imp.columns) == ["method", "feature", "importance", "rank"]
    for method, g in imp.groupby("method"):
        assert sorted(g["rank"]) == list(range(1, 7))
        top2 = g.sort_values("rank")["feature"].tolist()[:2]
        assert top2 == ["signal", "weak"], (method, top2)
    again = compute_importance(model, X, y, sample_rows=1000, seed=0)
    pd.testing.assert_frame_equal(imp, again)
    assert set(top_k(imp, 1)["feature"]) == {"signal"} and len(top_k(imp, 2)) == 6


def test_shap_importance_is_mean_absolute_contribution_on_the_seeded_sample() -> None:
    X, y = _data(3000)
    model = make_trainer("lightgbm").fit(X, y)
    imp = compute_importance(model, X, y, methods=("shap",), sample_rows=500, seed=4)
    idx = np.sort(np.random.default_rng(4).choice(len(X), 500, replace=False))
    expected = np.abs(model.model.contributions(X.iloc[idx])[:, :-1]).mean(axis=0)
    got = imp.set_index("feature").loc[list(X.columns), "importance"].to_numpy()
    np.testing.assert_allclose(got, expected)


def test_rank_changes_tracks_rising_and_falling_features() -> None:
    rows = []
    for run, order in enumerate([["a", "b", "c"], ["b", "a", "c"], ["c", "b", "a"]]):
        for rank, feature in enumerate(order, start=1):
            rows.append(
                {
                    "as_of": f"2024-01-0{run + 1}",
                    "method": "shap",
                    "feature": feature,
                    "importance": 1.0 / rank,
                    "rank": rank,
                }
            )
    trend = rank_changes(pd.DataFrame(rows)).set_index("feature")
    assert trend.loc["c", "rank_change"] == 2 and trend.loc["a", "rank_change"] == -2
    assert trend.loc["c", "rank_slope"] < 0 < trend.loc["a", "rank_slope"]
    assert trend.loc["b", "n_runs"] == 3 and trend.loc["b", "mean_rank"] == pytest.approx(5 / 3)
    with pytest.raises(ValueError):
        rank_changes(pd.DataFrame(rows).drop(columns="as_of"))
