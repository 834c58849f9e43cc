"""Feature importance, each stored under the name of the method that produced it.

- ``shap``: mean |TreeSHAP value| from the library's native contribution call (LightGBM
  ``pred_contrib``, XGBoost ``pred_contribs``) on a seeded row sample.
- ``variance``: for models without a native contribution call (the linear baseline): the variance
  of each feature's additive term in the prediction.  Asked for ``shap``, such a model gets this
  instead, labelled honestly.
- ``permutation``: scikit-learn's permutation importance (drop in R^2 when the column is shuffled).
- ``correlation``: |Spearman correlation| between feature and label (model-free).

Sequence models (``context_rows`` > 0) compute the same frame themselves on consecutive rows
(``brain_tasks.ml.deep.SequenceModel.importance``): ``shap`` from shap's gradient explainer (expected
gradients), permutation of a column before windowing, correlation as here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.metrics import r2_score

METHODS = ("shap", "variance", "permutation", "correlation")
PERMUTATION_REPEATS = 3
_RUN_COLUMNS = ("run", "run_id", "version", "as_of", "created_at", "ts")


def _sample(X: pd.DataFrame, y: np.ndarray, rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    if len(X) <= rows:
        return X, y
    # Sorted so the sample keeps time order; the choice itself is seeded.
    idx = np.sort(np.random.default_rng(seed).choice(len(X), size=rows, replace=False))
    return X.iloc[idx], y[idx]


def _shap(model: Any, X: pd.DataFrame) -> np.ndarray:
    contrib = model.contributions(X)
    return np.abs(contrib[:, :-1]).mean(axis=0)


def _variance(model: Any, X: pd.DataFrame) -> np.ndarray:
    return model.linear_terms(X).var(axis=0)


class _Scorable:
    """Adapter so scikit-learn's permutation importance can call any model with ``predict``."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def fit(self, X: Any, y: Any) -> _Scorable:
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.model.predict(X)


def _permutation(model: Any, X: pd.DataFrame, y: np.ndarray, seed: int) -> np.ndarray:
    result = permutation_importance(
        _Scorable(model),
        X,
        y,
        scoring=lambda est, data, target: r2_score(target, est.predict(data)),
        n_repeats=PERMUTATION_REPEATS,
        random_state=seed,
        n_jobs=1,
    )
    return np.asarray(result.importances_mean, dtype="float64")


def _correlation(X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    # A constant column has no rank correlation; leave it at 0 rather than ask scipy for a NaN.
    varying = (X.nunique() > 1).to_numpy()
    out = np.zeros(X.shape[1])
    if varying.any() and np.unique(y).size > 1:
        corr = X.loc[:, varying].corrwith(pd.Series(y, index=X.index), method="spearman")
        out[varying] = np.nan_to_num(np.abs(corr.to_numpy(dtype="float64")), nan=0.0)
    return out


def compute_importance(
    model: Any,
    X: pd.DataFrame,
    y: Any,
    methods: tuple[str, ...] | list[str] = ("shap", "permutation", "correlation"),
    sample_rows: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Long frame (method, feature, importance, rank); rank 1 is the most important within a method."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown importance methods {sorted(unknown)}; known: {METHODS}")
    window_model = getattr(model, "model", None) or model
    if getattr(window_model, "context_rows", 0):
        # A sequence model reads each row's preceding rows: it samples inside X's consecutive rows itself.
        return window_model.importance(X, y, tuple(methods), sample_rows, seed)
    names = list(getattr(model, "feature_names", X.columns))
    Xs, ys = _sample(X[names], np.asarray(y, dtype="float64"), sample_rows, seed)
    target = getattr(model, "model", None) or model  # a fitted Trainer delegates to its model
    has_contrib = hasattr(target, "contributions")
    frames = []
    done: set[str] = set()
    for method in methods:
        if method in ("shap", "variance"):
            method = "shap" if has_contrib and method == "shap" else "variance"
            if method == "variance" and not hasattr(target, "linear_terms"):
                raise TypeError(f"{type(target).__name__} has neither native contributions nor linear terms")
        if method in done:
            continue
        done.add(method)
        if method == "shap":
            values = _shap(target, Xs)
        elif method == "variance":
            values = _variance(target, Xs)
        elif method == "permutation":
            values = _permutation(target, Xs, ys, seed)
        else:
            values = _correlation(Xs, ys)
        frames.append(_ranked(method, names, values))
    return pd.concat(frames, ignore_index=True)


def _ranked(method: str, names: list[str], values: np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame({"method": method, "feature": names, "importance": np.nan_to_num(values, nan=0.0)})
    # Ties broken by feature name so ranks are reproducible.
    df = df.sort_values(["importance", "feature"], ascending=[False, True], kind="stable").reset_index(drop=True)
    df["rank"] = np.arange(1, len(df) + 1)
    return df


def top_k(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k best-ranked features of each method."""
    return df[df["rank"] <= k].sort_values(["method", "rank"], kind="stable").reset_index(drop=True)


def rank_changes(history_df: pd.DataFrame) -> pd.DataFrame:
    """Importance trends over runs, one row per (method, feature).

    ``history_df`` holds stacked ``compute_importance`` outputs plus a run column (the first of
    run, run_id, version, as_of, created_at, ts present; runs are ordered by it).  ``rank_change`` is
    first_rank - last_rank (positive = rising); ``rank_slope`` is the least-squares slope of rank per
    run (negative = rising).
    """
    run_col = next((c for c in _RUN_COLUMNS if c in history_df.columns), None)
    if run_col is None:
        raise ValueError(f"history_df needs one of the columns {_RUN_COLUMNS}")
    runs = np.sort(history_df[run_col].unique())
    order = {r: i for i, r in enumerate(runs)}
    h = history_df.assign(_i=history_df[run_col].map(order)).sort_values(["method", "feature", "_i"], kind="stable")
    rows = []
    for (method, feature), g in h.groupby(["method", "feature"], sort=True):
        i = g["_i"].to_numpy(dtype="float64")
        rank = g["rank"].to_numpy(dtype="float64")
        slope = float(np.polyfit(i, rank, 1)[0]) if np.unique(i).size >= 2 else 0.0
        rows.append(
            {
                "method": method,
                "feature": feature,
                "n_runs": len(g),
                "first_rank": int(rank[0]),
                "last_rank": int(rank[-1]),
                "rank_change": int(rank[0] - rank[-1]),
                "mean_rank": float(rank.mean()),
                "best_rank": int(rank.min()),
                "rank_slope": slope,
                "last_importance": float(g["importance"].iloc[-1]),
            }
        )
    return pd.DataFrame(rows).sort_values(["method", "last_rank"], kind="stable").reset_index(drop=True)
