"""Volatility regimes from the data, causally, and the deflated choice of what to trade per regime.

A bar's regime compares its trailing realised volatility with the trailing quantiles (25%, 75%, 95%)
of that same volatility over the previous ``lookback`` bars: low / normal / high / extreme.

Selection (``select_per_regime``) treats every (candidate, scope) Sharpe ratio it looks at as a trial:
with 3 models x 4 regimes and no correction, pure noise showed a "confidence" above 0.95 in 10-15% of
datasets.  The confidence of a choice is the Deflated Sharpe Ratio (Bailey & Lopez de Prado 2014)
over all those trials, with the autocorrelation-robust Sharpe standard error of ``ml.metrics``.  Flat
(no position, Sharpe exactly 0) and buy-and-hold are always candidates; a model or buy-and-hold is
traded only when its DSR reaches ``dsr_level``, otherwise the choice is flat.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from brain_tasks.ml.features import validate_candles, window_mean_std
from brain_tasks.ml.metrics import (
    composite_score,
    expected_max_sharpe,
    metrics_from_returns,
    probabilistic_sharpe_ratio,
    sharpe_evidence,
    sharpe_standard_error,
    strategy_metrics,
    strategy_returns,
)

REGIMES = ("low", "normal", "high", "extreme")
REGIME_QUANTILES = (0.25, 0.75, 0.95)
ALL = "all"
SCOPES = (*REGIMES, ALL)
FLAT, BUY_AND_HOLD = "flat", "buy_and_hold"
OOS_COLUMNS = ("ts", "strategy_return", "bar_return", "regime")


def volatility_regimes(candles: pd.DataFrame, *, window: int, lookback: int) -> pd.Series:
    """Regime label per bar, indexed by ts; NaN during warm-up (before ``window`` returns exist).

    Until ``lookback`` bars of volatility exist the quantiles use all the history so far (at least
    ``window`` values), so the labels never look ahead.  After that a label depends on the last
    ``required_history(window, lookback)`` candles only, bit for bit: the volatility is window-exact
    (`features.window_mean_std`) and a quantile is an order statistic of its window.
    """
    validate_candles(candles)
    if window < 2 or lookback < window:
        raise ValueError(f"need window >= 2 and lookback >= window, got {window}, {lookback}")
    close = pd.Series(candles["close"].to_numpy(dtype="float64"))
    rv = pd.Series(window_mean_std(np.log(close).diff(), window)[1])
    roll = rv.rolling(lookback, min_periods=window)
    q = [roll.quantile(level).to_numpy() for level in REGIME_QUANTILES]
    v = rv.to_numpy()
    code = (v > q[0]).astype(int) + (v > q[1]).astype(int) + (v > q[2]).astype(int)
    labels = np.asarray(REGIMES, dtype=object)[code]
    labels[np.isnan(v) | np.isnan(q[2])] = None
    return pd.Series(labels, index=pd.DatetimeIndex(candles["ts"], name="ts"), name="regime", dtype="str")


def last_regime(candles: pd.DataFrame, *, window: int, lookback: int) -> str | None:
    """``volatility_regimes``' label of the last candle (None during warm-up), computing that bar's
    quantiles only, from its last ``required_history`` candles: serving's path, bit for bit the same
    (pandas' rolling quantile is linear between the order statistics around ``level * (n - 1)``)."""
    validate_candles(candles, allow_constant=True)  # a quiet window of a longer history
    if window < 2 or lookback < window:
        raise ValueError(f"need window >= 2 and lookback >= window, got {window}, {lookback}")
    close = candles["close"].to_numpy(dtype="float64")[-required_history(window, lookback):]
    logc = np.log(close)
    r1 = np.concatenate([[np.nan], logc[1:] - logc[:-1]])
    rv = window_mean_std(r1, window)[1][-lookback:]
    values = np.sort(rv[~np.isnan(rv)])
    if np.isnan(rv[-1]) or len(values) < window:
        return None
    code = 0
    for level in REGIME_QUANTILES:
        at = level * (len(values) - 1)
        low = int(at)
        q = values[low] if low == at else values[low] + (values[low + 1] - values[low]) * (at - low)
        code += int(rv[-1] > q)
    return REGIMES[code]


def required_history(window: int, lookback: int) -> int:
    """Candle rows, the bar itself included, that a bar's regime label depends on: ``lookback``
    volatilities of ``window`` returns each (one more close for the first return)."""
    return lookback + window


def metrics_by_regime(
    pred: Any,
    label: Any,
    bar_returns: Any,
    regimes: Any,
    periods_per_year: float,
    cost_bps: float,
    threshold: float | None = None,
) -> dict[str, dict[str, float]]:
    """``evaluate`` restricted to the bars of each regime (every regime present as a key).

    The strategy is run once over the whole series and then sliced, so a regime's bars carry the
    costs actually paid there rather than artificial re-entries at each regime boundary.
    """
    p = np.asarray(pred, dtype="float64")
    y = np.asarray(label, dtype="float64")
    strat = strategy_returns(p, bar_returns, cost_bps, threshold).to_numpy()
    reg = np.asarray(pd.Series(regimes).astype(object).to_numpy())
    if not (len(p) == len(y) == len(strat) == len(reg)):
        raise ValueError("pred, label, bar_returns and regimes must have the same length")
    out = {}
    for name in REGIMES:
        mask = reg == name
        out[name] = metrics_from_returns(strat[mask], p[mask], y[mask], periods_per_year, threshold)
    return out


def _return_metrics(r: np.ndarray, periods_per_year: float) -> dict[str, float]:
    out = strategy_metrics(r, periods_per_year) | sharpe_evidence(r)
    out["exposure"] = float(np.mean(r != 0)) if r.size else 0.0
    out["composite"] = composite_score(out)
    return out


def _bars(oos_by_model: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Bar returns and regimes by ts, the union over the models' OOS frames."""
    frames = []
    for name, oos in oos_by_model.items():
        missing = set(OOS_COLUMNS) - set(oos.columns)
        if missing:
            raise ValueError(f"OOS frame of {name!r} lacks columns {sorted(missing)}")
        frames.append(oos[["ts", "bar_return", "regime"]])
    if not frames:
        raise ValueError("no OOS frames to select from")
    bars = pd.concat(frames).drop_duplicates("ts").sort_values("ts", kind="stable")
    return bars.set_index("ts")


def benchmark_metrics(oos: pd.DataFrame, periods_per_year: float) -> dict[str, dict[str, float]]:
    """Metrics of the two benchmarks on an OOS frame's bars: ``flat`` (never holds a position: the
    neutral values of ``metrics.FLAT_METRICS``) and ``buy_and_hold`` (long every bar, the one entry
    cost ignored), with the same keys as a model's: trading metrics, psr, sharpe_se, skew, kurtosis,
    exposure, composite."""
    bar = oos["bar_return"].to_numpy(dtype="float64")
    return {FLAT: _return_metrics(np.zeros(bar.size), periods_per_year),
            BUY_AND_HOLD: _return_metrics(bar, periods_per_year)}


def select_per_regime(
    oos_by_model: dict[str, pd.DataFrame],
    *,
    periods_per_year: float,
    n_trials: int | None = None,
    dsr_level: float = 0.95,
    min_bars: int = 200,
    previous: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """What to trade in each regime and overall ("all"): a model type, "buy_and_hold" or "flat".

    ``oos_by_model`` maps model type -> its walk-forward OOS frame (columns ts, strategy_return,
    bar_return, regime).  Trials: every (candidate, scope) with at least ``min_bars`` bars, where the
    candidates are the models and buy-and-hold (flat's Sharpe is exactly 0: not a trial) and the
    scopes the four regimes and "all"; ``n_trials`` overrides their count (pass the number of
    configs x models x scopes tried for the symbol when more were tried than passed here).  Each
    trial's confidence is its DSR: the PSR (HAC standard error) against the Sharpe the best of
    n_trials zero-skill trials would reach by luck (standardised form: see the comment in the code).

    Per scope the candidate with the highest DSR is chosen if that DSR >= ``dsr_level``, else flat
    (tradeable False).  ``previous`` (scope -> model chosen last time) is kept instead while it still
    reaches ``dsr_level`` and its per-bar Sharpe is within one standard error of the best one's, so
    the choice does not flip between equally good models.

    Each entry: model, confidence (the DSR of the chosen candidate, or of the best one when the
    choice is flat), tradeable, reason (one sentence with the numbers), sharpe (annualised, of the
    chosen; 0 for flat), n_bars, plus best_candidate, psr, dsr_benchmark (the per-bar Sharpe to beat),
    n_trials and switched.
    """
    if not 0 < dsr_level < 1:
        raise ValueError(f"dsr_level must be in (0, 1), got {dsr_level}")
    bars = _bars(oos_by_model)
    regime = bars["regime"].astype(object).to_numpy()
    series: dict[str, pd.Series] = {BUY_AND_HOLD: bars["bar_return"].astype("float64")}
    for name, oos in oos_by_model.items():
        series[name] = oos.set_index("ts")["strategy_return"].astype("float64").reindex(bars.index)
    masks = {scope: np.ones(len(bars), bool) if scope == ALL else regime == scope for scope in SCOPES}

    trials: dict[tuple[str, str], dict[str, float]] = {}
    raw_se: dict[tuple[str, str], float] = {}  # each trial's HAC se as computed, for its two PSRs below
    for scope, mask in masks.items():
        for name, r in series.items():
            x = r.to_numpy()[mask]
            x = x[np.isfinite(x)]
            if x.size < max(min_bars, 3):
                continue
            sd = float(x.std(ddof=1))
            se = raw_se[(name, scope)] = sharpe_standard_error(x)
            trials[(name, scope)] = {
                "sr": float(x.mean() / sd) if sd > 0 else 0.0,
                "se": se if np.isfinite(se) else 0.0,
                "n": float(x.size),
            }
    n_total = int(n_trials) if n_trials is not None else len(trials)
    # Standardised DSR: each trial's Sharpe in units of its own HAC standard error (z), so a rare
    # regime's few bars do not set the bar for the many bars of "all".  A zero-skill trial's z has
    # variance 1 by construction; the spread across trials is used when smaller (correlated trials:
    # models that agree, regimes inside "all", which lowers the luck to beat, as the DSR intends) and
    # capped at 1 otherwise, so skilled models do not raise the bar for themselves.
    z = np.array([t["sr"] / t["se"] for t in trials.values() if t["se"] > 0])
    z_var = min(1.0, float(z.var(ddof=1))) if z.size >= 2 else 1.0
    z0 = expected_max_sharpe(max(n_total, 1), z_var)
    ann = float(np.sqrt(periods_per_year))
    previous = previous or {}

    out: dict[str, dict[str, Any]] = {}
    for scope, mask in masks.items():
        n_bars = int(mask.sum())
        where = "overall" if scope == ALL else f"in regime '{scope}'"
        base = {"model": FLAT, "confidence": 0.0, "tradeable": False, "sharpe": 0.0, "n_bars": n_bars,
                "best_candidate": None, "psr": 0.5, "dsr_benchmark": 0.0, "n_trials": n_total,
                "switched": previous.get(scope, FLAT) != FLAT}
        scored = {}
        for (name, s), t in trials.items():
            if s == scope:
                x = series[name].to_numpy()[mask]
                x = x[np.isfinite(x)]
                bench = z0 * t["se"]
                se = raw_se[(name, s)]
                scored[name] = t | {"bench": bench, "dsr": probabilistic_sharpe_ratio(x, bench, se=se),
                                    "psr": probabilistic_sharpe_ratio(x, se=se)}
        if not scored:
            out[scope] = base | {"reason": f"Flat: only {n_bars} bars {where}, fewer than the {min_bars} "
                                           f"needed to judge any candidate."}
            continue
        best = max(sorted(scored), key=lambda k: (scored[k]["dsr"], scored[k]["sr"]))
        b = scored[best]
        base |= {"best_candidate": best, "confidence": float(b["dsr"]), "psr": float(b["psr"]),
                 "dsr_benchmark": float(b["bench"] * ann)}
        if b["dsr"] < dsr_level:
            out[scope] = base | {"reason": (
                f"Flat: no candidate beats flat {where} with DSR >= {dsr_level:g} over {n_total} trials; the "
                f"best, {best}, has DSR {b['dsr']:.3f} (Sharpe {b['sr'] * ann:.2f} over {int(b['n'])} bars).")}
            continue
        chosen, note = best, ""
        incumbent = previous.get(scope)
        if (incumbent in scored and incumbent != best and scored[incumbent]["dsr"] >= dsr_level
                and b["sr"] - scored[incumbent]["sr"] <= b["se"]):
            chosen = incumbent
            note = (f", kept over {best} (Sharpe {b['sr'] * ann:.2f}) whose lead is within one standard error")
        c = scored[chosen]
        out[scope] = base | {
            "model": chosen,
            "confidence": float(c["dsr"]),
            "tradeable": True,
            "sharpe": float(c["sr"] * ann),
            "psr": float(c["psr"]),
            "dsr_benchmark": float(c["bench"] * ann),
            "switched": chosen != previous.get(scope, chosen),
            "reason": (f"{chosen} {where}: DSR {c['dsr']:.3f} >= {dsr_level:g} over {n_total} trials "
                       f"(Sharpe {c['sr'] * ann:.2f} over {int(c['n'])} bars, against {c['bench'] * ann:.2f} "
                       f"expected from the best zero-skill trial){note}."),
        }
    return out
