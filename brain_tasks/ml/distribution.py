"""Is a feature row like the rows a model version was trained on?  An out-of-distribution gate.

A version stores ``describe_inputs(X_train, X_oos)`` (or ``describe_walk_forward``, below): per-feature
robust location and scale, a shrunk covariance of the robustly scaled training rows, and a threshold
on one multivariate statistic calibrated on the version's own out-of-sample rows (JSON, about 20 kB
for 21 features).  ``assess(description, row)`` scores one serve-time row against it; a serving
process keeps ``Gate.of(description)`` next to the loaded model so that no call parses JSON lists.

The statistic: the largest conditional robust z
-----------------------------------------------
Each feature is scaled robustly, ``z_j = (x_j - median_j) / scale_j``, and the covariance ``S`` of
the scaled training rows is estimated with Ledoit-Wolf shrinkage; ``P = S^-1``.  For each feature,
``(P d)_j / sqrt(P_jj)`` (``d = z - mean``) is the residual of feature j regressed on all the other
features, in units of its own standard deviation: it says how far feature j lies from where the
other features put it.  The statistic is the largest of these in absolute value.  It is Mahalanobis
distance taken apart feature by feature: a shift ``delta`` of feature j alone adds
``delta^2 P_jj = delta^2 / (s_j^2 (1 - R^2_j))`` to the squared Mahalanobis distance ``d' P d``, and
moves the j-th conditional z by the square root of exactly that amount.  The Mahalanobis D^2 spreads
that signal over a chi-square with one degree of freedom per feature; the maximum tests each feature
with one degree of freedom, at the price of a Bonferroni-like factor (the number of features).  For
the alternative this gate exists for (one feature, or a few, off the training manifold) the maximum
is the stronger test, and its argmax names the feature.

Measured (``bench/ood.py``, 10 real 5m pairs of the bundled sample, time-ordered
60% fit / 20% calibration / 20% held out) against the alternatives the issue names:

- FreqAI's dissimilarity index (min-max scaling to [-1, 1], nearest training row's Euclidean
  distance over the mean pairwise distance of the training rows, datasieve's ``DissimilarityIndex``)
  needs the whole training matrix in the description (megabytes as JSON for a few weeks of 5m bars),
  a distance to every training row per call (hundreds of microseconds, milliseconds at p99), and
  detected a 4-robust-sd shift in one feature far less often than a covariance-based statistic:
  Euclidean distance ignores the correlations that make such a shift inconsistent with the other
  features.
- An isolation forest (scikit-learn) costs milliseconds per single-row call (over the 1 ms budget),
  has no JSON form short of exporting its trees, and barely reacted to a one-feature shift.
- Mahalanobis D^2 with a Minimum Covariance Determinant fit was slow to fit (seconds) and weaker:
  MCD fits the calm core of heavy-tailed market features, so calibration rows from the tails get
  huge distances and the threshold rises out of reach.  Ledoit-Wolf on robustly scaled rows fits in
  milliseconds.  The conditional-z maximum beat D^2 (same covariance) on every feature.

What does not hold:

- Market features are heavy-tailed, so a shift of 4 robust standard deviations (MAD based) is not
  far for return-like features (``ret_1``, ``range_hl``, ``rv_288``...).  Their one-feature
  detection stays well below 95% with every statistic measured; it reaches 95% or more on the
  features the others pin down (``rv_12``, ``rv_ratio_12_48``, ``rsi_14``, ``ma_dev_48``, ``vol_z_*``).
- The quantile's promise (1% of in-distribution rows flagged) needs a long calibration history.
  Features are rolling windows up to a day long: a few days of rows hold few independent
  observations, the calibrated quantile varies a lot from one history to the next, and since the
  chance of exceeding it is convex in it, later rows are flagged more than 1% of the time on
  average even when nothing changed.  On stationary synthetic paths the typical later block met the
  promise with months of 5m bars and not with weeks (figures in ``bench/ood.py``).
- After a regime change the rate rises on real data, which is what a gate is for.

Calibrating a version: ``describe_walk_forward`` with the training run's walk-forward splits fits the
description on every row (as the final model) and calibrates on the test rows of the folds that
train on at least half the rows; the earlier folds' small training sets put their test rows far
away and would raise the threshold until nothing is flagged.

Missing values
--------------
A feature that is NaN (or pandas NA) in the row, or absent from it, is left out: the statistic is computed on the
observed features only, from the marginal covariance of those features (Gaussian marginalisation,
so no imputed value can move the verdict), and the feature is listed in ``Assessment.missing``.
With fewer features the maximum has fewer terms, so the threshold is then conservative.  A row with
no observed feature at all is out of distribution with ``dissimilarity = inf``; so is a row with an
infinite feature value (an overflow is as far out as a value can be, not a missing one).  Features that are
never finite in the training rows are not described (``description["ignored"]``); the covariance is
estimated on the training rows where every described feature is finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.covariance import LedoitWolf

DESCRIPTION_VERSION = 1
STATISTIC = "max_conditional_robust_z"
MAD_TO_SD = 1.4826  # MAD of a normal distribution times this is its standard deviation
IQR_TO_SD = 1.349  # IQR of a normal distribution divided by this is its standard deviation
FURTHEST = 3


@dataclass(frozen=True)
class Assessment:
    """The gate's verdict on one row.  ``dissimilarity`` is the statistic over its threshold: above 1
    the row lies outside what the version saw (``in_distribution`` is False).  ``furthest`` holds the
    features with the largest robust z, ``(name, z)``, for the reason text."""

    in_distribution: bool
    dissimilarity: float
    furthest: list[tuple[str, float]]
    missing: list[str] = field(default_factory=list)

    def reason(self) -> str:
        """Short text for a signal's reason: the features furthest out and their robust z."""
        if not self.furthest:
            return "no feature observed"
        parts = ", ".join(f"{name} {z:+.1f} sd" for name, z in self.furthest)
        return f"inputs outside the training distribution (dissimilarity {self.dissimilarity:.2f}): {parts}"


