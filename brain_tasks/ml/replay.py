"""The pure core of a replay: trade each policy's per-step, per-regime choices over history, and judge
the policies against each other with statistics that survive serial dependence and many trials.

A replay walks steps t_1 < ... < t_K.  At each step a *policy* (``brain``, ``newest:<type>``,
``best_composite``, ``flat``, ``buy_and_hold``) names, per volatility regime, what to trade until the
next step: a model type, ``flat`` or ``buy_and_hold``.  ``trade_policy`` turns those choices into one
position per bar by the backtest's own rule and prices it with the backtest's own costs
(``metrics.strategy_returns``), as one continuous strategy, so a change of model costs something only
when it changes the position.

The statistics, each with its reference:
- ``policy_metrics``: the trading metrics of ``metrics.strategy_metrics`` plus the Sharpe ratio's HAC
  standard error (Lo 2002, ``metrics.sharpe_standard_error``), turnover and time in market;
- ``sharpe_difference_test`` (``ml.sharpe``): Ledoit & Wolf (2008)'s delta-method test of a Sharpe-ratio
  difference with a HAC long-run covariance, for two policies on the same bars;
- ``dsr_of_best``: the Deflated Sharpe Ratio (Bailey & Lopez de Prado 2014) of the best policy over the
  number of policies tried;
- ``pbo_cscv``: the Probability of Backtest Overfitting by Combinatorially Symmetric Cross-Validation
  (Bailey, Borwein, Lopez de Prado & Zhu 2015);
- ``pooled_returns``: the equal-weight portfolio of the symbols;
- ``policy_table``: all of these for one symbol or the pooled portfolio, JSON-safe.

Storage helpers (``pack_returns`` / ``unpack_returns``, ``equity_curve``): float32 on a regular time
grid, NaN for bars without a return, byte-shuffled and zlib-compressed, after a 25-byte header.  A
policy in the market on every bar costs about 3.4 bytes per bar (never more than 4 plus zlib's 0.1%),
a flat one almost nothing, so a year of 5m bars for 1,000 symbols x 8 policies stays under 3 GB
(``bench/replay_stats.py`` prints the figures).  No pickle.

Pure: numpy, pandas and scipy only; no Celery, no SQL.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from brain_tasks.ml.metrics import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    positions,
    sharpe_standard_error,
    strategy_metrics,
    strategy_returns,
)
from brain_tasks.ml.regimes import BUY_AND_HOLD, FLAT
from brain_tasks.ml.sharpe import sharpe_difference_test

# A step's choice: one name for every bar of the step, or regime -> name.  In a mapping, bars whose
# regime is not a key (or unknown, during warm-up) take the OTHERWISE entry if there is one, else flat
# (live serving falls back to the champion there: pass it as OTHERWISE to replay that).
OTHERWISE = "*"
StepChoice = str | Mapping[str, str]
TRADE_COLUMNS = ("step", "regime", "choice", "position", "bar_return", "turnover", "net_return")


# --- trading ------------------------------------------------------------------------------------------

def _aligned(values: Any, index: pd.DatetimeIndex, what: str) -> np.ndarray:
    """Values on ``index``: a Series is aligned by timestamp (missing -> NaN), anything else by position."""
    if isinstance(values, pd.Series):
        return values.reindex(index).to_numpy()
    out = np.asarray(values)
    if len(out) != len(index):
        raise ValueError(f"{what} has {len(out)} values for {len(index)} bars")
    return out


def _step_of_bar(ts: pd.DatetimeIndex, step_ends: Sequence[Any]) -> np.ndarray:
    """Index k of the step whose choice trades each bar: t_k < ts <= t_{k+1}; -1 at or before t_1.
    The last step trades every bar after t_K."""
    ends = pd.DatetimeIndex(pd.to_datetime(list(step_ends), utc=True))
    if len(ends) == 0 or not ends.is_monotonic_increasing or ends.has_duplicates:
        raise ValueError("step_ends must be one or more strictly increasing timestamps")
    return np.searchsorted(ends.as_unit("ns").asi8, ts.as_unit("ns").asi8, side="left") - 1


def _choice_per_bar(step: np.ndarray, regimes: np.ndarray, choice_by_step: Sequence[StepChoice]) -> np.ndarray:
    """The name (model type, flat or buy_and_hold) each traded bar follows."""
    out = np.full(len(step), FLAT, dtype=object)
    for k, choice in enumerate(choice_by_step):
        at = step == k
        if isinstance(choice, str):
            out[at] = choice
            continue
        fallback = choice.get(OTHERWISE, FLAT)
        out[at] = [choice.get(r, fallback) if isinstance(r, str) else fallback for r in regimes[at]]
    return out


def _decision_values(chosen: np.ndarray, preds: Mapping[str, np.ndarray], threshold: float | None) -> np.ndarray:
    """One prediction-like value per bar whose ``metrics.positions`` is the policy's position: the chosen
    model's prediction, 0 for flat, a value past the threshold for buy-and-hold (long)."""
    values = np.zeros(len(chosen))
    values[chosen == BUY_AND_HOLD] = abs(threshold or 0.0) + 1.0
    for name in set(chosen.tolist()) - {FLAT, BUY_AND_HOLD}:
        if name not in preds:
            raise ValueError(f"a step chooses {name!r}, which has no predictions (known: {sorted(preds)})")
        at = chosen == name
        values[at] = preds[name][at]
    return values


