"""The whole per-symbol computation: features -> labels -> walk-forward -> metrics -> final model.

Every metric comes from out-of-sample walk-forward predictions (purged, embargoed); the final model
is trained on the full window only to be stored and explained, never to be scored.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from brain_tasks.errors import DataError
from brain_tasks.ml.features import (
    CANDLE_FEATURES,
    FEATURE_SET_VERSION,
    feature_set_hash,
    make_features,
    timeframe_seconds,
    usable_candles,
)
from brain_tasks.ml.importance import (
    aggregate_importance,
    calendar_features_to_drop,
    compute_importance,
    fold_importance,
)
from brain_tasks.ml.labels import bar_returns, forward_return
from brain_tasks.ml.metrics import bars_per_year, evaluate, strategy_returns
from brain_tasks.ml.models import DEFAULT_PARAMS, MODEL_TYPES, SEQUENCE_TYPES, make_trainer
from brain_tasks.ml.regimes import metrics_by_regime, volatility_regimes
from brain_tasks.ml.validation import SCHEMES, walk_forward_splits


def _frozen(params: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((params or {}).items()))


_PARAM_FIELDS = tuple(f"{t}_params" for t in MODEL_TYPES)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes a training result; its hash is part of a run's identity.

    A label spans ``execution_lag + horizon`` bars; that many rows are purged before each test block,
    and ``embargo`` (default: the same span) more are dropped on top.  Model params override the
    defaults of ``brain_tasks.ml.models``.
    """

    timeframe: str = "5m"
    horizon: int = 12
    # A decision at bar t's close is filled at the close `execution_lag` bars later.  With 0, thin
    # pairs' bid-ask bounce between closes shows up as a large, untradeable "edge".
    execution_lag: int = 1
    cost_bps: float = 5.0
    n_folds: int = 5
    embargo: int | None = None
    scheme: str = "expanding"
    min_train: int | None = None
    threshold: float | None = None
    seed: int = 0
    n_threads: int = 1
    lightgbm_params: tuple[tuple[str, Any], ...] = ()
    xgboost_params: tuple[tuple[str, Any], ...] = ()
    baseline_params: tuple[tuple[str, Any], ...] = ()
    lstm_params: tuple[tuple[str, Any], ...] = ()
    cnn_params: tuple[tuple[str, Any], ...] = ()
    transformer_params: tuple[tuple[str, Any], ...] = ()
    # Sequence models read windows of the last `window` rows (bars) of the feature matrix.
    window: int = 32
    regime_window: int = 48
    regime_lookback: int = 2016
    importance_rows: int = 1000
    min_rows: int = 1000

    def __post_init__(self) -> None:
        # Accept plain dicts for params but store sorted tuples so the config stays hashable.
        for name in _PARAM_FIELDS:
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, _frozen(value))
        if self.embargo is None:
            object.__setattr__(self, "embargo", self.horizon + self.execution_lag)
        timeframe_seconds(self.timeframe)
        if self.horizon < 1 or self.n_folds < 1 or self.embargo < 0 or self.n_threads < 1 or self.execution_lag < 0:
            raise ValueError("need horizon >= 1, n_folds >= 1, embargo >= 0, n_threads >= 1, execution_lag >= 0")
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}")
        if self.cost_bps < 0:
            raise ValueError("cost_bps must be >= 0")

    def model_params(self, model_type: str) -> dict[str, Any]:
        """Param overrides for one model type (sequence models also get the window and the purge before
        their early-stopping block: the label span plus the embargo)."""
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        own = dict(getattr(self, f"{model_type}_params"))
        if model_type in SEQUENCE_TYPES:
            return {"window": self.window, "purge": self.horizon + self.execution_lag + self.embargo, **own}
        return own

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (params as dicts)."""
        d = asdict(self)
        for name in _PARAM_FIELDS:
            d[name] = dict(getattr(self, name))
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict`` (unknown keys are an error, so a stale manifest is noticed)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**dict(data))

    def config_hash(self) -> str:
        """sha256 hex of the config, the feature-set version and the models' default params (the config
        holds only overrides: a change of defaults trains something else, so it must not find the
        versions trained before it as "inputs unchanged")."""
        payload = json.dumps(
            {"config": self.to_dict(), "feature_set_version": FEATURE_SET_VERSION, "model_defaults": DEFAULT_PARAMS},
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class TrainResult:
    """Out-of-sample evaluation plus the final model of one symbol and model type.

    ``data_start`` / ``data_end`` span the input candles (warm-up and label look-ahead included), so
    the same candle window rebuilds exactly the training set that ``dataset_digest`` hashes;
    ``n_rows`` counts the usable rows in it.
    """

    model_type: str
    oos: pd.DataFrame
    metrics: dict[str, float]
    regime_metrics: dict[str, dict[str, float]]
    artifact: bytes
    artifact_format: str
    feature_names: list[str]
    feature_hash: str
    dataset_digest: str
    data_start: pd.Timestamp
    data_end: pd.Timestamp
    n_rows: int
    params: dict[str, Any]
    importance: pd.DataFrame | None
    folds: list[dict[str, Any]] = field(default_factory=list)
    # Process CPU seconds of this call: everything but the importance, and the importance alone.
    train_cpu_s: float = 0.0
    importance_cpu_s: float = 0.0
    # The out-of-distribution gate's description of the training inputs (``ml.distribution``), or
    # None when it could not be estimated (``distribution_error`` says why).
    distribution: dict[str, Any] | None = None
    distribution_error: str | None = None


def dataset_digest(X: pd.DataFrame, y: pd.Series) -> str:
    """sha256 of the training matrix: column names, timestamps, feature values and labels."""
    h = hashlib.sha256()
    h.update(json.dumps(list(X.columns)).encode("utf-8"))
    h.update(np.ascontiguousarray(pd.DatetimeIndex(X.index).as_unit("ns").asi8).tobytes())  # unit-independent
    h.update(np.ascontiguousarray(X.to_numpy(dtype="float64", na_value=np.nan)).tobytes())
    h.update(np.ascontiguousarray(y.to_numpy(dtype="float64")).tobytes())
    return h.hexdigest()


def build_dataset(
    candles: pd.DataFrame,
    config: TrainConfig,
    *,
    funding: pd.DataFrame | None = None,
    open_interest: pd.DataFrame | None = None,
    liquidations: pd.DataFrame | None = None,
    sentiment: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """(X, label, bar_return) on the rows usable for training, indexed by ts.

    Calendar features whose cycle the history does not repeat ``importance.MIN_CALENDAR_CYCLES``
    times are left out (day-of-week below 8 weeks, time-of-day below 8 days): on a short history
    they identify days rather than describe a season, and models memorise them.
    """
    candles = usable_candles(candles)  # unusable bars (non-finite, overflowing, implausible) skipped
    X = make_features(
        candles, timeframe=config.timeframe, funding=funding, open_interest=open_interest, liquidations=liquidations,
        sentiment=sentiment,
    )
    y = forward_return(candles, config.horizon, config.cost_bps, config.execution_lag)
    br = bar_returns(candles, config.execution_lag)
    # Candle features are NaN only during warm-up; external-source columns may stay NaN (trees route
    # missing values, the baseline imputes them).
    usable = X[list(CANDLE_FEATURES)].notna().all(axis=1).to_numpy() & y.notna().to_numpy()
    if usable.sum() < config.min_rows:
        raise DataError(
            f"only {int(usable.sum())} usable rows after feature warm-up and the {config.horizon}-bar label "
            f"horizon (from {len(candles)} candles); need at least {config.min_rows}"
        )
    X = X[usable]
    short = calendar_features_to_drop(list(X.columns), X.index[-1] - X.index[0])
    return X.drop(columns=short), y[usable], br[usable]


def dataset_prefix(
    X: pd.DataFrame, y: pd.Series, candle_ts: pd.DatetimeIndex, end: pd.Timestamp, config: TrainConfig
) -> tuple[pd.DataFrame, pd.Series]:
    """The (X, label) ``build_dataset`` gives on the candles before ``end``, taken from its result (X, y)
    on a longer history that starts at the same candle, whose usable candles' timestamps are
    ``candle_ts``.  The features are causal and window-exact (``ml.features``: a bar's value comes from
    its own window alone), so the shorter history's rows are the longer one's; what differs is the end:
    a label needs ``execution_lag + horizon`` candles after its bar, so the rows whose label would reach
    ``end`` or beyond are dropped (no later bar enters), and the calendar features are dropped as the
    shorter span decides.  A caller that must be sure compares ``dataset_digest`` with the recorded one.
    """
    n = int(np.count_nonzero(candle_ts < pd.Timestamp(end)))  # usable candles before `end` (any time unit)
    last = n - 1 - (config.horizon + config.execution_lag)             # the last candle with a label
    if last < 0:
        return X.iloc[:0], y.iloc[:0]
    rows = X.index <= candle_ts[last]
    X, y = X[rows], y[rows]
    if X.empty:
        return X, y
    return X.drop(columns=calendar_features_to_drop(list(X.columns), X.index[-1] - X.index[0])), y


def explain(model: Any, model_type: str, X: pd.DataFrame, y: pd.Series, config: TrainConfig) -> pd.DataFrame:
    """IN-SAMPLE importance of a fitted model by every method it supports (``compute_importance``'s
    frame) on its most recent rows.  Kept for explaining a stored model; the importance to store is
    ``train_and_evaluate(..., with_importance=True).importance``, computed out of sample."""
    methods = (
        ("shap", "permutation", "correlation")
        if model_type != "baseline"
        else ("variance", "permutation", "correlation")
    )
    # Explain the model on its most recent rows: that is the behaviour that will trade next.
    recent = slice(max(0, len(X) - 4 * config.importance_rows), len(X))
    return compute_importance(
        model, X.iloc[recent], y.iloc[recent], methods=methods, sample_rows=config.importance_rows, seed=config.seed
    )


def predict_rows(model: Any, X: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """Predictions for the consecutive rows ``rows`` of X.  A sequence model also reads the
    ``context_rows`` rows before them (features only, known at those bars; no label is used)."""
    start = max(0, int(rows[0]) - int(getattr(model, "context_rows", 0)))
    return model.predict(X.iloc[start: int(rows[-1]) + 1])[-len(rows):]


def train_and_evaluate(
    candles: pd.DataFrame,
    model_type: str,
    config: TrainConfig,
    *,
    funding: pd.DataFrame | None = None,
    open_interest: pd.DataFrame | None = None,
    liquidations: pd.DataFrame | None = None,
    with_importance: bool = True,
    sentiment: pd.DataFrame | None = None,
    device: str = "cpu",
    dataset: tuple[pd.DataFrame, pd.Series, pd.Series] | None = None,
) -> TrainResult:
    """Walk-forward OOS evaluation, metrics overall and per regime, final model and (unless
    ``with_importance`` is false) the out-of-sample importance: each fold's model explained on its
    own test block (``importance.fold_importance``), folds averaged by test rows, on
    ``config.importance_rows`` sampled test rows in all (split evenly over the folds).

    ``device`` (``auto`` | ``cpu`` | ``cuda``, see ``make_trainer``) is where training runs; it is not
    part of the config hash, and the result's params record it.  ``dataset``: the ``build_dataset``
    result of these very inputs when the caller already built it (to check the digest first), so the
    features are computed once."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    cpu_start, importance_cpu = time.process_time(), 0.0
    candles = usable_candles(candles)  # the regimes and the data window skip them too
    X, y, br = dataset or build_dataset(candles, config, funding=funding, open_interest=open_interest,
                                        liquidations=liquidations, sentiment=sentiment)
    regimes = volatility_regimes(candles, window=config.regime_window, lookback=config.regime_lookback).loc[X.index]
    n = len(X)
    try:
        # A label spans the lag and the horizon: purge that many rows before each test block.
        splits = walk_forward_splits(n, config.n_folds, config.horizon + config.execution_lag, config.embargo,
                                     config.scheme, config.min_train)
    except ValueError as exc:
        raise DataError(f"cannot split {n} rows for walk-forward: {exc}") from exc
    params = config.model_params(model_type)
    preds, folds, importances = [], [], []
    for k, (train_idx, test_idx) in enumerate(splits):
        trainer = make_trainer(model_type, params, seed=config.seed, n_threads=config.n_threads, device=device)
        trainer.fit(X.iloc[train_idx], y.iloc[train_idx])
        preds.append(predict_rows(trainer, X, test_idx))
        if with_importance:
            # importance_rows is the budget over all folds: it keeps importance under half the training CPU.
            # A sequence model also gets the context rows before the block (inputs only, never scored).
            block = slice(max(0, int(test_idx[0]) - trainer.context_rows), int(test_idx[-1]) + 1)
            t0 = time.process_time()
            importances.append(fold_importance(trainer, X.iloc[block], y.iloc[block],
                                               sample_rows=-(-config.importance_rows // len(splits)),
                                               seed=config.seed + k))
            importance_cpu += time.process_time() - t0
        folds.append(
            {
                "fold": k,
                "train_start": X.index[train_idx[0]],
                "train_end": X.index[train_idx[-1]],
                "test_start": X.index[test_idx[0]],
                "test_end": X.index[test_idx[-1]],
                "n_train": len(train_idx),
                "n_test": len(test_idx),
            }
        )
    test_rows = np.concatenate([t for _, t in splits])
    pred = np.concatenate(preds)
    label = y.to_numpy()[test_rows]
    bar_ret = br.to_numpy()[test_rows]
    regime = regimes.to_numpy()[test_rows]
    ppy = bars_per_year(config.timeframe)
    # Test blocks are consecutive, so one strategy runs across them and pays for every position change.
    strat = strategy_returns(pred, bar_ret, config.cost_bps, config.threshold).to_numpy()
    oos = pd.DataFrame(
        {
            "ts": X.index[test_rows],
            "fold": np.concatenate([np.full(len(t), k) for k, (_, t) in enumerate(splits)]),
            "pred": pred,
            "label": label,
            "bar_return": bar_ret,
            "strategy_return": strat,
            "regime": pd.Series(regime, dtype="str"),
        }
    )
    metrics = evaluate(pred, label, bar_ret, ppy, config.cost_bps, config.threshold)
    regime_metrics = metrics_by_regime(pred, label, bar_ret, regime, ppy, config.cost_bps, config.threshold)

    final = make_trainer(model_type, params, seed=config.seed, n_threads=config.n_threads, device=device).fit(X, y)
    importance = None
    if with_importance:
        t0 = time.process_time()
        importance = aggregate_importance(importances)
        importance_cpu += time.process_time() - t0
    names = list(X.columns)
    distribution, distribution_error = describe_training_inputs(X[names], splits)
    artifact, digest = final.to_bytes(), dataset_digest(X, y)
    train_cpu = time.process_time() - cpu_start - importance_cpu
    return TrainResult(
        model_type=model_type,
        oos=oos,
        metrics=metrics,
        regime_metrics=regime_metrics,
        artifact=artifact,
        artifact_format=final.artifact_format,
        feature_names=names,
        feature_hash=feature_set_hash(names),
        dataset_digest=digest,
        data_start=pd.Timestamp(candles["ts"].iloc[0]),
        data_end=pd.Timestamp(candles["ts"].iloc[-1]),
        n_rows=n,
        params={**final.params, "seed": config.seed, "n_threads": config.n_threads, "device": device},
        importance=importance,
        folds=folds,
        train_cpu_s=train_cpu,
        importance_cpu_s=importance_cpu,
        distribution=distribution,
        distribution_error=distribution_error,
    )


def describe_training_inputs(X: pd.DataFrame, splits: list[tuple[np.ndarray, np.ndarray]]
                             ) -> tuple[dict[str, Any] | None, str | None]:
    """The gate's description of a version's inputs: fitted on every row (as the final model) and
    calibrated on the walk-forward test rows of the folds that train on at least half the rows
    (``ml.distribution.describe_walk_forward``).  A history too short to estimate it gives None and the
    reason: the version is then served without the gate, and says so."""
    from brain_tasks.ml.distribution import describe_walk_forward

    try:
        description = describe_walk_forward(X, splits)
        json.dumps(description, allow_nan=False)  # stored as strict JSON: a NaN is an estimate that failed
        return description, None
    except ValueError as exc:
        return None, f"no input description: {exc}"
