"""Trading metrics of the strategy the predictions drive, annualised by the bar length.

The definitions follow empyrical (Sharpe with ddof=1, Sortino with the root-mean-square downside,
max drawdown of compounded equity, Calmar = CAGR / |max drawdown|); they are written out here
because empyrical is a test-only dependency and returns NaN/inf where the Brain needs finite
numbers.  Where a ratio's denominator is zero it is 0 when its numerator is 0 and +/-RATIO_CAP
otherwise, so every value is a finite float (JSON-safe).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from brain_tasks.ml.features import timeframe_seconds

RATIO_CAP = 1e3
SECONDS_PER_YEAR = 365 * 86400

# Weights of the composite score; every term is first mapped to [-1, 1] by a bounded transform
# (see _TRANSFORMS), so no single metric can dominate by blowing up.  Sharpe leads because it is what
# the desk sizes on; PSR adds confidence for sample length; the rest guard against fat left tails.
DEFAULT_WEIGHTS: dict[str, float] = {
    "sharpe": 0.30,
    "sortino": 0.10,
    "calmar": 0.10,
    "max_drawdown": 0.10,
    "profit_factor": 0.10,
    "hit_ratio": 0.10,
    "psr": 0.20,
}

_TRANSFORMS = {
    "sharpe": lambda v: math.tanh(v / 3.0),
    "sortino": lambda v: math.tanh(v / 5.0),
    "calmar": lambda v: math.tanh(v / 5.0),
    "max_drawdown": lambda v: max(-1.0, 1.0 + 2.0 * v),  # 0 -> 1, -50% -> 0, -100% -> -1
    "profit_factor": lambda v: math.tanh(math.log(v)) if v > 0 else -1.0,
    "hit_ratio": lambda v: 2.0 * v - 1.0,
    "psr": lambda v: 2.0 * v - 1.0,
    "accuracy": lambda v: 2.0 * v - 1.0,
}

METRIC_KEYS = ("sharpe", "sortino", "max_drawdown", "calmar", "profit_factor", "hit_ratio", "total_return", "n_bars")


def bars_per_year(timeframe: str) -> float:
    """Bars in a 365-day year for a ccxt timeframe ('1h' -> 8760.0)."""
    return SECONDS_PER_YEAR / timeframe_seconds(timeframe)


def _ratio(num: float, den: float) -> float:
    if den > 0 and math.isfinite(num / den):
        return float(np.clip(num / den, -RATIO_CAP, RATIO_CAP))
    if num == 0 or not math.isfinite(num):
        return 0.0
    return math.copysign(RATIO_CAP, num)


def _no_variance(std: float, mean: float) -> bool:
    # Rounding leaves a ~1e-19 std on constant returns; treat that as exactly zero.
    return std <= 1e-12 * abs(mean) or std == 0.0


def _values(x: Any) -> np.ndarray:
    return np.asarray(x.to_numpy() if isinstance(x, pd.Series) else x, dtype="float64").ravel()


def positions(pred: Any, threshold: float | None = None) -> np.ndarray:
    """Position per bar: +1 / -1 when |pred| exceeds the threshold, else flat.

    The default threshold is 0 because the labels are already net of the round-trip cost: a positive
    prediction means the expected move pays for the trade.
    """
    p = _values(pred)
    t = 0.0 if threshold is None else float(threshold)
    return np.where(np.isfinite(p) & (np.abs(p) > t), np.sign(p), 0.0)


def strategy_returns(pred: Any, bar_returns: Any, cost_bps: float, threshold: float | None = None) -> pd.Series:
    """Per-bar returns of the strategy: position * next-bar return, minus cost_bps per unit of turnover.

    The position starts flat, so entering the first position is charged.  Aligned by position; the
    result takes ``bar_returns``' index when it is a Series.
    """
    pos = positions(pred, threshold)
    r = _values(bar_returns)
    if len(pos) != len(r):
        raise ValueError(f"pred has {len(pos)} values, bar_returns {len(r)}")
    if not np.isfinite(r).all():
        raise ValueError("bar_returns has NaN or infinite values")
    turnover = np.abs(np.diff(pos, prepend=0.0))
    out = pos * r - turnover * cost_bps / 1e4
    index = bar_returns.index if isinstance(bar_returns, pd.Series) else None
    return pd.Series(out, index=index, name="strategy_return")


def max_drawdown(returns: Any) -> float:
    """Largest fall of compounded equity from its running peak, as a negative fraction (0 if none)."""
    r = _values(returns)
    if r.size == 0:
        return 0.0
    equity = np.concatenate([[1.0], np.cumprod(1.0 + r)])
    dd = equity / np.maximum.accumulate(equity) - 1.0
    return float(dd.min())


def strategy_metrics(returns: Any, periods_per_year: float) -> dict[str, float]:
    """sharpe, sortino, max_drawdown, calmar, profit_factor, hit_ratio, total_return, n_bars."""
    r = _values(returns)
    r = r[np.isfinite(r)]
    n = r.size
    out = dict.fromkeys(METRIC_KEYS, 0.0)
    out["n_bars"] = float(n)
    if n == 0:
        return out
    ann = float(periods_per_year)
    mean = float(r.mean())
    growth = float(np.prod(1.0 + r))
    out["total_return"] = growth - 1.0
    out["max_drawdown"] = max_drawdown(r)
    if n >= 2:
        std = float(r.std(ddof=1))
        out["sharpe"] = _ratio(mean, 0.0) if _no_variance(std, mean) else _ratio(mean * math.sqrt(ann), std)
        downside = math.sqrt(float(np.mean(np.square(np.minimum(r, 0.0))))) * math.sqrt(ann)
        out["sortino"] = _ratio(mean * ann, downside)
    # In log space: a big gain over few bars annualises past float range (pow would raise OverflowError).
    cagr = math.expm1(min(math.log(growth) * ann / n, 700.0)) if growth > 0 else -1.0
    out["calmar"] = _ratio(cagr, abs(out["max_drawdown"]))
    gains, losses = float(r[r > 0].sum()), float(-r[r < 0].sum())
    out["profit_factor"] = _ratio(gains, losses)
    active = r[r != 0]
    out["hit_ratio"] = float((active > 0).mean()) if active.size else 0.0
    return {k: float(v) if math.isfinite(v) else 0.0 for k, v in out.items()}


def probabilistic_sharpe_ratio(returns: Any, sr_benchmark: float = 0.0) -> float:
    """Probability that the true per-bar Sharpe exceeds ``sr_benchmark`` (Bailey & Lopez de Prado 2012).

    Uses the per-bar (not annualised) Sharpe, sample skewness and kurtosis; 0 when there is no
    evidence (fewer than 3 bars or no variance with a mean not above the benchmark).
    """
    r = _values(returns)
    r = r[np.isfinite(r)]
    n = r.size
    if n < 3:
        return 0.0
    std = float(r.std(ddof=1))
    mean = float(r.mean())
    if _no_variance(std, mean):
        # No variance: the Sharpe is +/-inf (or undefined at mean 0), so the answer is certain.
        return 1.0 if mean > 0 else 0.0
    sr = mean / std
    skew = float(stats.skew(r))
    kurt = float(stats.kurtosis(r, fisher=False))
    var_term = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    if not math.isfinite(var_term) or var_term <= 0:
        var_term = 1e-12
    z = (sr - sr_benchmark) * math.sqrt(n - 1) / math.sqrt(var_term)
    return float(stats.norm.cdf(z))


def composite_score(metrics: dict[str, float], weights: dict[str, float] | None = None) -> float:
    """Weighted mean of bounded transforms of the metrics, in [-1, 1]; missing metrics are skipped."""
    w = DEFAULT_WEIGHTS if weights is None else weights
    unknown = set(w) - set(_TRANSFORMS)
    if unknown:
        raise ValueError(f"no bounded transform for {sorted(unknown)}; known: {sorted(_TRANSFORMS)}")
    total = weight_sum = 0.0
    for key, weight in w.items():
        value = metrics.get(key)
        if value is None or weight == 0 or not math.isfinite(float(value)):
            continue
        total += weight * _TRANSFORMS[key](float(value))
        weight_sum += abs(weight)
    return float(total / weight_sum) if weight_sum > 0 else 0.0


def directional_accuracy(pred: Any, label: Any) -> float:
    """Share of bars with a non-zero label whose prediction has the label's sign."""
    p, y = _values(pred), _values(label)
    mask = np.isfinite(y) & (y != 0)
    if not mask.any():
        return 0.0
    return float((np.sign(p[mask]) == np.sign(y[mask])).mean())


def metrics_from_returns(
    strat: Any, pred: Any, label: Any, periods_per_year: float, threshold: float | None = None
) -> dict[str, float]:
    """``evaluate`` given the strategy returns already computed (used for regime slices)."""
    out = strategy_metrics(strat, periods_per_year)
    pos = positions(pred, threshold)
    out["accuracy"] = directional_accuracy(pred, label)
    out["n_trades"] = float(np.count_nonzero(np.diff(pos, prepend=0.0)))
    out["exposure"] = float(np.mean(pos != 0)) if pos.size else 0.0
    out["psr"] = probabilistic_sharpe_ratio(strat)
    out["composite"] = composite_score(out)
    return out


def evaluate(
    pred: Any, label: Any, bar_returns: Any, periods_per_year: float, cost_bps: float, threshold: float | None = None
) -> dict[str, float]:
    """Strategy metrics plus accuracy, n_trades (position changes), exposure, psr and composite."""
    strat = strategy_returns(pred, bar_returns, cost_bps, threshold)
    return metrics_from_returns(strat, pred, label, periods_per_year, threshold)