def trade_policy(
    bar_returns: pd.Series,
    regimes: Any,
    predictions_by_model: Mapping[str, Any],
    choice_by_step: Sequence[StepChoice],
    step_ends: Sequence[Any],
    cost_bps: float,
    threshold: float | None = None,
) -> pd.DataFrame:
    """Per-bar position and net return of one policy over the bars after t_1, at size 1.

    ``bar_returns``: ``labels.bar_returns`` on the traded bars, indexed by ts (the return a position
    decided at bar t earns, execution lag included; finite).  ``regimes``: the causal regime label per
    bar (``regimes.volatility_regimes``), ``predictions_by_model``: model type -> per-bar predictions,
    both aligned by ts when Series, by position otherwise.  ``choice_by_step[k]`` trades the bars in
    (t_k, t_{k+1}] (the last one every bar after t_K): a name for all its bars, or regime -> name (see
    ``OTHERWISE``).  A name is a model type (position: ``metrics.positions`` of its prediction, flat where
    it has none), ``flat`` (0) or ``buy_and_hold`` (+1).

    The positions of all steps are priced as one strategy by ``metrics.strategy_returns`` itself: the
    position starts flat before the first traded bar and every change of position, within a step or
    across a step boundary, pays ``cost_bps`` per unit of turnover once; a switch of model that keeps
    the position pays nothing.  Columns: ``TRADE_COLUMNS``, indexed by ts.
    """
    if len(choice_by_step) != len(step_ends):
        raise ValueError(f"{len(choice_by_step)} step choices for {len(step_ends)} step ends")
    ts = pd.DatetimeIndex(bar_returns.index)
    step = _step_of_bar(ts, step_ends)
    keep = step >= 0
    ts, step = ts[keep], step[keep]
    r = bar_returns.to_numpy(dtype="float64")[keep]
    reg = _aligned(regimes, pd.DatetimeIndex(bar_returns.index), "regimes")[keep]
    preds = {name: _aligned(p, pd.DatetimeIndex(bar_returns.index), name).astype("float64")[keep]
             for name, p in predictions_by_model.items()}
    chosen = _choice_per_bar(step, reg, choice_by_step)
    values = _decision_values(chosen, preds, threshold)
    pos = positions(values, threshold)
    net = strategy_returns(values, r, cost_bps, threshold).to_numpy()
    return pd.DataFrame(
        {"step": step, "regime": pd.Series(reg, dtype="str").to_numpy(), "choice": chosen, "position": pos,
         "bar_return": r, "turnover": np.abs(np.diff(pos, prepend=0.0)), "net_return": net},
        index=pd.DatetimeIndex(ts, name="ts"),
    )


def flat_policy(bar_returns: pd.Series, step_ends: Sequence[Any]) -> pd.DataFrame:
    """``flat``: no position on any bar after t_1 (every net return exactly 0)."""
    return trade_policy(bar_returns, [None] * len(bar_returns), {}, [FLAT] * len(step_ends), step_ends, 0.0)


