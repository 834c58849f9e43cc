"""Feature importance, each stored under the name of the method that produced it.

Out of sample (``fold_importance`` + ``aggregate_importance``, used by ``pipeline.train_and_evaluate``):
each walk-forward fold's own model is explained on its own test block, and the folds are averaged
weighted by their test rows.  In-sample importance (a final model on its own training rows) rewards
what the model memorised: over a 20-day history it ranked day-of-week first, acting as a day id, above a
planted informative feature.  Out of sample, memorised ids cannot help, so they cannot rank.  There:

- ``shap``: mean |SHAP value|: TreeSHAP for the tree models; for the linear baseline the exact SHAP
  value coef_j * (x_j - mean_j) / scale_j (interventional, the training mean as background), i.e. its
  additive term;
- ``permutation``: drop in out-of-sample R^2 when the column is shuffled (``permutation_repeats``
  shuffles per fold, 1 by default: the folds average it); for the linear baseline its expectation over
  all shuffles, in closed form from the additive terms (exact and cheaper than one shuffle);
- ``correlation``: |Spearman correlation| of feature and label on the test rows (model-free).

Rows are capped per fold (seeded, time-ordered sample) so importance costs a fraction of training
(``TrainResult.importance_cpu_s`` records it; bench/importance.py prints it next to training's CPU).
``calendar_features_to_drop`` names the calendar features that a history too short to repeat their
cycle would turn into ids; the pipeline leaves them out.

The in-sample ``compute_importance`` below remains for explaining a stored model on given rows:

- ``shap``: mean |TreeSHAP value| from the library's native contribution call (LightGBM
  ``pred_contrib``, XGBoost ``pred_contribs``) on a seeded row sample.
- ``variance``: for models without a native contribution call (the linear baseline): the variance
  of each feature's additive term in the prediction.  Asked for ``shap``, such a model gets this
  instead, labelled honestly.
- ``permutation``: scikit-learn's permutation importance (drop in R^2 when the column is shuffled).
- ``correlation``: |Spearman correlation| between feature and label (model-free).

Sequence models (``context_rows`` > 0) compute the same frames themselves on consecutive rows
(``brain_tasks.ml.deep.SequenceModel.importance`` / ``fold_importance``): ``shap`` from shap's gradient
explainer (expected gradients, summed over the window), permutation of a column before windowing,
correlation as here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.inspection import permutation_importance
from sklearn.metrics import r2_score

METHODS = ("shap", "variance", "permutation", "correlation")
OOS_METHODS = ("shap", "permutation", "correlation")
# A calendar feature needs its cycle repeated this many times in the history before a model can learn
# a seasonality from it rather than use it to tell days (or weeks) apart.
MIN_CALENDAR_CYCLES = 8
CALENDAR_CYCLES = {"tod_": pd.Timedelta(days=1), "dow_": pd.Timedelta(days=7)}
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


def _r2_drops(y: np.ndarray, base: np.ndarray, shuffled: np.ndarray) -> np.ndarray:
    """R^2(y, base) - R^2(y, row) for every row of ``shuffled``: (SSE_row - SSE_base) / SST, the same
    quantity as two ``r2_score`` calls, without their per-call validation (which cost more than the
    predictions on a few hundred rows)."""
    sst = float(np.sum((y - y.mean()) ** 2))
    sse_base = float(np.sum((y - base) ** 2))
    return (np.sum((y[None, :] - shuffled) ** 2, axis=1) - sse_base) / sst


def _permutation_batched(model: Any, X: pd.DataFrame, y: np.ndarray, seed: int, repeats: int) -> np.ndarray:
    """Drop in R^2 when each column is shuffled, averaged over ``repeats`` shuffles.

    Same quantity as scikit-learn's permutation importance, but every shuffled copy of the rows is
    stacked into one matrix and predicted in one call: per-call overhead, not arithmetic, dominates
    tree prediction on a few hundred rows.
    """
    base = X.to_numpy(dtype="float64", na_value=np.nan)
    n, p = base.shape
    if n < 2 or np.var(y) == 0:
        return np.zeros(p)
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(repeats):
        for j in range(p):
            block = base.copy()
            block[:, j] = block[rng.permutation(n), j]
            blocks.append(block)
    stacked = pd.DataFrame(np.vstack([base, *blocks]), columns=X.columns)
    pred = np.asarray(model.predict(stacked), dtype="float64").reshape(1 + repeats * p, n)
    return _r2_drops(y, pred[0], pred[1:]).reshape(repeats, p).mean(axis=0)


def _linear_permutation(terms: np.ndarray, intercept: float, y: np.ndarray) -> np.ndarray:
    """Expected drop in R^2 when one column of a linear model's input is shuffled: the limit of
    ``_permutation_batched`` over infinitely many shuffles, in closed form.

    Shuffling column j replaces its additive term t by t[pi], so the residual e becomes e + t - t[pi];
    over uniform permutations pi, E[SSE_pi] - SSE = 2n (cov(e, t) + var(t)) (population moments), and
    the R^2 drop is that over SST = n var(y).  Imputation is per cell, so shuffling the raw column
    shuffles its term exactly.
    """
    n, p = terms.shape
    if n < 2 or np.var(y) == 0:
        return np.zeros(p)
    e = y - terms.sum(axis=1) - intercept
    t = terms - terms.mean(axis=0)
    return 2.0 * ((e - e.mean()) @ t / n + (t * t).mean(axis=0)) / np.var(y)


def _rank_correlation(X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    """|Spearman correlation| per column, NaN rows of a column left out; 0 for a constant column."""
    m = X.to_numpy(dtype="float64", na_value=np.nan)
    out = np.zeros(m.shape[1])
    if len(y) < 3 or np.ptp(y) == 0:
        return out
    ry = stats.rankdata(y)
    # Columns without NaN are ranked together in one call (the common case); the rest one by one.
    full = np.isfinite(m).all(axis=0)
    if full.any():
        rx = stats.rankdata(m[:, full], axis=0)
        rx -= rx.mean(axis=0)
        dy = ry - ry.mean()
        denom = np.sqrt((rx * rx).sum(axis=0) * float(dy @ dy))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[full] = np.abs(np.where(denom > 0, (dy @ rx) / denom, 0.0))
    for j in np.flatnonzero(~full):
        ok = np.isfinite(m[:, j])
        if ok.sum() > 2 and np.ptp(m[ok, j]) > 0 and np.ptp(y[ok]) > 0:
            out[j] = abs(float(np.corrcoef(stats.rankdata(m[ok, j]), stats.rankdata(y[ok]))[0, 1]))
    return np.nan_to_num(out, nan=0.0)


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
    return _ranked_frame([(method, names, values)])


def _ranked_frame(parts: list[tuple[str, list[str], np.ndarray]]) -> pd.DataFrame:
    """One long frame (method, feature, importance, rank) from (method, features, values) parts, each
    sorted by importance, ties broken by feature name so ranks are reproducible."""
    methods, features, values, ranks = [], [], [], []
    for method, names, vals in parts:
        vals = np.nan_to_num(np.asarray(vals, dtype="float64"), nan=0.0)
        order = np.lexsort((np.asarray(names, dtype=str), -vals))
        methods += [method] * len(order)
        features += [names[i] for i in order]
        values.append(vals[order])
        ranks.append(np.arange(1, len(order) + 1))
    return pd.DataFrame({"method": methods, "feature": features, "importance": np.concatenate(values),
                         "rank": np.concatenate(ranks)})


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


def calendar_features_to_drop(names: list[str], history: pd.Timedelta) -> list[str]:
    """Calendar features (``tod_*``: daily cycle, ``dow_*``: weekly) whose cycle repeats fewer than
    ``MIN_CALENDAR_CYCLES`` times in ``history``: over 20 days day-of-week takes each value on two or
    three days only and acts as a day id that a model memorises."""
    out = []
    for name in names:
        for prefix, cycle in CALENDAR_CYCLES.items():
            if name.startswith(prefix) and history < MIN_CALENDAR_CYCLES * cycle:
                out.append(name)
    return out


def fold_importance(
    model: Any,
    X_test: pd.DataFrame,
    y_test: Any,
    *,
    methods: tuple[str, ...] = OOS_METHODS,
    sample_rows: int = 200,
    seed: int = 0,
    permutation_repeats: int = 1,
    shap_rows: int | None = None,
) -> pd.DataFrame:
    """Unranked importance (method, feature, importance, n_rows) of one fold's model on its test rows.

    Permutation and correlation use ``sample_rows`` sampled test rows; TreeSHAP the first ``shap_rows``
    of them (default half: TreeSHAP costs about ten training rows per row explained, and mean |SHAP|
    settles on fewer rows than a permutation drop).  A linear model (``linear_terms``, no native
    contributions) gets exact SHAP and the expected permutation drop on all sampled rows, in closed
    form (``permutation_repeats`` does not apply).  ``shap`` is skipped for a model with neither
    native contributions nor linear terms (it then gets permutation and correlation only).
    """
    unknown = set(methods) - set(OOS_METHODS)
    if unknown:
        raise ValueError(f"unknown out-of-sample importance methods {sorted(unknown)}; known: {OOS_METHODS}")
    window_model = getattr(model, "model", None) or model
    if getattr(window_model, "context_rows", 0):
        # A sequence model reads each row's preceding rows: X_test starts with its context rows (inputs
        # only, never scored) and the model samples inside the consecutive rows itself.
        return window_model.fold_importance(X_test, y_test, methods=methods, sample_rows=sample_rows, seed=seed,
                                            permutation_repeats=permutation_repeats, shap_rows=shap_rows)
    names = list(getattr(model, "feature_names", X_test.columns))
    X_test = X_test if list(X_test.columns) == names else X_test[names]
    Xs, ys = _sample(X_test, np.asarray(y_test, dtype="float64"), sample_rows, seed)
    target = getattr(model, "model", None) or model
    linear = not hasattr(target, "contributions") and hasattr(target, "linear_terms")
    # A linear model's terms give exact SHAP values and the expected permutation drop in closed form,
    # so both use every sampled row; TreeSHAP costs about ten training rows per row explained.
    terms = target.linear_terms(Xs) if linear else None
    n_shap = max(1, (len(Xs) + 1) // 2 if shap_rows is None else min(shap_rows, len(Xs)))
    parts = []
    for method in methods:
        n_rows = len(Xs)
        if method == "shap":
            if terms is not None:
                values = np.abs(terms).mean(axis=0)  # exact linear SHAP
            elif hasattr(target, "contributions"):
                # Every other sampled row: still spread over the whole test block.
                shap_x = Xs.iloc[:: max(1, len(Xs) // n_shap)].iloc[:n_shap]
                values, n_rows = _shap(target, shap_x), len(shap_x)
            else:
                continue
        elif method == "permutation":
            values = (_linear_permutation(terms, target.intercept, ys) if terms is not None
                      else _permutation_batched(target, Xs, ys, seed, permutation_repeats))
        else:
            values = _rank_correlation(Xs, ys)
        parts.append((method, values, n_rows))
    p = len(names)
    return pd.DataFrame({"method": np.repeat([m for m, _, _ in parts], p), "feature": names * len(parts),
                         "importance": np.concatenate([v for _, v, _ in parts]),
                         "n_rows": np.repeat([n for _, _, n in parts], p)})


def aggregate_importance(folds: list[pd.DataFrame]) -> pd.DataFrame:
    """Rank the folds' importances: mean per (method, feature) weighted by each fold's rows, then
    ``compute_importance``'s long frame (method, feature, importance, rank)."""
    if not folds:
        raise ValueError("no fold importances to aggregate")
    stacked = pd.concat(folds, ignore_index=True)
    method = stacked["method"].to_numpy()
    weight = stacked["n_rows"].to_numpy(dtype="float64")
    weighted = stacked["importance"].fillna(0.0).to_numpy(dtype="float64") * weight
    parts = []
    for m in dict.fromkeys(method):
        rows = method == m
        names = list(dict.fromkeys(stacked["feature"].to_numpy()[rows]))
        codes = pd.Index(names).get_indexer(stacked["feature"].to_numpy()[rows])
        sums = np.bincount(codes, weights=weighted[rows], minlength=len(names))
        parts.append((m, names, sums / np.bincount(codes, weights=weight[rows], minlength=len(names))))
    return _ranked_frame(parts)