def robust_location_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column median and robust standard deviation (MAD * 1.4826; IQR / 1.349 where the MAD is 0,
    as for a feature that sits on one value more than half the time; then the standard deviation; then
    1 for a constant column, so that a constant feature never divides by zero)."""
    med = np.nanmedian(X, axis=0)
    mad = np.nanmedian(np.abs(X - med), axis=0) * MAD_TO_SD
    q1, q3 = np.nanpercentile(X, [25, 75], axis=0)
    iqr = (q3 - q1) / IQR_TO_SD
    sd = np.nanstd(X, axis=0)
    scale = np.where(mad > 0, mad, np.where(iqr > 0, iqr, np.where(sd > 0, sd, 1.0)))
    return med, scale


def _conditional_z(d: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """|(P d)_j| / sqrt(P_jj) for each row of d: each feature's standardised residual given the others."""
    return np.abs(d @ precision) / np.sqrt(np.diag(precision))


@dataclass(frozen=True)
class Gate:
    """A description's arrays, parsed once: what a serving process keeps next to a loaded model
    (parsing the JSON lists costs more than scoring a row).  Build it with ``Gate.of(description)``."""

    names: list[str]
    location: np.ndarray
    scale: np.ndarray
    mean: np.ndarray
    covariance: np.ndarray
    precision: np.ndarray
    threshold: float
    # Precision of the observed features' marginal, by pattern of missing features.  A serving process
    # meets the same few patterns (a source that has not started yet) over and over; the arrays above
    # never change, so entries never go stale.  An inverse per call would cost more than the statistic.
    _marginal: dict[bytes, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, description: dict[str, Any] | Gate) -> Gate:
        if isinstance(description, Gate):
            return description
        if description.get("statistic") != STATISTIC:
            raise ValueError(f"unknown statistic {description.get('statistic')!r}; expected {STATISTIC!r}")
        f = lambda key: np.asarray(description[key], dtype="float64")  # noqa: E731
        return cls(list(description["features"]), f("location"), f("scale"), f("mean"), f("covariance"),
                   f("precision"), float(description["threshold"]))

    def scaled(self, X: pd.DataFrame) -> np.ndarray:
        """Robust z of every described feature (NaN where missing or non-finite)."""
        return _scaled(X, self.names, self.location, self.scale)

    def marginal_precision(self, observed: np.ndarray) -> np.ndarray:
        """Inverse of the covariance block of the ``observed`` (boolean mask) features."""
        key = np.packbits(observed).tobytes()
        if key not in self._marginal:
            self._marginal[key] = np.linalg.inv(self.covariance[np.ix_(observed, observed)])
        return self._marginal[key]

    def statistic(self, Z: np.ndarray) -> np.ndarray:
        """The statistic for each row of the robustly scaled matrix Z (NaN = missing; an infinite
        value = infinitely far out), grouped by the pattern of missing features so that a complete
        matrix costs one matrix product."""
        infinite = np.isinf(Z).any(axis=1)
        if infinite.any():
            Z = np.where(np.isinf(Z), 0.0, Z)  # those rows are set to inf below; 0 keeps inf - inf out
        observed = ~np.isnan(Z)
        if observed.all():  # the common case; np.unique below costs more than the statistic
            out = _conditional_z(Z - self.mean, self.precision).max(axis=1)
        else:
            out = np.empty(len(Z))
            # One serve-time row needs no grouping.
            patterns, inverse = ((observed, np.zeros(1, dtype="int64")) if len(Z) == 1
                                 else np.unique(observed, axis=0, return_inverse=True))
            for k, pattern in enumerate(patterns):
                rows = np.flatnonzero(inverse.ravel() == k)
                if not pattern.any():
                    out[rows] = math.inf
                    continue
                # The observed features' marginal: their block of the covariance, inverted (not P's block).
                p = self.precision if pattern.all() else self.marginal_precision(pattern)
                out[rows] = _conditional_z(Z[np.ix_(rows, pattern)] - self.mean[pattern], p).max(axis=1)
        out[infinite] = math.inf
        return out


