"""Trading metrics of the strategy the predictions drive, annualised by the bar length, and the
evidence behind a Sharpe ratio on serially dependent returns.

The definitions follow empyrical (Sharpe with ddof=1, Sortino with the root-mean-square downside,
max drawdown of compounded equity, Calmar = CAGR / |max drawdown|); they are written out here
because empyrical is a test-only dependency and returns NaN/inf where the Brain needs finite
numbers.  Equity is compounded in log space (a sum of log(1 + r)), so a long series cannot overflow.

Every cap, so every value is a finite float (JSON-safe):
- a ratio whose denominator is zero is 0 when its numerator is 0 and +/-RATIO_CAP otherwise, and any
  ratio is clipped to [-RATIO_CAP, RATIO_CAP] (Sharpe, Sortino, Calmar, profit factor);
- log growth is capped at LOG_GROWTH_CAP before exponentiating (total_return and CAGR at most
  e^700 - 1, about 1e304);
- a bar losing 100% or more ruins the equity: total_return = max_drawdown = -1 from there on;
- a strategy that never trades (no gains, no losses) has the neutral values of flat: profit factor
  1, hit ratio 0.5, PSR 0.5 (its Sharpe equals the zero benchmark exactly), so it ranks exactly as
  the flat candidate and above any loser (see ``composite_score``).

The Sharpe ratio's standard error (``sharpe_standard_error``) is a delta-method GMM estimate whose
long-run covariance is Newey-West (Bartlett kernel) after VAR(1) prewhitening (Andrews & Monahan
1992) with Andrews' (1991) automatic bandwidth: Lo (2002)'s non-IID Sharpe variance in its general
form.  Under independent normal returns it reduces to Lo's (1 + SR^2 / 2) / n.  It is what PSR,
the Deflated Sharpe Ratio and selection use, because the iid formula understates the error of
autocorrelated returns (PSR > 0.95 12.7% of the time at AR(1) phi 0.3 instead of 5%).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from brain_tasks.timekeeping import timeframe_seconds

RATIO_CAP = 1e3
LOG_GROWTH_CAP = 700.0  # exp(700) ~ 1e304 is still a finite double
SECONDS_PER_YEAR = 365 * 86400
SE_METHODS = ("hac", "iid")
_EULER_GAMMA = 0.5772156649015329
_MAX_PREWHITEN = 0.97  # bound on the prewhitening VAR(1)'s spectral norm, as Andrews & Monahan suggest

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
# The metrics of a strategy that never holds a position (all-zero returns).
FLAT_METRICS: dict[str, float] = {
    "sharpe": 0.0,
    "sortino": 0.0,
    "max_drawdown": 0.0,
    "calmar": 0.0,
    "profit_factor": 1.0,
    "hit_ratio": 0.5,
    "total_return": 0.0,
    "psr": 0.5,
}


def loses_to_flat(metrics: Mapping[str, Any]) -> bool:
    """Whether a strategy's (out-of-sample) metrics are worse than never trading: a negative Sharpe
    or a negative total return, where flat has 0 and 0.  Missing metrics are not evidence of a loss."""
    for key in ("sharpe", "total_return"):
        value = metrics.get(key)
        if value is not None and math.isfinite(float(value)) and float(value) < FLAT_METRICS[key]:
            return True
    return False


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


def _finite(x: Any) -> np.ndarray:
    r = _values(x)
    return r[np.isfinite(r)]


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


def _log_equity(r: np.ndarray) -> np.ndarray:
    """log(equity) after each bar, starting at 0; -inf once a bar loses 100% or more."""
    with np.errstate(divide="ignore"):
        return np.concatenate([[0.0], np.cumsum(np.log1p(np.maximum(r, -1.0)))])


def paired_returns(a: Any, b: Any, names: tuple[str, str] = ("a", "b")) -> tuple[np.ndarray, np.ndarray]:
    """Two return series on the same bars, finite on both: Series are joined on their index, arrays
    must have the same length (`names` say which is which in the error)."""
    if isinstance(a, pd.Series) and isinstance(b, pd.Series):
        joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
        x, y = joined["a"].to_numpy(dtype="float64"), joined["b"].to_numpy(dtype="float64")
    else:
        x, y = np.asarray(a, dtype="float64").ravel(), np.asarray(b, dtype="float64").ravel()
        if x.size != y.size:
            raise ValueError(f"{names[0]} has {x.size} returns, {names[1]} {y.size}; pass Series to pair them by index")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def max_drawdown(returns: Any) -> float:
    """Largest fall of compounded equity from its running peak, as a negative fraction (0 if none)."""
    r = _finite(returns)
    if r.size == 0:
        return 0.0
    log_eq = _log_equity(r)
    with np.errstate(invalid="ignore"):
        dd = np.expm1(log_eq - np.maximum.accumulate(log_eq))
    return float(np.nan_to_num(dd, nan=-1.0).min())


def strategy_metrics(returns: Any, periods_per_year: float) -> dict[str, float]:
    """sharpe, sortino, max_drawdown, calmar, profit_factor, hit_ratio, total_return, n_bars.

    Caps and neutral values: see the module docstring.
    """
    r = _finite(returns)
    n = r.size
    out = dict.fromkeys(METRIC_KEYS, 0.0)
    out["n_bars"] = float(n)
    out["profit_factor"], out["hit_ratio"] = FLAT_METRICS["profit_factor"], FLAT_METRICS["hit_ratio"]
    if n == 0:
        return out
    ann = float(periods_per_year)
    mean = float(r.mean())
    log_growth = float(_log_equity(r)[-1])
    out["total_return"] = math.expm1(min(log_growth, LOG_GROWTH_CAP))
    out["max_drawdown"] = max_drawdown(r)
    if n >= 2:
        std = float(r.std(ddof=1))
        out["sharpe"] = _ratio(mean, 0.0) if _no_variance(std, mean) else _ratio(mean * math.sqrt(ann), std)
        downside = math.sqrt(float(np.mean(np.square(np.minimum(r, 0.0))))) * math.sqrt(ann)
        out["sortino"] = _ratio(mean * ann, downside)
    cagr = math.expm1(min(log_growth * ann / n, LOG_GROWTH_CAP)) if math.isfinite(log_growth) else -1.0
    out["calmar"] = _ratio(cagr, abs(out["max_drawdown"]))
    gains, losses = float(r[r > 0].sum()), float(-r[r < 0].sum())
    if gains > 0 or losses > 0:
        out["profit_factor"] = _ratio(gains, losses)
    active = r[r != 0]
    if active.size:
        out["hit_ratio"] = float((active > 0).mean())
    return {k: float(v) if math.isfinite(v) else 0.0 for k, v in out.items()}


def _bartlett_bandwidth(e: np.ndarray) -> float:
    """Andrews (1991) AR(1) plug-in bandwidth of the Bartlett kernel, from each column's AR(1) fit."""
    n = e.shape[0]
    num = den = 0.0
    for col in e.T:
        x, z = col[1:], col[:-1]
        zz = float(z @ z)
        if zz <= 0:
            continue
        rho = float(np.clip(x @ z / zz, -0.97, 0.97))
        s2 = float(np.mean(np.square(x - rho * z)))
        num += 4.0 * rho**2 * s2**2 / ((1 - rho) ** 6 * (1 + rho) ** 2)
        den += s2**2 / (1 - rho) ** 4
    alpha = num / den if den > 0 else 0.0
    return 1.1447 * (alpha * n) ** (1.0 / 3.0)


