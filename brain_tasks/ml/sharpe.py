"""Ledoit & Wolf (2008)'s HAC test of a Sharpe-ratio difference, for two return series on the same bars.

One test for the whole project: the replay compares policies with it (two-sided, annualised) and the
sizer's gate asks whether the agent beats a baseline (one-sided ``p_greater``, per bar with
``periods_per_year`` 1).

Pure: numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from brain_tasks.ml.metrics import RATIO_CAP, long_run_covariance, paired_returns

Z_CAP = 1e6  # |z| reported for a difference known exactly (finite, so JSON-safe)


@dataclass(frozen=True)
class SharpeDifference:
    """Test of SR_a = SR_b on paired bars.  Sharpe ratios, difference and se are annualised; the Sharpe
    ratios here use population moments (ddof 0, as the delta method does), so they differ from
    ``policy_metrics``' (ddof 1) by a factor sqrt((n - 1) / n).

    ``p_value`` is two-sided; ``p_greater`` is one-sided for H1: SR_a > SR_b (``p_less`` the reverse).
    ``exact`` is True when no sampling error is involved (see ``sharpe_difference_test``).
    """

    sharpe_a: float
    sharpe_b: float
    diff: float
    se: float
    z: float
    p_value: float
    p_greater: float
    p_less: float
    n: int
    lags: int
    exact: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sharpe_parts(x: np.ndarray) -> tuple[float, np.ndarray | None, list[np.ndarray]]:
    """Per-bar Sharpe mu / sigma (population moments) and, when x varies, the gradient of
    f(mu, gamma) = mu / sqrt(gamma - mu^2) with gamma = E[x^2], and the moment series (x, x^2).

    Without variance the Sharpe is exact: 0 for all-zero returns (flat), +/-inf for a constant
    non-zero return; no gradient (it carries no sampling error)."""
    mu = float(x.mean())
    var = float(np.mean(np.square(x - mu)))  # not E[x^2] - mu^2, which cancels to noise on a constant
    if math.sqrt(var) <= 1e-12 * abs(mu) or var == 0.0:  # the rule of metrics: rounding is no variance
        return (0.0 if mu == 0 else math.copysign(math.inf, mu)), None, []
    gamma = var + mu * mu
    v15 = var ** 1.5
    return mu / math.sqrt(var), np.array([gamma / v15, -mu / (2.0 * v15)]), [x, x * x]


def _exact(sr_a: float, sr_b: float, n: int, ann: float, note: str) -> SharpeDifference:
    """A comparison without sampling error: decided by the sign of the difference (p 0 or 1)."""
    equal = sr_a == sr_b or (math.isfinite(sr_a) and math.isfinite(sr_b)
                             and abs(sr_a - sr_b) <= 1e-9 * max(abs(sr_a), abs(sr_b), 1e-300))
    diff = 0.0 if equal else sr_a - sr_b
    greater, less = (1.0, 1.0) if equal else ((0.0, 1.0) if diff > 0 else (1.0, 0.0))
    cap = lambda v: float(np.clip(v * ann, -RATIO_CAP, RATIO_CAP))  # noqa: E731 - JSON-safe, as metrics caps
    z = 0.0 if equal else math.copysign(Z_CAP, diff)
    return SharpeDifference(cap(sr_a), cap(sr_b), cap(diff), 0.0, z,
                            1.0 if equal else 0.0, greater, less, n, 0, True, note)


def sharpe_difference_test(a: Any, b: Any, periods_per_year: float, lags: int | None = None) -> SharpeDifference:
    """Ledoit & Wolf (2008)'s HAC test of H0: SR_a = SR_b for two return series on the same bars.

    The per-bar Sharpe ratios are f(mu, gamma) = mu / sqrt(gamma - mu^2) of each series' first two
    moments; the delta method maps the long-run covariance Psi of (a, b, a^2, b^2) -- prewhitened
    Newey-West, ``metrics.long_run_covariance``, Andrews' bandwidth unless ``lags`` -- to
    se^2 = grad' Psi grad / n, so autocorrelation, heteroskedasticity and the correlation between the two
    policies (which share bars and often positions) are all allowed for.  z = diff / se against the
    normal.  Pandas Series are paired by index (inner join), arrays by position; non-finite pairs dropped.

    Degenerate cases, each answered exactly (``exact`` True, se 0, a one-line ``note``):
    - fewer than 3 paired bars: no evidence, diff 0, every p-value 1;
    - both series without variance (e.g. ``flat`` against ``flat``): their Sharpe ratios are known
      exactly (0 for all-zero returns, +/-inf -- reported capped at ``metrics.RATIO_CAP`` -- for a
      constant non-zero return), so p is 0 for the larger one's side and 1 otherwise; equal: all p 1;
    - identical series, or one a positive multiple of the other: the Sharpe ratios are equal, all p 1.
    One series without variance and the other varying (a policy against ``flat``) is not degenerate:
    the constant one's Sharpe has no sampling error, so the test is the other's HAC Sharpe test.
    """
    x, y = paired_returns(a, b)
    n, ann = len(x), math.sqrt(periods_per_year)
    if n < 3:
        return _exact(0.0, 0.0, n, ann, f"only {n} paired bars: no evidence either way")
    if np.array_equal(x, y):
        sr = _sharpe_parts(x)[0]
        return _exact(sr, sr, n, ann, "identical series: equal Sharpe ratios")
    sr_a, g_a, m_a = _sharpe_parts(x)
    sr_b, g_b, m_b = _sharpe_parts(y)
    if g_a is None and g_b is None:
        return _exact(sr_a, sr_b, n, ann, "neither series varies: the Sharpe ratios are known exactly")
    if g_a is None and math.isinf(sr_a) or g_b is None and math.isinf(sr_b):
        return _exact(sr_a, sr_b, n, ann, "a constant non-zero return has an infinite Sharpe ratio")
    # Gradient of SR_a - SR_b on the moments of the series that vary (a constant one has none).
    grad_a = np.concatenate([g_a if g_a is not None else [], np.zeros(len(m_b))])
    grad_b = np.concatenate([np.zeros(len(m_a)), g_b if g_b is not None else []])
    psi, used = long_run_covariance(np.column_stack(m_a + m_b), lags)
    grad = grad_a - grad_b
    var = max(float(grad @ psi @ grad), 0.0)
    # Perfectly co-moving Sharpe estimates (b a positive multiple of a): the variance cancels to rounding.
    if var <= 1e-12 * (float(grad_a @ psi @ grad_a) + float(grad_b @ psi @ grad_b)):
        return _exact(sr_a, sr_b, n, ann, "the two Sharpe estimates move together exactly")
    se = math.sqrt(var / n)
    diff = sr_a - sr_b
    z = diff / se
    return SharpeDifference(sr_a * ann, sr_b * ann, diff * ann, se * ann, float(np.clip(z, -Z_CAP, Z_CAP)),
                            float(2.0 * stats.norm.sf(abs(z))), float(stats.norm.sf(z)), float(stats.norm.cdf(z)),
                            n, int(used), False, "")
