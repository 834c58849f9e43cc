"""The rollback rule: the champion against the previous version on the same recent out-of-time window.

Roll back when the champion's mean per-bar return is below the previous version's by more than
``margin`` (same units as the returns) and a one-sided paired t-test says so at ``alpha`` with at
least ``min_samples`` paired bars.  Pairing bar by bar removes the market's common movement, which is
what makes a short window informative.  The t-test treats bars as independent: a strategy's per-bar
returns are close to serially uncorrelated even when its positions persist, because market returns are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

ACTIONS = ("keep", "rollback", "insufficient_evidence")


@dataclass(frozen=True)
class RollbackDecision:
    """What to do, why (in words), and the numbers behind it (finite floats)."""

    action: str
    reason: str
    stats: dict[str, float] = field(default_factory=dict)


def _paired(champion: Any, previous: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(champion, pd.Series) and isinstance(previous, pd.Series):
        joined = pd.concat([champion.rename("c"), previous.rename("p")], axis=1, join="inner")
        c, p = joined["c"].to_numpy(dtype="float64"), joined["p"].to_numpy(dtype="float64")
    else:
        c, p = np.asarray(champion, dtype="float64").ravel(), np.asarray(previous, dtype="float64").ravel()
        if c.size != p.size:
            raise ValueError(f"champion has {c.size} returns, previous {p.size}; pass Series to align by index")
    ok = np.isfinite(c) & np.isfinite(p)
    return c[ok], p[ok]


def _sharpe(r: np.ndarray) -> float:
    if r.size < 2:
        return 0.0
    sd = float(r.std(ddof=1))
    return float(r.mean() / sd) if sd > 0 else 0.0


def rollback_decision(
    champion_returns: Any,
    previous_returns: Any,
    *,
    margin: float,
    min_samples: int,
    alpha: float = 0.05,
) -> RollbackDecision:
    """Decide keep / rollback / insufficient_evidence (see the module docstring for the rule)."""
    if margin < 0 or not 0 < alpha < 1 or min_samples < 2:
        raise ValueError("need margin >= 0, 0 < alpha < 1 and min_samples >= 2")
    c, p = _paired(champion_returns, previous_returns)
    n = c.size
    diff = p - c  # positive = the previous version earned more
    mean_diff = float(diff.mean()) if n else 0.0
    base = {
        "n": float(n),
        "min_samples": float(min_samples),
        "margin": float(margin),
        "alpha": float(alpha),
        "champion_mean": float(c.mean()) if n else 0.0,
        "previous_mean": float(p.mean()) if n else 0.0,
        "mean_diff": mean_diff,
        "champion_sharpe": _sharpe(c),
        "previous_sharpe": _sharpe(p),
        "t_stat": 0.0,
        "p_value": 1.0,
    }
    if n < min_samples:
        return RollbackDecision(
            "insufficient_evidence",
            f"only {n} paired bars on the recent window, need {min_samples}; keeping the champion",
            base,
        )
    sd = float(diff.std(ddof=1))
    # Rounding leaves a ~1e-19 spread on identical differences; that is no variance, not a t-test.
    if sd > 1e-12 * abs(mean_diff):
        test = stats.ttest_1samp(diff, popmean=margin, alternative="greater")
        t_stat, p_value = float(test.statistic), float(test.pvalue)
    else:
        # Identical differences on every bar: the shortfall is known exactly.
        t_stat, p_value = 0.0, 0.0 if mean_diff > margin else 1.0
    base.update(t_stat=t_stat if math.isfinite(t_stat) else 0.0, p_value=p_value if math.isfinite(p_value) else 1.0)
    shortfall = f"the champion's mean return per bar is {mean_diff:+.3g} below the previous version's"
    if mean_diff > margin and base["p_value"] <= alpha:
        return RollbackDecision(
            "rollback",
            f"roll back: over {n} bars {shortfall}, more than the margin {margin:g} "
            f"(one-sided paired t-test p = {base['p_value']:.3g} <= {alpha:g})",
            base,
        )
    if mean_diff <= margin:
        why = f"the shortfall {mean_diff:+.3g} is within the margin {margin:g}"
    else:
        why = (
            f"the shortfall {mean_diff:+.3g} exceeds the margin but is not significant "
            f"(p = {base['p_value']:.3g} > {alpha:g})"
        )
    return RollbackDecision("keep", f"keep the champion: over {n} bars {why}", base)


def promotion_decision(candidate_returns: Any, champion_returns: Any, *, alpha: float = 0.05,
                       min_samples: int = 288, margin: float = 0.0) -> RollbackDecision:
    """promote | keep | insufficient_evidence for a newly trained candidate against the champion on the
    same out-of-time bars: promoted unless significantly worse."""
    d = rollback_decision(candidate_returns, champion_returns, margin=margin, min_samples=min_samples, alpha=alpha)
    n = int(d.stats.get("n", 0))
    if d.action == "insufficient_evidence":
        return RollbackDecision(d.action, f"only {n} paired out-of-time bars, {min_samples} needed to judge", d.stats)
    if d.action == "rollback":
        return RollbackDecision("keep", f"over {n} bars the candidate earned {d.stats['mean_diff']:.3g} less per bar "
                                f"than the champion (p = {d.stats['p_value']:.3g} <= {alpha:g})", d.stats)
    return RollbackDecision("promote", f"over {n} bars the candidate was not significantly worse "
                            f"(difference {-d.stats['mean_diff']:+.3g} per bar, p = {d.stats['p_value']:.3g})", d.stats)


def live_rollback_decision(champion_returns: Any, previous_returns: Any, *, alpha: float = 0.05,
                           min_samples: int = 288) -> RollbackDecision:
    """rollback | keep | insufficient_evidence for the current champion against the previous one."""
    d = rollback_decision(champion_returns, previous_returns, margin=0.0, min_samples=min_samples, alpha=alpha)
    n = int(d.stats.get("n", 0))
    if d.action == "insufficient_evidence":
        return RollbackDecision(d.action, f"only {n} live bars, {min_samples} needed to judge", d.stats)
    if d.action == "rollback":
        return RollbackDecision("rollback", f"over {n} live bars it earned {d.stats['mean_diff']:.3g} less per bar "
                                f"than the previous champion (p = {d.stats['p_value']:.3g} <= {alpha:g})", d.stats)
    return RollbackDecision("keep", f"over {n} live bars it was not significantly worse than the previous champion "
                            f"(p = {d.stats['p_value']:.3g})", d.stats)
