"""Trainers behind one small interface, serialised in each library's own format (never pickle).

- ``lightgbm``: LightGBM regression, artifact = the booster's model text ('lightgbm-text').
- ``xgboost``: XGBoost ``hist`` regression, artifact = the booster's UBJSON ('xgboost-ubj').
- ``baseline``: scikit-learn mean imputation + standardisation + Ridge, artifact = JSON of the
  fitted numbers ('linear-json'); prediction is recomputed from those numbers so a reloaded model
  predicts exactly like the trainer.
- ``lstm``, ``cnn``, ``transformer``: PyTorch sequence models over windows of the last ``window`` rows
  (``brain_tasks.ml.deep``, imported only when one is trained or loaded, so torch stays out of
  processes that never touch them); artifact = safetensors with a JSON description ('safetensors').

Every model predicts one value per row of X, row i using rows ``i - context_rows .. i`` only
(``context_rows`` is 0 for the tabular models, ``window - 1`` for the sequence models).
All are deterministic for a given seed and thread count (the sequence models on the CPU).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Union

import lightgbm as lgb
import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from brain_tasks.errors import DataError

if TYPE_CHECKING:
    from brain_tasks.ml.deep import SequenceModel

TABULAR_TYPES = ("lightgbm", "xgboost", "baseline")
SEQUENCE_TYPES = ("lstm", "cnn", "transformer")  # the same tuple as brain_tasks.ml.deep's
MODEL_TYPES = TABULAR_TYPES + SEQUENCE_TYPES
ARTIFACT_FORMATS = {
    "lightgbm": "lightgbm-text",
    "xgboost": "xgboost-ubj",
    "baseline": "linear-json",
    **dict.fromkeys(SEQUENCE_TYPES, "safetensors"),
}

# Sequence models: sized so one fit on ~100k 5m bars takes <= 2 minutes on one CPU thread
# (bench/train.py).  An epoch is a seeded draw of at most `epoch_windows` windows ending on every
# `stride`-th bar; at most `epochs` epochs, stopped after `patience` epochs without a better loss on the
# last `val_fraction` of the training rows (scored on at most `val_windows` evenly spaced windows).
# `window` and `purge` come from the TrainConfig (its `window`, and the label span plus the embargo).
_SEQUENCE_COMMON: dict[str, Any] = {
    "window": 32,
    "purge": 26,
    "stride": 1,
    "epoch_windows": 8192,
    "hidden": 32,
    "dropout": 0.1,
    "epochs": 12,
    "patience": 3,
    "batch_size": 128,
    "learning_rate": 1e-3,
    "weight_decay": 1e-4,
    "val_fraction": 0.15,
    "val_windows": 4096,
    "min_val_rows": 200,
}

# The trees are held back hard (small leaves count, 400 rows per leaf, slow learning rate): on 5m labels
# that are mostly noise, looser trees fit each fold's noise, and their out-of-sample Sharpe and their
# mean |SHAP| followed that noise rather than a planted signal (bench/shap_planted.py, docs/statistics.md).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "lightgbm": {
        "objective": "regression",
        "num_boost_round": 150,
        "learning_rate": 0.02,
        "num_leaves": 7,
        "min_data_in_leaf": 400,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
    },
    "xgboost": {
        "objective": "reg:squarederror",
        "num_boost_round": 150,
        "eta": 0.02,
        "max_depth": 3,
        "min_child_weight": 400,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "lambda": 1.0,
        "tree_method": "hist",
    },
    # Labels are mostly noise: strong shrinkage on the standardised features keeps the linear
    # baseline from chasing collinear volatility features out of sample.
    "baseline": {"alpha": 1000.0},
    "lstm": {**_SEQUENCE_COMMON, "layers": 1},
    "cnn": {**_SEQUENCE_COMMON},
    "transformer": {**_SEQUENCE_COMMON, "layers": 2, "heads": 4},
}


def _frame(X: pd.DataFrame | np.ndarray, names: list[str] | None = None) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        if names is not None and list(X.columns) != names:
            missing = [n for n in names if n not in X.columns]
            if missing:
                raise DataError(f"features missing for this model: {missing[:5]}")
            return X[names]
        return X
    arr = np.asarray(X, dtype="float64")
    cols = names if names is not None else [f"f{i}" for i in range(arr.shape[1])]
    return pd.DataFrame(arr, columns=cols)


def _matrix(X: pd.DataFrame) -> np.ndarray:
    return np.ascontiguousarray(X.to_numpy(dtype="float64", na_value=np.nan))


class LightGBMModel:
    """A fitted LightGBM booster."""

    artifact_format = "lightgbm-text"
    context_rows = 0

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster
        self.feature_names: list[str] = list(booster.feature_name())

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Raw predictions."""
        return np.asarray(self.booster.predict(_matrix(_frame(X, self.feature_names))), dtype="float64")

    def contributions(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """TreeSHAP values, shape (n, p + 1); the last column is the expected value."""
        return np.asarray(
            self.booster.predict(_matrix(_frame(X, self.feature_names)), pred_contrib=True), dtype="float64"
        )

    def to_bytes(self) -> bytes:
        """The LightGBM model text."""
        return self.booster.model_to_string().encode("utf-8")


class XGBoostModel:
    """A fitted XGBoost booster."""

    artifact_format = "xgboost-ubj"
    context_rows = 0

    def __init__(self, booster: xgb.Booster) -> None:
        self.booster = booster
        self.feature_names: list[str] = list(booster.feature_names or [])

    def _dmatrix(self, X: pd.DataFrame | np.ndarray) -> xgb.DMatrix:
        return xgb.DMatrix(_matrix(_frame(X, self.feature_names)), feature_names=self.feature_names, nthread=1)

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Raw predictions."""
        return np.asarray(self.booster.predict(self._dmatrix(X)), dtype="float64")

    def contributions(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """TreeSHAP values, shape (n, p + 1); the last column is the bias (expected value)."""
        return np.asarray(self.booster.predict(self._dmatrix(X), pred_contribs=True), dtype="float64")

    def to_bytes(self) -> bytes:
        """The booster as UBJSON."""
        return bytes(self.booster.save_raw(raw_format="ubj"))


class LinearModel:
    """Mean imputation, standardisation and a linear map, held as plain numbers."""

    artifact_format = "linear-json"
    context_rows = 0

    def __init__(
        self,
        feature_names: list[str],
        fill_values: np.ndarray,
        means: np.ndarray,
        scales: np.ndarray,
        coef: np.ndarray,
        intercept: float,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.feature_names = list(feature_names)
        self.fill_values = np.asarray(fill_values, dtype="float64")
        self.means = np.asarray(means, dtype="float64")
        self.scales = np.asarray(scales, dtype="float64")
        self.coef = np.asarray(coef, dtype="float64")
        self.intercept = float(intercept)
        self.params = dict(params or {})

    def linear_terms(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Each feature's additive term in the prediction, shape (n, p)."""
        m = _matrix(_frame(X, self.feature_names))
        m = np.where(np.isnan(m), self.fill_values, m)
        return (m - self.means) / self.scales * self.coef

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Predictions: intercept plus the sum of the linear terms."""
        return self.linear_terms(X).sum(axis=1) + self.intercept

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys; floats written by repr, which round-trips exactly)."""
        doc = {
            "format": self.artifact_format,
            "feature_names": self.feature_names,
            "fill_values": self.fill_values.tolist(),
            "means": self.means.tolist(),
            "scales": self.scales.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "params": self.params,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> LinearModel:
        """Rebuild from ``to_bytes`` output."""
        doc = json.loads(data.decode("utf-8"))
        if doc.get("format") != cls.artifact_format:
            raise ValueError(f"not a linear-json artifact: format={doc.get('format')!r}")
        return cls(
            doc["feature_names"],
            doc["fill_values"],
            doc["means"],
            doc["scales"],
            doc["coef"],
            doc["intercept"],
            doc["params"],
        )


FittedModel = Union[LightGBMModel, XGBoostModel, LinearModel, "SequenceModel"]


def _check_xy(X: pd.DataFrame, y: Any) -> tuple[pd.DataFrame, np.ndarray]:
    X = _frame(X)
    target = np.asarray(y, dtype="float64")
    if len(X) != len(target):
        raise DataError(f"X has {len(X)} rows but y has {len(target)}")
    if len(X) < 2:
        raise DataError("need at least two training rows")
    if not np.isfinite(target).all():
        raise DataError("the label has NaN or infinite values")
    return X, target


def _fit_lightgbm(X: pd.DataFrame, y: np.ndarray, params: dict[str, Any], seed: int, n_threads: int) -> LightGBMModel:
    p = dict(params)
    rounds = int(p.pop("num_boost_round"))
    p.update(
        seed=seed,
        num_threads=n_threads,
        deterministic=True,
        force_row_wise=True,  # the col-wise/row-wise auto choice is timed, hence not reproducible
        verbosity=-1,
    )
    data = lgb.Dataset(_matrix(X), label=y, feature_name=list(X.columns), free_raw_data=True)
    return LightGBMModel(lgb.train(p, data, num_boost_round=rounds))


def _fit_xgboost(X: pd.DataFrame, y: np.ndarray, params: dict[str, Any], seed: int, n_threads: int) -> XGBoostModel:
    p = dict(params)
    rounds = int(p.pop("num_boost_round"))
    p.update(seed=seed, nthread=n_threads, verbosity=0)
    dtrain = xgb.DMatrix(_matrix(X), label=y, feature_names=list(X.columns), nthread=n_threads)
    return XGBoostModel(xgb.train(p, dtrain, num_boost_round=rounds))


def _fit_baseline(X: pd.DataFrame, y: np.ndarray, params: dict[str, Any], seed: int, n_threads: int) -> LinearModel:
    # Mean imputation makes a missing value's term exactly zero after standardising (and is ~15x faster
    # than the median on 100k rows); keep_empty_features keeps an all-NaN column as a zero term so the
    # feature list never shrinks.
    pipe = make_pipeline(
        SimpleImputer(strategy="mean", keep_empty_features=True),
        StandardScaler(),
        Ridge(alpha=float(params["alpha"]), random_state=seed),
    )
    pipe.fit(_matrix(X), y)
    imputer, scaler, ridge = pipe.steps[0][1], pipe.steps[1][1], pipe.steps[2][1]
    return LinearModel(
        list(X.columns), imputer.statistics_, scaler.mean_, scaler.scale_, ridge.coef_, float(ridge.intercept_), params
    )


_FITTERS: dict[str, Callable[..., FittedModel]] = {
    "lightgbm": _fit_lightgbm,
    "xgboost": _fit_xgboost,
    "baseline": _fit_baseline,
}


class Trainer:
    """Fits one model type; after ``fit`` it predicts, explains and serialises like the fitted model."""

    def __init__(self, model_type: str, params: dict[str, Any], seed: int, n_threads: int,
                 device: str = "cpu") -> None:
        self.model_type = model_type
        self.params = params
        self.seed = seed
        self.n_threads = n_threads
        self.device = device
        self.artifact_format = ARTIFACT_FORMATS[model_type]
        self.model: FittedModel | None = None

    @property
    def context_rows(self) -> int:
        """Rows before a predicted row that its prediction reads (``window - 1`` for sequence models)."""
        return int(self.params["window"]) - 1 if self.model_type in SEQUENCE_TYPES else 0

    def fit(self, X: pd.DataFrame, y: Any) -> Trainer:
        """Train on X (DataFrame, column names become feature names; consecutive bars for the sequence
        models) and y."""
        X, target = _check_xy(X, y)
        if self.model_type in SEQUENCE_TYPES:
            from brain_tasks.ml.deep import fit_sequence  # torch only where a sequence model is trained

            self.model = fit_sequence(self.model_type, X, target, self.params, self.seed, self.n_threads,
                                      self.device)
        else:
            self.model = _FITTERS[self.model_type](X, target, self.params, self.seed, self.n_threads)
        return self

    def _fitted(self) -> FittedModel:
        if self.model is None:
            raise RuntimeError("fit() first")
        return self.model

    @property
    def feature_names(self) -> list[str]:
        """Feature names seen in fit."""
        return self._fitted().feature_names

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Predictions of the fitted model."""
        return self._fitted().predict(X)

    def to_bytes(self) -> bytes:
        """The artifact in the library's own format."""
        return self._fitted().to_bytes()


def make_trainer(model_type: str, params: dict[str, Any] | None = None, seed: int = 0, n_threads: int = 1,
                 device: str = "cpu") -> Trainer:
    """A trainer of ``model_type`` with DEFAULT_PARAMS overridden by ``params``.

    ``device`` (``auto`` | ``cpu`` | ``cuda``): where the sequence models train (``auto``: a GPU if
    torch sees one); XGBoost trains on the GPU only when asked for ``cuda`` explicitly (that needs the
    ``xgboost`` package with CUDA instead of ``xgboost-cpu``); the other models always use the CPU.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    merged = {**DEFAULT_PARAMS[model_type], **(params or {})}
    if model_type == "xgboost" and device == "cuda":
        merged["device"] = "cuda"
    return Trainer(model_type, merged, int(seed), int(n_threads), device)


def load_model(artifact_format: str, data: bytes) -> FittedModel:
    """Rebuild a fitted model from its artifact bytes."""
    if artifact_format == "lightgbm-text":
        return LightGBMModel(lgb.Booster(model_str=data.decode("utf-8")))
    if artifact_format == "xgboost-ubj":
        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        return XGBoostModel(booster)
    if artifact_format == "linear-json":
        return LinearModel.from_bytes(data)
    if artifact_format == "safetensors":
        from brain_tasks.ml.deep import load_sequence

        return load_sequence(data)
    raise ValueError(f"unknown artifact format {artifact_format!r}")