def buy_and_hold_policy(bar_returns: pd.Series, step_ends: Sequence[Any], cost_bps: float) -> pd.DataFrame:
    """``buy_and_hold``: long on every bar after t_1, whatever the regime; one entry cost on the first."""
    return trade_policy(bar_returns, [None] * len(bar_returns), {}, [BUY_AND_HOLD] * len(step_ends),
                        step_ends, cost_bps)


# --- metrics ------------------------------------------------------------------------------------------

def policy_metrics(trades: pd.DataFrame, periods_per_year: float) -> dict[str, float]:
    """``metrics.strategy_metrics`` of ``net_return`` plus ``sharpe_se`` (annualised HAC standard error of
    the Sharpe ratio, 0 when undefined, e.g. for flat), ``turnover`` (mean |change of position| per bar,
    the entry included: cost per bar = turnover x cost_bps) and ``time_in_market`` (share of bars with a
    position; for a pooled frame, of symbol-bars: the mean of its ``exposure`` column).

    ``trades``: a ``trade_policy`` frame, or a ``pooled_trades`` frame (columns net_return, turnover,
    exposure).
    """
    r = trades["net_return"].to_numpy(dtype="float64")
    out = strategy_metrics(r, periods_per_year)
    se = sharpe_standard_error(r)
    out["sharpe_se"] = float(se * math.sqrt(periods_per_year)) if math.isfinite(se) else 0.0
    n = len(trades)
    # A trade frame holds positions (size 1: in the market when non-zero); a pooled frame the share of
    # its symbols holding one, whose mean is the share of symbol-bars in the market.
    held = trades["exposure"] if "exposure" in trades else (trades["position"] != 0).astype("float64")
    out["turnover"] = float(trades["turnover"].mean()) if n else 0.0
    out["time_in_market"] = float(held.mean()) if n else 0.0
    return out


def pooled_returns(returns_by_symbol: Mapping[str, pd.Series]) -> pd.Series:
    """Equal-weight portfolio return per bar: the mean over the symbols that have a (finite) return on
    that bar, on the union of their bars.

    A symbol without data on a bar (not listed yet, a gap, skipped) is left out of that bar's average
    rather than counted as flat, so a late listing does not dilute the others; this is a portfolio
    rebalanced every bar to equal weights among the symbols present, rebalancing itself uncharged.
    """
    if not returns_by_symbol:
        raise ValueError("no symbols to pool")
    frame = pd.concat({s: r.astype("float64") for s, r in returns_by_symbol.items()}, axis=1).sort_index()
    pooled = frame.mean(axis=1, skipna=True)
    return pooled[frame.notna().any(axis=1)].rename("net_return")