def _scaled(frame: pd.DataFrame, names: list[str], location: np.ndarray, scale: np.ndarray) -> np.ndarray:
    # reindex: a described feature absent from the frame is missing (NaN); extra columns are ignored.
    X = frame.reindex(columns=names).to_numpy(dtype="float64", na_value=np.nan)
    return (X - location) / scale


def _row_values(row: pd.Series, names: list[str]) -> np.ndarray:
    # A plain dict lookup: Series.reindex costs more than the whole statistic on one row.
    values = dict(zip(row.index, row.to_numpy(dtype="float64", na_value=np.nan)))
    return np.array([values.get(name, np.nan) for name in names], dtype="float64")


def _fit(X_train: pd.DataFrame) -> dict[str, Any]:
    """The description's fitted part: features, robust location and scale, Ledoit-Wolf covariance."""
    cols = [c for c in X_train.columns if np.isfinite(X_train[c].to_numpy(dtype="float64", na_value=np.nan)).any()]
    if not cols:
        raise ValueError("no feature has a finite training value")
    train = X_train[cols].to_numpy(dtype="float64", na_value=np.nan, copy=True)
    train[~np.isfinite(train)] = np.nan
    location, scale = robust_location_scale(train)
    Z = (train - location) / scale
    complete = Z[np.isfinite(Z).all(axis=1)]
    if len(complete) < 2 * len(cols):
        raise ValueError(f"{len(complete)} complete training rows cannot estimate a covariance of {len(cols)} "
                         f"features (need at least {2 * len(cols)})")
    lw = LedoitWolf().fit(complete)
    return {
        "version": DESCRIPTION_VERSION,
        "statistic": STATISTIC,
        "features": [str(c) for c in cols],
        "ignored": [str(c) for c in X_train.columns if c not in cols],
        "location": location.tolist(),
        "scale": scale.tolist(),
        "mean": lw.location_.tolist(),
        "covariance": lw.covariance_.tolist(),
        "precision": lw.precision_.tolist(),
        "shrinkage": float(lw.shrinkage_),
        "n_train": int(len(complete)),
    }


def _uncalibrated(fitted: dict[str, Any]) -> Gate:
    """A gate on a fitted description before it has a threshold: for its raw statistic only."""
    return Gate.of({**fitted, "threshold": math.nan})


