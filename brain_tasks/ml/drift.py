"""Feature drift between a reference window and the window right after it, for serially dependent data.

Consecutive bars of a market feature are not independent draws: a rolling 288-bar volatility is
almost the same number from one bar to the next.  Tests that count every row as an observation (the
permutation PSI and the plain two-sample KS test this module used before) alarmed 68% of the time on
an AR(1) series with phi = 0.9 and no change at all, and on nearly every rolling feature of real pairs.

Choice: an effective-sample-size correction of the Kolmogorov-Smirnov test, not a block permutation.
Both windows are short (hundreds of rows) and the dependence can be very persistent (phi 0.98 means
720 rows carry about 7 independent ones); a block permutation needs blocks longer than the dependence
and so, here, would have only a handful of blocks to permute: a coarse, unstable null.  The ESS
correction instead keeps the KS statistic and evaluates it as if the windows held n / tau and
m / tau independent rows, where tau is the integrated autocorrelation time of the feature:

- tau is estimated on the normal scores (ranks) of the values, so heavy tails (t3) and monotone
  transforms do not change it, with each window demeaned separately, so a genuine level shift does not
  masquerade as persistence and cost power;
- tau = max(AR(1) tau (1 + rho) / (1 - rho) with rho bias-corrected (Kendall: + (1 + 3 rho) / n), and
  Geyer's initial-positive-sequence sum of the autocorrelations), so both short, strong dependence and
  slowly decaying dependence are covered;
- the KS p-value uses the Kolmogorov distribution at the effective sizes (with Stephens' small-sample
  correction); the positive correlation between two adjacent windows only makes this conservative.

Family-wise control over the features: Holm's step-down adjustment of the per-feature KS p-values
(``pvalue``); ``drifted`` = ``pvalue <= alpha``, so under no drift the chance that any feature of the
set is flagged is at most ``alpha``.  PSI is reported for the eye, with the PSI a window pair of these
effective sizes would need to reach the Bonferroni level (``psi_threshold``: n_h * PSI is close to a
chi-square with bins - 1 degrees of freedom).  How much a feature moved: ``effect_size`` (current minus
reference mean, in reference standard deviations).  Measured calibration: README, bench/stats.py.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from brain_tasks.timekeeping import timeframe_seconds

DEFAULT_BINS = 10
MAX_TAU_FRACTION = 0.5  # tau is capped at half the shorter window: at least two effective rows
_EPS = 1e-4  # floor on bin shares so empty bins give a large but finite PSI

COLUMNS = (
    "feature",
    "psi",
    "psi_threshold",
    "ks_stat",
    "ks_pvalue",
    "pvalue",
    "drifted",
    "effect_size",
    "n_reference",
    "n_current",
    "n_eff_reference",
    "n_eff_current",
    "tau",
)


def _edges(pooled: np.ndarray, bins: int) -> np.ndarray:
    return np.unique(np.quantile(pooled, np.linspace(0, 1, bins + 1)[1:-1]))


def _psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    p = np.maximum(ref_counts / ref_counts.sum(), _EPS)
    q = np.maximum(cur_counts / cur_counts.sum(), _EPS)
    return float(((q - p) * np.log(q / p)).sum())


def psi(reference: np.ndarray, current: np.ndarray, bins: int = DEFAULT_BINS) -> float:
    """Population stability index with quantile bins of the pooled sample."""
    ref = np.asarray(reference, dtype="float64")
    cur = np.asarray(current, dtype="float64")
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    inner = _edges(np.concatenate([ref, cur]), bins)
    k = inner.size + 1
    rc = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=k)
    cc = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=k)
    return _psi_from_counts(rc.astype("float64"), cc.astype("float64"))


def _autocorrelations(windows: list[np.ndarray], max_lag: int) -> np.ndarray:
    """Autocorrelations at lags 0..max_lag pooled over windows, each window demeaned on its own."""
    num = np.zeros(max_lag + 1)
    for w in windows:
        x = w - w.mean()
        n = x.size
        size = 1 << (2 * n - 1).bit_length()
        f = np.fft.rfft(x, size)
        acov = np.fft.irfft(f * np.conj(f), size)[: max_lag + 1]
        num[: min(max_lag + 1, n)] += acov[: min(max_lag + 1, n)]
    return num / num[0] if num[0] > 0 else np.zeros(max_lag + 1)


def autocorrelation_time(*windows: Any) -> float:
    """Integrated autocorrelation time tau >= 1 of a feature observed in consecutive windows
    (see the module docstring); n / tau rows of the window are worth as much as n independent ones."""
    parts = [np.asarray(w, dtype="float64") for w in windows]
    parts = [w[np.isfinite(w)] for w in parts]
    parts = [w for w in parts if w.size >= 3]
    if not parts:
        return 1.0
    pooled = np.concatenate(parts)
    if np.ptp(pooled) == 0:
        return 1.0
    # Normal scores of the pooled ranks: robust to heavy tails and to any monotone transform.
    scores = special.ndtri((stats.rankdata(pooled) - 0.5) / pooled.size)
    splits = np.cumsum([w.size for w in parts])[:-1]
    z = [w for w in np.split(scores, splits) if np.ptp(w) > 0]
    if not z:
        return 1.0
    n = sum(w.size for w in z)
    rho = _autocorrelations(z, min(max(w.size for w in z) - 1, 1000))
    r1 = float(rho[1]) if rho.size > 1 else 0.0
    r1 = float(np.clip(r1 + (1.0 + 3.0 * r1) / n, 0.0, 0.999))
    tau_ar = (1.0 + r1) / (1.0 - r1)
    # Geyer (1992): sum consecutive pairs of autocorrelations while the pair sums stay positive.
    tau_geyer = -1.0
    for k in range(0, rho.size - 1, 2):
        pair = rho[k] + rho[k + 1]
        if pair <= 0:
            break
        tau_geyer += 2.0 * pair
    return float(max(1.0, tau_ar, tau_geyer))


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance sup |F_ref - F_cur| (without scipy's exact p-value,
    which is slow and assumes independent rows)."""
    a, b = np.sort(reference), np.sort(current)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def _ks_pvalue(d: float, n_eff: float, m_eff: float) -> float:
    en = math.sqrt(n_eff * m_eff / (n_eff + m_eff))
    # Stephens' (1970) correction makes the asymptotic Kolmogorov law accurate down to a few rows.
    return float(min(1.0, stats.kstwobign.sf((en + 0.12 + 0.11 / en) * d)))


