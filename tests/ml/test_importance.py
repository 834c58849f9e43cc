"""Out-of-sample importance: the cheap estimators agree with the ones they replaced."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import r2_score

from brain_tasks.ml import importance as imp
from brain_tasks.ml.models import make_trainer


def _planted(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """y = 0.5 signal + 0.2 weak + noise; two noise columns, one with gaps."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.standard_normal((n, 4)), columns=["noise_a", "signal", "weak", "gappy"])
    y = 0.5 * X["signal"].to_numpy() + 0.2 * X["weak"].to_numpy() + rng.standard_normal(n)
    X.loc[X.index[::9], "gappy"] = np.nan
    return X, y


def test_linear_permutation_is_the_mean_of_many_shuffles() -> None:
    """The closed form is the limit of the batched shuffle estimator the baseline used before: 4000
    seeded shuffles per column land within a few Monte-Carlo standard errors of it."""
    X, y = _planted(3000, seed=0)
    model = make_trainer("baseline").fit(X.iloc[:2500], y[:2500]).model
    Xt, yt = X.iloc[2500:], y[2500:]
    exact = imp._linear_permutation(model.linear_terms(Xt), model.intercept, yt)
    shuffles = np.stack([imp._permutation_batched(model, Xt, yt, seed, 100) for seed in range(40)])
    mean = shuffles.mean(axis=0)
    se = shuffles.std(axis=0, ddof=1) / math.sqrt(len(shuffles))
    assert np.all(np.abs(mean - exact) <= 4 * se + 1e-12), (mean, exact, se)
    assert list(X.columns[np.argsort(-exact)][:2]) == ["signal", "weak"]


def test_batched_r2_drops_equal_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = rng.standard_normal(200)
    base = y + rng.standard_normal(200)
    shuffled = base[None, :] + rng.standard_normal((5, 200))
    expected = [r2_score(y, base) - r2_score(y, row) for row in shuffled]
    np.testing.assert_allclose(imp._r2_drops(y, base, shuffled), expected, rtol=1e-12, atol=1e-14)


def test_rank_correlation_equals_spearman_per_column() -> None:
    X, y = _planted(400, seed=1)
    X["constant"] = 1.0
    X["ties"] = np.round(X["signal"])
    got = imp._rank_correlation(X, y)
    for j, name in enumerate(X.columns):
        col = X[name].to_numpy()
        ok = np.isfinite(col)
        want = 0.0 if np.ptp(col[ok]) == 0 else abs(stats.spearmanr(col[ok], y[ok]).statistic)
        assert got[j] == pytest.approx(want, abs=1e-12), name


def test_aggregate_is_the_row_weighted_mean_ranked_by_importance_then_name() -> None:
    folds = [
        pd.DataFrame({"method": ["shap"] * 3 + ["permutation"] * 3, "feature": ["a", "b", "c"] * 2,
                      "importance": [1.0, 2.0, 3.0, 0.1, np.nan, 0.3], "n_rows": [10] * 3 + [20] * 3}),
        pd.DataFrame({"method": ["shap"] * 3 + ["permutation"] * 3, "feature": ["c", "b", "a"] * 2,
                      "importance": [0.0, 2.0, 4.0, 0.1, 0.0, 0.3], "n_rows": [30] * 3 + [20] * 3}),
    ]
    out = imp.aggregate_importance(folds)
    assert list(out.columns) == ["method", "feature", "importance", "rank"]
    shap = out[out["method"] == "shap"]
    assert list(shap["feature"]) == ["a", "b", "c"] and list(shap["rank"]) == [1, 2, 3]
    np.testing.assert_allclose(shap["importance"], [(10 * 1 + 30 * 4) / 40, 2.0, (10 * 3 + 0) / 40])
    perm = out[out["method"] == "permutation"]
    # a and c tie at 0.2: broken by name.  A missing value counts as zero.
    assert list(perm["feature"]) == ["a", "c", "b"] and list(perm["rank"]) == [1, 2, 3]
    np.testing.assert_allclose(perm["importance"], [0.2, 0.2, 0.0])
    assert list(out["method"].drop_duplicates()) == ["shap", "permutation"]


@pytest.mark.parametrize("model_type", ["baseline", "lightgbm"])
def test_fold_importance_ranks_the_planted_feature_first(model_type: str) -> None:
    X, y = _planted(3000, seed=2)
    model = make_trainer(model_type, {"num_boost_round": 40} if model_type == "lightgbm" else {}).fit(
        X.iloc[:2000], y[:2000])
    folds = [imp.fold_importance(model, X.iloc[a:a + 500], y[a:a + 500], sample_rows=250, seed=k)
             for k, a in enumerate((2000, 2500))]
    out = imp.aggregate_importance(folds)
    for method in imp.OOS_METHODS:
        assert out[out["method"] == method].iloc[0]["feature"] == "signal", out[out["method"] == method]
    # The linear model's SHAP and permutation use every sampled row; TreeSHAP half of them.
    shap_rows = folds[0].loc[folds[0]["method"] == "shap", "n_rows"].iloc[0]
    assert shap_rows == (250 if model_type == "baseline" else 125)


def test_train_and_evaluate_records_what_training_and_importance_cost(eth: pd.DataFrame) -> None:
    from brain_tasks.ml.pipeline import TrainConfig, train_and_evaluate

    config = TrainConfig(n_folds=3, importance_rows=300)
    without = train_and_evaluate(eth.iloc[:3000], "baseline", config, with_importance=False)
    assert without.importance is None and without.importance_cpu_s == 0.0 and without.train_cpu_s > 0
    with_ = train_and_evaluate(eth.iloc[:3000], "baseline", config)
    assert with_.importance is not None and with_.importance_cpu_s > 0 and with_.train_cpu_s > 0


@pytest.mark.parametrize("model_type", ["lightgbm", "xgboost"])
def test_mean_shap_ranks_a_planted_volume_signal_first_with_the_default_params(model_type: str) -> None:
    """Issue 25, item 10, as found: 20 days of 5m bars whose log volume carries an AR(1) state that
    moves the next return; the default TrainConfig and model params.  Out-of-sample permutation put a
    volume feature first in 3 of 4 seeds, but the stored mean |SHAP| in at most 1 of 4: each fold's
    trees (15 leaves, 100 rows a leaf) leaned on noise (rv_288, ret_96, tod_sin), and the walk-forward
    Sharpe was negative.  With the held-back defaults both measures find it in at least 3 of 4 seeds
    (bench/shap_planted.py prints the full table)."""
    from brain_tasks.ml.pipeline import TrainConfig, train_and_evaluate
    from tests.planted_volume import PLANTED_FEATURES, planted_volume_candles

    first = {"permutation": 0, "shap": 0}
    for seed in range(4):
        imp = train_and_evaluate(planted_volume_candles(5760, seed), model_type, TrainConfig()).importance
        for method in first:
            first[method] += imp[imp["method"] == method].iloc[0]["feature"] in PLANTED_FEATURES
    assert first["permutation"] >= 3 and first["shap"] >= 3, first
