"""Volatility regimes from the data, causally, and model choice per regime.

A bar's regime compares its trailing realised volatility with the trailing quantiles (25%, 75%, 95%)
of that same volatility over the previous ``lookback`` bars: low / normal / high / extreme.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from brain_tasks.ml.features import validate_candles
from brain_tasks.ml.metrics import metrics_from_returns, strategy_returns

REGIMES = ("low", "normal", "high", "extreme")
REGIME_QUANTILES = (0.25, 0.75, 0.95)


def volatility_regimes(candles: pd.DataFrame, *, window: int, lookback: int) -> pd.Series:
    """Regime label per bar, indexed by ts; NaN during warm-up (before ``window`` returns exist).

    Until ``lookback`` bars of volatility exist the quantiles use all the history so far (at least
    ``window`` values), so the labels never look ahead.
    """
    validate_candles(candles)
    if window < 2 or lookback < window:
        raise ValueError(f"need window >= 2 and lookback >= window, got {window}, {lookback}")
    close = pd.Series(candles["close"].to_numpy(dtype="float64"))
    rv = np.log(close).diff().rolling(window, min_periods=window).std()
    roll = rv.rolling(lookback, min_periods=window)
    q = [roll.quantile(level).to_numpy() for level in REGIME_QUANTILES]
    v = rv.to_numpy()
    code = (v > q[0]).astype(int) + (v > q[1]).astype(int) + (v > q[2]).astype(int)
    labels = np.asarray(REGIMES, dtype=object)[code]
    labels[np.isnan(v) | np.isnan(q[2])] = None
    return pd.Series(labels, index=pd.DatetimeIndex(candles["ts"], name="ts"), name="regime", dtype="str")


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


def select_per_regime(
    candidates: dict[str, dict[str, dict[str, float]]],
    *,
    min_bars: int,
    champion: dict[str, str] | None = None,
    margin: float = 0.05,
) -> dict[str, dict[str, Any]]:
    """Pick a model per regime: best composite among models with at least ``min_bars`` bars there.

    ``candidates`` maps model -> regime -> metrics (from ``metrics_by_regime``).  Hysteresis: a
    challenger replaces the regime's champion only if its composite beats the champion's by more
    than ``margin`` (composites live in [-1, 1]).  ``confidence`` is the chosen model's PSR in that
    regime: the probability that its true Sharpe there is above zero given the sample length.
    """
    champion = champion or {}
    out: dict[str, dict[str, Any]] = {}
    for regime in REGIMES:
        eligible = {}
        for model, per_regime in candidates.items():
            m = per_regime.get(regime)
            if m and m.get("n_bars", 0) >= min_bars:
                eligible[model] = m
        incumbent = champion.get(regime)
        if not eligible:
            out[regime] = {
                "model": incumbent,
                "score": 0.0,
                "confidence": 0.0,
                "n_bars": 0.0,
                "switched": False,
                "reason": f"no candidate has {min_bars} bars in regime '{regime}'"
                + (f"; keeping champion {incumbent}" if incumbent else "; no model chosen"),
            }
            continue
        best = max(sorted(eligible), key=lambda k: eligible[k]["composite"])
        best_score = float(eligible[best]["composite"])
        chosen, switched = best, incumbent is not None and best != incumbent
        if incumbent is None:
            reason = f"{best} has the best composite {best_score:.3f} of {len(eligible)} eligible models"
        elif best == incumbent:
            reason = f"champion {best} still has the best composite {best_score:.3f}"
        elif incumbent in eligible and best_score <= eligible[incumbent]["composite"] + margin:
            chosen, switched = incumbent, False
            reason = (
                f"{best} ({best_score:.3f}) does not beat champion {incumbent} "
                f"({eligible[incumbent]['composite']:.3f}) by more than {margin}; keeping {incumbent}"
            )
        elif incumbent in eligible:
            reason = (
                f"{best} ({best_score:.3f}) beats champion {incumbent} "
                f"({eligible[incumbent]['composite']:.3f}) by more than {margin}"
            )
        else:
            reason = (
                f"champion {incumbent} lacks {min_bars} bars in '{regime}'; "
                f"{best} has the best composite {best_score:.3f}"
            )
        m = eligible[chosen]
        out[regime] = {
            "model": chosen,
            "score": float(m["composite"]),
            "confidence": float(m.get("psr", 0.0)),
            "n_bars": float(m["n_bars"]),
            "switched": bool(switched),
            "reason": reason,
        }
    return out