def _holm(pvalues: np.ndarray) -> np.ndarray:
    m = pvalues.size
    order = np.argsort(pvalues, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(pvalues[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out


def feature_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    seed: int = 0,
    alpha: float = 0.05,
    bins: int = DEFAULT_BINS,
) -> pd.DataFrame:
    """One row per feature common to both frames, rows in time order in each frame.

    Columns: feature, psi, psi_threshold, ks_stat, ks_pvalue (dependence-adjusted, per feature),
    pvalue (Holm-adjusted over the features: the family-wise p-value), drifted (pvalue <= alpha),
    effect_size (standardised mean shift), n_reference, n_current, n_eff_reference, n_eff_current
    and tau (the autocorrelation time that turns one into the other).  NaNs are dropped per feature;
    a feature with fewer than two values in a window or no variance gets pvalue 1 and
    psi_threshold NaN.  ``seed`` is accepted for interface stability: the test is deterministic.
    """
    del seed
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    features = [c for c in reference.columns if c in current.columns]
    level = alpha / max(1, len(features))
    rows = []
    for name in features:
        ref = reference[name].to_numpy(dtype="float64", na_value=np.nan)
        cur = current[name].to_numpy(dtype="float64", na_value=np.nan)
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        row: dict[str, Any] = dict.fromkeys(COLUMNS, 0.0)
        row.update(feature=name, psi_threshold=float("nan"), ks_pvalue=1.0, pvalue=1.0, drifted=False,
                   n_reference=int(ref.size), n_current=int(cur.size), n_eff_reference=float(ref.size),
                   n_eff_current=float(cur.size), tau=1.0)
        if ref.size >= 2 and cur.size >= 2 and np.ptp(np.concatenate([ref, cur])) > 0:
            tau = min(autocorrelation_time(ref, cur), MAX_TAU_FRACTION * min(ref.size, cur.size))
            tau = max(tau, 1.0)
            n_eff, m_eff = ref.size / tau, cur.size / tau
            d = ks_statistic(ref, cur)
            k = _edges(np.concatenate([ref, cur]), bins).size + 1
            sd = float(ref.std(ddof=1))
            row.update(
                psi=psi(ref, cur, bins),
                psi_threshold=float(stats.chi2.isf(level, k - 1) * (1 / n_eff + 1 / m_eff)) if k > 1 else math.nan,
                ks_stat=d,
                ks_pvalue=_ks_pvalue(d, n_eff, m_eff),
                effect_size=float((cur.mean() - ref.mean()) / sd) if sd > 0 else 0.0,
                n_eff_reference=float(n_eff),
                n_eff_current=float(m_eff),
                tau=float(tau),
            )
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    if len(out):
        out["pvalue"] = _holm(out["ks_pvalue"].to_numpy(dtype="float64"))
        out["drifted"] = (out["pvalue"] <= alpha).astype(bool)
    return out


def drift_windows(
    index: pd.DatetimeIndex,
    timeframe: str,
    *,
    current_days: float = 1.0,
    min_current_bars: int = 168,
    reference_ratio: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (reference, current) over ``index`` (sorted bar timestamps) for the nightly test.

    current: the last ``current_days`` of bars (what arrived since the last nightly run), but at
    least ``min_current_bars`` bars, so a 1h or 1d timeframe still gets a window worth testing (168
    bars = 1 week of 1h bars, 168 days of 1d bars; 1 day = 288 bars at 5m, 1440 at 1m).
    reference: the ``reference_ratio`` times as many bars right before it.  With a shorter history
    the current window is the last fifth and the reference the rest, so the two stay adjacent.
    """
    n = len(index)
    per_day = 86400 / timeframe_seconds(timeframe)
    cur = max(int(min_current_bars), math.ceil(current_days * per_day))
    if n < cur * (reference_ratio + 1):
        cur = n // (reference_ratio + 1)
    ref = min(n - cur, cur * reference_ratio)
    positions = np.arange(n)
    current = positions >= n - cur
    reference = (positions >= n - cur - ref) & ~current
    return reference, current
