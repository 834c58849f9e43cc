"""What the dashboard and the HTML report show of a replay, shaped from `brain/replays.py`'s read API.

One module for both readers, so the page, the JSON API and the report agree on the policies' order,
the statistics' columns and what counts as a promotion or a rollback.  No SQL here (brain/ owns it) and
nothing of FastAPI or matplotlib: plain, JSON-ready dicts.

- `replay_list`: the replays, newest first, with their headline;
- `replay_detail`: one replay for the pooled portfolio or one symbol: the statistics table (every
  policy's metrics and its p-value against `brain`; the DSR of the best policy; the PBO with its blocks),
  the equity curve of every policy, and the `brain` policy's timeline (its per-regime choice at each step,
  its promotions and rollbacks);
- `policy_rows`: a statistics table's rows in the order every reader shows them.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain import dashboard_views as dv
from brain_tasks.brain import replays
from brain_tasks.brain.replays import OTHERWISE, POOLED
from brain_tasks.ml.regimes import REGIMES
from brain_tasks.vocabulary import Action

BRAIN = "brain"
MAX_POINTS = 1000
# (metric key, column heading, how it reads: pct = a signed change in percent, share = a fraction of the
# bars in percent, num = a number, p = a p-value)
STAT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("sharpe", "Sharpe", "num"), ("sharpe_se", "HAC SE", "num"), ("sortino", "Sortino", "num"),
    ("max_drawdown", "max drawdown", "pct"), ("total_return", "total return", "pct"),
    ("turnover", "turnover / bar", "num"), ("time_in_market", "time in market", "share"),
    ("hit_ratio", "hit ratio", "num"), ("profit_factor", "profit factor", "num"),
    ("p_value", "p vs brain", "p"),
)
OTHERWISE_LABEL = "other bars"  # bars of no known regime (warm-up): the fallback choice trades them


def has_replays(engine: sa.Engine) -> bool:
    """Whether the database has the replay tables (migration 0005) at all."""
    return dv.has_table(engine, "replays")


def policy_order(name: str) -> tuple[int, str]:
    """brain first, then its grid variants, each newest:<type>, best_composite, buy_and_hold, flat."""
    if name == BRAIN:
        rank = 0
    elif name.startswith(BRAIN + "["):
        rank = 1
    elif name.startswith("newest:"):
        rank = 2
    else:
        rank = {"best_composite": 3, "buy_and_hold": 4, "flat": 5}.get(name, 6)
    return rank, name


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def policy_rows(policies: Mapping[str, Mapping[str, Any]], best: str | None = None) -> list[dict[str, Any]]:
    """One row a policy, in `policy_order`: the policy, `is_best` (the DSR's best policy) and each
    `STAT_COLUMNS` value (None when absent: `brain` has no p-value against itself)."""
    rows = []
    for name in sorted(policies, key=policy_order):
        m = policies[name] or {}
        row = {"policy": name, "is_best": name == best, "n_bars": m.get("n_bars")}
        row |= {key: _finite(m.get(key)) for key, _head, _kind in STAT_COLUMNS}
        row["sharpe_diff"] = _finite(m.get("sharpe_diff"))
        rows.append(row)
    return rows


def replay_list(engine: sa.Engine, limit: int = 50) -> list[dict[str, Any]]:
    """`replays.list_replays` (newest first, with the headline: pooled PBO, best policy and its DSR,
    brain's pooled Sharpe); empty on a database without the replay tables."""
    return replays.list_replays(engine, limit) if has_replays(engine) else []


def _series(s: pd.Series) -> dict[str, list[Any]]:
    return {"ts": [t.isoformat() for t in pd.DatetimeIndex(s.index)],
            "equity": [None if not math.isfinite(v) else round(float(v), 6) for v in s.to_numpy(dtype="float64")]}


def _label(choice: Mapping[str, Any]) -> str:
    model, version = choice.get("model_type"), choice.get("version")
    return f"{model} v{version}" if version is not None else str(model)


def _regime_order(keys: Sequence[str]) -> list[str]:
    known = [r for r in REGIMES if r in keys]
    return known + sorted(k for k in keys if k not in REGIMES and k != OTHERWISE) + \
        ([OTHERWISE] if OTHERWISE in keys else [])


def _rolled_back(d: Mapping[str, Any]) -> bool:
    live = (d.get("details") or {}).get("live") or {}
    return d.get("action") == Action.ROLLBACK or live.get("action") == Action.ROLLBACK


def timeline(decisions: Sequence[Mapping[str, Any]], end: str | None) -> dict[str, Any]:
    """The `brain` policy's steps of one symbol: each step's choice per regime from its decision time
    t_k to t_{k+1} (the last to `end`), and its promotions and rollbacks with their reasons."""
    ordered = sorted(decisions, key=lambda d: d["step"])
    regimes = _regime_order(sorted({r for d in ordered for r in d["choices"]}))
    steps, events = [], []
    for i, d in enumerate(ordered):
        stop = ordered[i + 1]["step_end"] if i + 1 < len(ordered) else (end or d["step_end"])
        steps.append({"step": d["step"], "as_of": d["as_of"], "start": d["step_end"], "end": stop,
                      "action": d["action"], "reason": d["reason"],
                      "choices": {r: _label(c) for r, c in d["choices"].items()},
                      "models": {r: c.get("model_type") for r, c in d["choices"].items()}})
        if _rolled_back(d):
            events.append({"kind": str(Action.ROLLBACK), "step": d["step"], "at": d["step_end"], "as_of": d["as_of"],
                           "reason": d["reason"]})
        if d["action"] == Action.PROMOTE:
            events.append({"kind": str(Action.PROMOTE), "step": d["step"], "at": d["step_end"], "as_of": d["as_of"],
                           "champion": (d.get("details") or {}).get("champion"), "reason": d["reason"]})
    return {"regimes": regimes, "regime_labels": {r: OTHERWISE_LABEL if r == OTHERWISE else r for r in regimes},
            "steps": steps, "events": events}


def _symbols(row: Mapping[str, Any], walked: set[str]) -> list[dict[str, Any]]:
    """Every requested symbol, in the order requested, with whether it was walked, its state, its bars
    and brain's actions, and the reason of one skipped or failed (from the summary)."""
    per = (row.get("summary") or {}).get("symbols") or {}
    out = []
    for s in row["symbols"]:
        info = per.get(s) or {}
        out.append({"symbol": s, "walked": s in walked, "state": info.get("state"), "reason": info.get("reason"),
                    "n_bars": info.get("n_bars"), "actions": info.get("actions") or {}})
    return out


class DetailCache:
    """`replay_detail`s of finished replays, least recently used out first.  A finished replay's rows
    no longer change (its id is a digest of its inputs, and a re-run rewrites the same rows), so an
    entry is keyed by its finish time: a replay that is re-driven and finishes again is read afresh,
    and a running one is never cached."""

    def __init__(self, size: int = 32) -> None:
        self._data: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key: tuple[Any, ...], value: dict[str, Any]) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self._size:
                self._data.popitem(last=False)


def replay_detail(engine: sa.Engine, replay_id: str, symbol: str = POOLED, max_points: int = MAX_POINTS,
                  cache: DetailCache | None = None) -> dict[str, Any] | None:
    """One replay for `symbol` ('*': the pooled equal-weight portfolio); None when there is no such
    replay.  Keys: replay (its row without the summary), symbol, symbols (the selector: each requested
    symbol, whether it was walked, its state and reason), statistics (rows: `policy_rows`; n_bars; dsr;
    pbo with n_blocks and bars_per_block; pbo_reason), curves (policy -> ts, equity; at most
    `max_points` points each, peaks and troughs kept), timeline (a symbol's `brain` policy; None for
    the pooled view) and events (promotions and rollbacks of `brain`, every symbol's in the pooled view).
    A symbol that is not in the replay gives statistics without rows."""
    if not has_replays(engine):
        return None
    row = replays.get_replay(engine, replay_id)
    if row is None:
        return None
    key = (replay_id, symbol, max_points, row["finished_at"])
    if cache is not None and row["finished_at"]:
        hit = cache.get(key)
        if hit is not None:
            return hit
    summary = row.get("summary") or {}
    walked = set(replays.result_symbols(engine, replay_id)) - {POOLED}
    mine = {r["policy"]: {**r["metrics"], "n_bars": r["n_bars"]} for r in replays.results(engine, replay_id, symbol)}
    stats_of = summary.get("pooled") if symbol == POOLED else ((summary.get("symbols") or {}).get(symbol))
    stats_of = stats_of or {}
    dsr, pbo = stats_of.get("dsr") or None, stats_of.get("pbo") or None
    curves = {p: _series(s) for p, s in replays.curves(engine, replay_id, symbol, max_points).items()} \
        if mine else {}
    curves = {p: curves[p] for p in sorted(curves, key=policy_order)}
    end = max((c["ts"][-1] for c in curves.values() if c["ts"]), default=None)
    # Pooled: every symbol's promotions and rollbacks, and no timeline, so only those rows are read.
    brain_decisions = (replays.event_decisions(engine, replay_id, BRAIN) if symbol == POOLED
                       else replays.decisions(engine, replay_id, symbol, policy=BRAIN))
    events: list[dict[str, Any]] = []
    line = None
    for s in sorted({d["symbol"] for d in brain_decisions}):
        t = timeline([d for d in brain_decisions if d["symbol"] == s], end)
        events += [{"symbol": s, **e} for e in t["events"]]
        if symbol != POOLED:
            line = t
    events.sort(key=lambda e: (e["at"], e["symbol"]))
    meta = {k: v for k, v in row.items() if k != "summary"}
    meta["n_symbols_walked"] = summary.get("n_symbols_walked", len(walked))
    detail = {
        "replay": meta, "symbol": symbol, "pooled": symbol == POOLED,
        "symbols": _symbols(row, walked),
        "statistics": {"rows": policy_rows(mine, (dsr or {}).get("best")), "n_bars": stats_of.get("n_bars"),
                       "dsr": dsr, "pbo": pbo, "pbo_reason": stats_of.get("pbo_reason"),
                       "columns": [{"key": k, "label": h, "kind": kind} for k, h, kind in STAT_COLUMNS]},
        "curves": curves, "timeline": line, "events": events,
    }
    if cache is not None and row["finished_at"]:
        cache.put(key, detail)
    return detail