def _threshold(scores: np.ndarray, quantile: float) -> float:
    scores = scores[np.isfinite(scores)]
    if len(scores) == 0:
        raise ValueError("no out-of-sample row to calibrate the threshold on")
    # "higher": an observed score, so at most 1 - quantile of the calibration rows lie strictly above.
    # A threshold of 0 (every calibration row at the centre) would make every row "out": floor it.
    return max(float(np.quantile(scores, quantile, method="higher")), float(np.finfo("float64").eps))


def _check_quantile(quantile: float) -> None:
    if not 0.5 <= quantile < 1:
        raise ValueError(f"quantile must be in [0.5, 1), got {quantile}")


def describe_inputs(X_train: pd.DataFrame, X_oos: pd.DataFrame, quantile: float = 0.99) -> dict[str, Any]:
    """JSON-safe description of a version's training inputs, with the gate's threshold.

    Location, scale and covariance come from ``X_train``; the threshold is the ``quantile`` of the
    statistic over ``X_oos``.  ``X_oos`` must be rows the description was NOT fitted on, later in
    time: on its own fitting rows the statistic is smaller than on new rows, and a threshold
    calibrated there would flag too many new rows.  For a version whose final model trains on every
    row, ``describe_walk_forward`` fits on every row and calibrates on walk-forward test rows.
    """
    _check_quantile(quantile)
    description = _fit(X_train)
    scores = statistic(_uncalibrated(description), X_oos)
    return {**description, "quantile": float(quantile), "threshold": _threshold(scores, quantile),
            "n_oos": int(np.isfinite(scores).sum())}


def statistic(description: dict[str, Any] | Gate, X: pd.DataFrame) -> np.ndarray:
    """The raw statistic for every row of X (before division by the threshold)."""
    gate = Gate.of(description)
    return gate.statistic(gate.scaled(X))


def dissimilarity(description: dict[str, Any] | Gate, X: pd.DataFrame) -> np.ndarray:
    """Statistic over threshold for every row of X: above 1 means out of distribution."""
    gate = Gate.of(description)
    return gate.statistic(gate.scaled(X)) / gate.threshold


def assess(description: dict[str, Any] | Gate, row: pd.Series | pd.DataFrame) -> Assessment:
    """Judge one row: a Series indexed by feature name, or a frame whose last row is judged.  Pass a
    ``Gate`` rather than the JSON dict on a hot path."""
    gate = Gate.of(description)
    series = row if isinstance(row, pd.Series) else row.iloc[-1]
    z = (_row_values(series, gate.names) - gate.location) / gate.scale
    value = float(gate.statistic(z[None, :])[0]) / gate.threshold
    seen = np.flatnonzero(~np.isnan(z))
    order = seen[np.argsort(-np.abs(z[seen]), kind="stable")][:FURTHEST]
    return Assessment(
        in_distribution=bool(value <= 1.0),
        dissimilarity=value,
        furthest=[(gate.names[j], float(z[j])) for j in order],
        missing=[gate.names[j] for j in np.flatnonzero(np.isnan(z))],
    )


def describe_walk_forward(X: pd.DataFrame, splits: list[tuple[np.ndarray, np.ndarray]],
                          quantile: float = 0.99, min_train_fraction: float = 0.5) -> dict[str, Any]:
    """Description of a version whose final model trains on every row of X, with its threshold
    calibrated out of sample, walk-forward: each split's test rows are scored against a description
    fitted on that split's training rows (as future rows will be scored against all of X), the
    scores are pooled and the threshold is their ``quantile``.  Pass the training run's
    ``validation.walk_forward_splits`` over X.

    Only splits that train on at least ``min_train_fraction`` of the rows calibrate: an early fold
    fitted on a few days puts its test rows far away, and on the real sample such folds raised the
    threshold until a 4-sd shift went unflagged on most pairs (``bench/ood.py``).
    """
    _check_quantile(quantile)
    used = [(tr, te) for tr, te in splits if len(tr) >= min_train_fraction * len(X)]
    if not used:
        raise ValueError(f"no split trains on at least {min_train_fraction:.0%} of the {len(X)} rows")
    scores = np.concatenate([statistic(_uncalibrated(_fit(X.iloc[tr])), X.iloc[te]) for tr, te in used])
    return {**_fit(X), "quantile": float(quantile), "threshold": _threshold(scores, quantile),
            "n_oos": int(np.isfinite(scores).sum())}