def long_run_covariance(u: Any, lags: int | None = None, prewhiten: bool = True) -> tuple[np.ndarray, int]:
    """Long-run covariance of the mean of ``u`` (n x k moments, demeaned here) and the lags used.

    Newey-West (Bartlett weights 1 - j / (lags + 1)) on VAR(1)-prewhitened moments, recoloured
    (Andrews & Monahan 1992); ``lags`` defaults to Andrews' (1991) automatic bandwidth.  Prewhitening
    removes the bias a truncated kernel has under persistent autocorrelation; the VAR(1) is shrunk to
    spectral norm 0.97 so a near unit root cannot blow the recolouring up.
    """
    x = np.asarray(u, dtype="float64")
    x = x.reshape(len(x), -1)
    x = x - x.mean(axis=0)
    n, k = x.shape
    a = np.zeros((k, k))
    e = x
    if prewhiten and n > 4 * k + 2:
        lhs, rhs = x[:-1], x[1:]
        a = np.linalg.lstsq(lhs, rhs, rcond=None)[0].T  # rhs_t ~ a @ lhs_t
        norm = float(np.linalg.norm(a, 2))
        if norm > _MAX_PREWHITEN:
            a *= _MAX_PREWHITEN / norm
        e = rhs - lhs @ a.T
    m = e.shape[0]
    if lags is None:
        lags = int(min(math.floor(_bartlett_bandwidth(e)), max(0, m // 4)))
    omega = e.T @ e / m
    for j in range(1, lags + 1):
        gamma = e[j:].T @ e[:-j] / m
        omega += (1.0 - j / (lags + 1.0)) * (gamma + gamma.T)
    recolour = np.linalg.inv(np.eye(k) - a)
    return recolour @ omega @ recolour.T, int(lags)


def sharpe_standard_error(returns: Any, *, method: str = "hac", lags: int | None = None) -> float:
    """Standard error of the per-bar (not annualised) Sharpe ratio estimate mean / std(ddof=1).

    ``hac`` (default): delta method on the moments (r - mu, (r - mu)^2 - sigma^2) with their
    prewhitened Newey-West long-run covariance (Lo 2002, robust to autocorrelation, heavy tails and
    volatility clustering).  ``iid``: Mertens' (2002) formula for independent non-normal returns,
    sqrt((1 - skew SR + (kurt - 1) / 4 SR^2) / (n - 1)), the one Bailey & Lopez de Prado (2012) use.
    ``inf`` when there are fewer than 3 returns or no variance.
    """
    if method not in SE_METHODS:
        raise ValueError(f"method must be one of {SE_METHODS}, got {method!r}")
    r = _finite(returns)
    n = r.size
    if n < 3:
        return math.inf
    mean, std = float(r.mean()), float(r.std(ddof=1))
    if _no_variance(std, mean):
        return math.inf
    sr = mean / std
    if method == "iid":
        skew, kurt = float(stats.skew(r)), float(stats.kurtosis(r, fisher=False))
        var_term = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
        return math.sqrt(max(var_term, 1e-12) / (n - 1))
    d = r - mean
    # The Sharpe estimate's influence function: its long-run variance over n is the Sharpe's variance.
    # Working on this one series (not the pair of moments) keeps a heavy-tailed squared moment from
    # leaking into the prewhitening and the bandwidth when the Sharpe is near zero.
    influence = d / std - mean * (d * d - std**2) / (2.0 * std**3)
    omega, _ = long_run_covariance(influence, lags)
    var = float(omega[0, 0]) / n
    return math.sqrt(var) if var > 0 and math.isfinite(var) else math.inf


def higher_moments(returns: Any) -> tuple[float, float]:
    """(skewness, Pearson kurtosis) of the finite returns; (0, 3) when undefined."""
    r = _finite(returns)
    if r.size < 3 or _no_variance(float(r.std()), float(r.mean())):
        return 0.0, 3.0
    return float(stats.skew(r)), float(stats.kurtosis(r, fisher=False))


def probabilistic_sharpe_ratio(
    returns: Any, benchmark: float = 0.0, *, method: str = "hac", lags: int | None = None, se: float | None = None
) -> float:
    """Probability that the true per-bar Sharpe ratio exceeds ``benchmark`` (a per-bar Sharpe):
    Phi((SR - benchmark) / se), with se from ``sharpe_standard_error`` (Bailey & Lopez de Prado 2012,
    with an autocorrelation-robust se by default).  ``se``: that standard error when the caller has
    already computed it for these returns with the same ``method`` and ``lags`` (the HAC estimate is
    the costly part, and a selection asks for several benchmarks on one series).

    Without variance the Sharpe is known exactly: 1 above the benchmark, 0 below, 0.5 at it (so a
    strategy that never trades has PSR 0.5 against 0).  Fewer than 3 returns: 0.5 (no evidence).
    """
    r = _finite(returns)
    if r.size < 3:
        return 0.5
    mean, std = float(r.mean()), float(r.std(ddof=1))
    if _no_variance(std, mean):
        sr = math.copysign(math.inf, mean) if mean != 0 else 0.0  # a constant return's Sharpe is exact
        return 1.0 if sr > benchmark else 0.0 if sr < benchmark else 0.5
    if se is None:
        se = sharpe_standard_error(r, method=method, lags=lags)
    return float(stats.norm.cdf((mean / std - benchmark) / se))


def expected_max_sharpe(n_trials: int, trial_sharpe_variance: float) -> float:
    """Expected maximum of ``n_trials`` Sharpe estimates of zero-skill strategies whose estimates
    vary with ``trial_sharpe_variance`` (Bailey & Lopez de Prado 2014, eq. for SR_0); 0 for one trial."""
    if n_trials <= 1 or trial_sharpe_variance <= 0:
        return 0.0
    n = float(n_trials)
    z = (1 - _EULER_GAMMA) * stats.norm.ppf(1 - 1 / n) + _EULER_GAMMA * stats.norm.ppf(1 - 1 / (n * math.e))
    return float(math.sqrt(trial_sharpe_variance) * z)


def deflated_sharpe_ratio(
    returns: Any,
    *,
    n_trials: int,
    trial_sharpe_variance: float,
    method: str = "hac",
    lags: int | None = None,
) -> float:
    """Deflated Sharpe Ratio (Bailey & Lopez de Prado 2014): the PSR against the Sharpe ratio the best
    of ``n_trials`` zero-skill trials would show by luck (``expected_max_sharpe``).

    ``trial_sharpe_variance`` is the variance of the per-bar Sharpe estimates across all the trials
    tried (models x regimes x configs); the standard error is autocorrelation-robust by default.
    """
    if n_trials < 1:
        raise ValueError("n_trials must be >= 1")
    return probabilistic_sharpe_ratio(
        returns, expected_max_sharpe(n_trials, trial_sharpe_variance), method=method, lags=lags
    )


def composite_score(metrics: dict[str, float], weights: dict[str, float] | None = None) -> float:
    """Weighted mean of bounded transforms of the metrics, in [-1, 1]; missing metrics are skipped.

    A losing strategy (Sharpe < 0) scores at most what flat (``FLAT_METRICS``) scores with the same
    weights, so a loser never outranks not trading; a never-trading strategy has flat's metrics
    and so flat's score exactly.
    """
    w = DEFAULT_WEIGHTS if weights is None else weights
    unknown = set(w) - set(_TRANSFORMS)
    if unknown:
        raise ValueError(f"unknown weights {sorted(unknown)}; known: {sorted(_TRANSFORMS)}")
    score = _weighted(metrics, w)
    sharpe = metrics.get("sharpe")
    if sharpe is not None and math.isfinite(float(sharpe)) and float(sharpe) < 0:
        score = min(score, _weighted({k: FLAT_METRICS.get(k, metrics.get(k)) for k in metrics}, w))
    return score


def _weighted(metrics: dict[str, Any], w: dict[str, float]) -> float:
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


def sharpe_evidence(returns: Any) -> dict[str, float]:
    """What selection needs beyond the trading metrics: psr (HAC), sharpe_se (per bar, HAC), the
    per-bar Sharpe, skew and (Pearson) kurtosis; all finite (an undefined se is reported as 0)."""
    r = _finite(returns)
    se = sharpe_standard_error(r)
    std = float(r.std(ddof=1)) if r.size >= 2 else 0.0
    skew, kurt = higher_moments(r)
    return {
        "psr": probabilistic_sharpe_ratio(r),
        "sharpe_se": se if math.isfinite(se) else 0.0,
        "sharpe_per_bar": float(r.mean() / std) if std > 0 and not _no_variance(std, float(r.mean())) else 0.0,
        "skew": skew,
        "kurtosis": kurt,
    }


def metrics_from_returns(
    strat: Any, pred: Any, label: Any, periods_per_year: float, threshold: float | None = None
) -> dict[str, float]:
    """``evaluate`` given the strategy returns already computed (used for regime slices)."""
    out = strategy_metrics(strat, periods_per_year)
    pos = positions(pred, threshold)
    out["accuracy"] = directional_accuracy(pred, label)
    out["n_trades"] = float(np.count_nonzero(np.diff(pos, prepend=0.0)))
    out["exposure"] = float(np.mean(pos != 0)) if pos.size else 0.0
    out.update(sharpe_evidence(strat))
    out["composite"] = composite_score(out)
    return out


def evaluate(
    pred: Any, label: Any, bar_returns: Any, periods_per_year: float, cost_bps: float, threshold: float | None = None
) -> dict[str, float]:
    """Strategy metrics plus accuracy, n_trades (position changes), exposure, psr, sharpe_se,
    sharpe_per_bar, skew, kurtosis and composite."""
    strat = strategy_returns(pred, bar_returns, cost_bps, threshold)
    return metrics_from_returns(strat, pred, label, periods_per_year, threshold)