def pooled_trades(trades_by_symbol: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The pooled portfolio of one policy (``pooled_returns``' rule), with its mean turnover and
    exposure (share of the symbols present holding a position) per bar, for ``policy_metrics``."""
    cols = {"net_return": lambda t: t["net_return"], "turnover": lambda t: t["turnover"],
            "exposure": lambda t: t["position"].abs()}
    return pd.DataFrame({c: pooled_returns({s: f(t) for s, t in trades_by_symbol.items()})
                         for c, f in cols.items()})


# --- many policies: DSR of the best and PBO -----------------------------------------------------------

def _per_bar_sharpe(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    if x.size < 2:
        return 0.0
    sd = float(x.std(ddof=1))
    return float(x.mean() / sd) if sd > 1e-12 * abs(float(x.mean())) and sd > 0 else 0.0


def dsr_of_best(returns_by_policy: Mapping[str, Any], periods_per_year: float) -> dict[str, Any]:
    """The Deflated Sharpe Ratio (Bailey & Lopez de Prado 2014) of the policy with the highest Sharpe
    ratio, deflated for having picked it out of every policy passed (``n_trials`` = their number, the
    trials' Sharpe variance = the variance of their per-bar Sharpe estimates): the probability that its
    true Sharpe exceeds what the best of that many zero-skill policies would show by luck
    (``metrics.deflated_sharpe_ratio``, HAC standard error).

    Returns best, dsr, n_trials, sharpe (annualised), benchmark_sharpe (the annualised Sharpe expected
    from the luckiest zero-skill trial) and trial_sharpe_variance (per bar).  Ties in Sharpe go to the
    first policy in the mapping's order.
    """
    if not returns_by_policy:
        raise ValueError("no policies")
    series = {name: np.asarray(r, dtype="float64").ravel() for name, r in returns_by_policy.items()}
    srs = {name: _per_bar_sharpe(x) for name, x in series.items()}
    best = max(srs, key=lambda k: srs[k])
    n_trials = len(srs)
    variance = float(np.var(list(srs.values()), ddof=1)) if n_trials >= 2 else 0.0
    ann = math.sqrt(periods_per_year)
    return {
        "best": best,
        "dsr": deflated_sharpe_ratio(series[best], n_trials=n_trials, trial_sharpe_variance=variance),
        "n_trials": n_trials,
        "sharpe": srs[best] * ann,
        "benchmark_sharpe": expected_max_sharpe(n_trials, variance) * ann,
        "trial_sharpe_variance": variance,
    }


def sharpe_columns(x: np.ndarray) -> np.ndarray:
    """Per-bar Sharpe ratio of each column (mean / std with ddof 1); 0 for a column without variance,
    as ``metrics`` rates a strategy that never trades."""
    mean, sd = x.mean(axis=0), x.std(axis=0, ddof=1)
    flat = ~(sd > 1e-12 * np.abs(mean))
    return np.where(flat, 0.0, mean / np.where(flat, 1.0, sd))


def _block_sharpes(blocks: np.ndarray, chosen: np.ndarray, m: int) -> np.ndarray:
    """``sharpe_columns`` of the union of the chosen blocks, for every combination at once, from the
    blocks' sums of x and x^2 (one row per combination).  The same rule for no variance."""
    s1, s2 = chosen @ blocks.sum(axis=1), chosen @ np.square(blocks).sum(axis=1)
    mean = s1 / m
    var = np.maximum(s2 - s1 * mean, 0.0) / (m - 1)
    sd = np.sqrt(var)
    flat = ~(sd > 1e-12 * np.abs(mean))
    return np.where(flat, 0.0, mean / np.where(flat, 1.0, sd))


def pbo_cscv(
    returns_matrix: Any,
    n_blocks: int = 16,
    metric: str | Callable[[np.ndarray], np.ndarray] = "sharpe",
) -> dict[str, Any]:
    """Probability of Backtest Overfitting by CSCV (Bailey, Borwein, Lopez de Prado & Zhu 2015).

    ``returns_matrix``: T bars x N policies (a DataFrame or a 2-D array, finite).  The rows are cut
    into ``n_blocks`` = S (even) consecutive blocks of ``T // S`` bars; the ``T % S`` *earliest* rows
    are left out so that every block has the same length and the latest bars are all used.  For each
    of the C(S, S/2) combinations of S/2 blocks as in-sample (IS; the rest, in time order, is
    out-of-sample, OOS): n* = the policy with the best IS metric; its OOS relative rank is
    omega = r / (N + 1), r its rank (1 = worst, N = best) among the N OOS metrics; logit
    lambda = ln(omega / (1 - omega)).  PBO = the share of combinations with lambda <= 0, i.e. where
    the IS winner is at or below the OOS median.

    Ties, deterministic: an IS tie goes to the lowest column index (``numpy.argmax``); OOS ties share
    their average rank (``scipy.stats.rankdata(method="average")``).  ``metric``: ``"sharpe"``
    (``sharpe_columns``, computed from block sums for all combinations at once) or a function mapping a
    rows x N array to N values (evaluated per combination).

    Reading it: on zero-skill policies the IS winner's OOS rank is uniform, so PBO is about 1/2
    (exactly floor((N + 1) / 2) / N in expectation: for odd N the median rank counts as overfit).  One
    replay's PBO varies a lot from one history to another when N is small (``bench/replay_stats.py``
    prints its spread), so read it with the Sharpe-difference tests, not alone.

    Returns pbo, logits (one per combination, in ``itertools.combinations`` order), n_combinations,
    n_blocks, bars_per_block, rows_left_out, n_policies.
    """
    x = np.asarray(returns_matrix, dtype="float64")
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError("returns_matrix must be T x N with N >= 2 policies")
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks must be even and >= 2, got {n_blocks}")
    if not np.isfinite(x).all():
        raise ValueError("returns_matrix has NaN or infinite values")
    t, n = x.shape
    size = t // n_blocks
    if size < 2:
        raise ValueError(f"{t} rows are too few for {n_blocks} blocks of at least 2 bars")
    blocks = x[t - size * n_blocks:].reshape(n_blocks, size, n)
    combos = list(combinations(range(n_blocks), n_blocks // 2))
    is_mask = np.zeros((len(combos), n_blocks))
    for c, combo in enumerate(combos):
        is_mask[c, list(combo)] = 1.0
    if metric == "sharpe":
        perf_is = _block_sharpes(blocks, is_mask, size * n_blocks // 2)
        perf_oos = _block_sharpes(blocks, 1.0 - is_mask, size * n_blocks // 2)
    elif callable(metric):
        perf_is = np.array([metric(blocks[m.astype(bool)].reshape(-1, n)) for m in is_mask])
        perf_oos = np.array([metric(blocks[~m.astype(bool)].reshape(-1, n)) for m in is_mask])
    else:
        raise ValueError(f"metric must be 'sharpe' or a callable, got {metric!r}")
    best = np.argmax(perf_is, axis=1)
    chosen = perf_oos[np.arange(len(combos)), best][:, None]
    rank = (perf_oos < chosen).sum(axis=1) + ((perf_oos == chosen).sum(axis=1) + 1) / 2.0
    omega = rank / (n + 1.0)
    logits = np.log(omega / (1.0 - omega))
    return {
        "pbo": float(np.mean(logits <= 0)),
        "logits": logits.tolist(),
        "n_combinations": len(combos),
        "n_blocks": n_blocks,
        "bars_per_block": size,
        "rows_left_out": t - size * n_blocks,
        "n_policies": n,
    }


def policy_table(
    trades_by_policy: Mapping[str, pd.DataFrame],
    periods_per_year: float,
    reference: str = "brain",
    n_blocks: int = 16,
) -> dict[str, Any]:
    """Every statistic of one symbol's (or the pooled) replay, JSON-safe: ``policies`` maps each policy
    to its ``policy_metrics`` plus ``p_value``, ``p_greater`` and ``sharpe_diff`` of
    ``sharpe_difference_test(reference, policy)`` (absent for the reference itself); ``dsr`` is
    ``dsr_of_best``; ``pbo`` is ``pbo_cscv``'s result without the logits (None, with ``pbo_reason``,
    when there are fewer than 2 bars per block).  The policies are compared on the bars they all have.
    """
    if reference not in trades_by_policy:
        raise ValueError(f"reference policy {reference!r} is not among {sorted(trades_by_policy)}")
    returns = pd.concat({name: t["net_return"] for name, t in trades_by_policy.items()}, axis=1, join="inner")
    out: dict[str, Any] = {"policies": {}, "n_bars": len(returns)}
    for name, trades in trades_by_policy.items():
        row = policy_metrics(trades.loc[returns.index], periods_per_year)
        if name != reference:
            test = sharpe_difference_test(returns[reference], returns[name], periods_per_year)
            row |= {"p_value": test.p_value, "p_greater": test.p_greater, "sharpe_diff": test.diff}
        out["policies"][name] = row
    out["dsr"] = dsr_of_best({name: returns[name].to_numpy() for name in returns}, periods_per_year)
    if len(returns) // n_blocks >= 2:
        out["pbo"] = {k: v for k, v in pbo_cscv(returns.to_numpy(), n_blocks).items() if k != "logits"}
    else:
        out["pbo"], out["pbo_reason"] = None, f"{len(returns)} bars are too few for {n_blocks} blocks of 2"
    return out


# --- storage ------------------------------------------------------------------------------------------

_MAGIC = b"BRR1"
_HEADER = struct.Struct("<4sqqIB")  # magic, start ns (UTC), bar ns, n bars, flags
_SHUFFLED_ZLIB = 1
HEADER_BYTES = _HEADER.size


def _grid(index: pd.DatetimeIndex, bar: pd.Timedelta | None) -> tuple[int, int, np.ndarray]:
    """(start ns, bar ns, slot of each timestamp) of the regular grid the index lies on."""
    ns = (index.tz_convert("UTC") if index.tz is not None else index).as_unit("ns").asi8
    if len(ns) and np.any(np.diff(ns) <= 0):
        raise ValueError("the index must be strictly increasing")
    step = int(pd.Timedelta(bar).value) if bar is not None else int(np.diff(ns).min()) if len(ns) > 1 else 0
    if len(ns) > 1 and step <= 0 or bar is None and len(ns) == 1:
        raise ValueError("cannot infer the bar length: pass bar=")
    start = int(ns[0]) if len(ns) else 0
    slots = (ns - start) // step if step else np.zeros(len(ns), dtype="int64")
    if len(ns) and np.any(start + slots * step != ns):
        raise ValueError("timestamps are not on a regular grid of the bar length")
    return start, step, slots


def pack_returns(series: pd.Series, bar: pd.Timedelta | str | None = None) -> bytes:
    """Bytes of a return series on a regular grid: a 25-byte header (magic, start ts in ns UTC, bar
    length in ns, bar count, flags) then the values as float32 little-endian, one per bar from the
    first timestamp to the last, NaN for a bar that is missing or not finite; byte-shuffled (all first
    bytes, then all second bytes, ...) and zlib-compressed, which turns runs of equal values (a flat
    policy's zeros) into almost nothing.  At most 4 bytes per bar (plus zlib's 0.1%) and the header.

    float32 keeps 24 significant bits: a return is stored within a relative 6e-8 (3e-11 absolute
    for a 5e-4 bar return); compute statistics from the float64 returns, store for drawing and
    re-pooling.  ``bar`` defaults to the smallest spacing of the index.
    """
    index = pd.DatetimeIndex(series.index)
    start, step, slots = _grid(index, None if bar is None else pd.Timedelta(bar))
    n = int(slots[-1]) + 1 if len(slots) else 0
    values = np.full(n, np.nan, dtype="<f4")
    v = series.to_numpy(dtype="float64")
    values[slots] = np.where(np.isfinite(v), v, np.nan)
    shuffled = values.view(np.uint8).reshape(n, 4).T.tobytes()
    return _HEADER.pack(_MAGIC, start, step, n, _SHUFFLED_ZLIB) + zlib.compress(shuffled, 6)


def unpack_returns(data: bytes) -> pd.Series:
    """Inverse of ``pack_returns``: float64 values of the float32 stored, on the full regular grid
    (UTC timestamps), NaN where a bar had no return (``dropna()`` gives the bars that had one)."""
    magic, start, step, n, flags = _HEADER.unpack_from(data)
    if magic != _MAGIC or flags != _SHUFFLED_ZLIB:
        raise ValueError("not a pack_returns payload")
    raw = np.frombuffer(zlib.decompress(data[_HEADER.size:]), dtype=np.uint8)
    if raw.size != 4 * n:
        raise ValueError(f"payload holds {raw.size} bytes for {n} bars")
    values = np.ascontiguousarray(raw.reshape(4, n).T).view("<f4").ravel().astype("float64")
    index = pd.DatetimeIndex(start + step * np.arange(n, dtype="int64"), tz="UTC", name="ts").as_unit("ns")
    return pd.Series(values, index=index, name="net_return")


def equity_curve(returns: pd.Series, max_points: int = 2000) -> pd.Series:
    """Compounded equity (1 before the first bar) after each bar, NaN returns counted as 0, thinned to
    at most ``max_points`` points for drawing: the first and last points plus each bucket's lowest and
    highest, so the peaks and troughs (and so the drawdowns) a chart shows are the real ones."""
    if max_points < 4:
        raise ValueError("max_points must be >= 4")
    r = np.nan_to_num(returns.to_numpy(dtype="float64"), nan=0.0)
    with np.errstate(divide="ignore"):
        equity = pd.Series(np.exp(np.cumsum(np.log1p(np.maximum(r, -1.0)))), index=returns.index, name="equity")
    n = len(equity)
    if n <= max_points:
        return equity
    edges = np.linspace(0, n, (max_points - 2) // 2 + 1).astype(int)
    keep = {0, n - 1}
    values = equity.to_numpy()
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi > lo:
            keep.update((lo + int(np.argmin(values[lo:hi])), lo + int(np.argmax(values[lo:hi]))))
    return equity.iloc[sorted(keep)]
