"""A replay as a run: its start, its trainings (phase 1), and the pooling step that ends it.

The canvas (`workflows.replay_canvas`): per symbol, the (step, model type) trainings as of each step's
eve, one chain per model type in as-of order (so version numbers follow the as-of days in every run),
the model types in parallel -> the symbol's decision walk (`service.replay_walk`) -> `record_outcome`; then one
`replay_pool` over the symbols, which writes the pooled statistics, the replay's summary and closes the
attempt.  The attempt is a `training_runs` attempt of kind `replay` (run id = replay id), so `runs`,
`status`, `wait` and `reconcile_runs` treat it like any run.  Every step is idempotent: trainings find
their versions, decisions and results are upserts on natural keys.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain import replays, runs
from brain_tasks.service.chain import ChainState
from brain_tasks.service.replay_plan import BRAIN, ReplayPlan
from brain_tasks.service.steps.outcome import start_attempt, summarize_attempt
from brain_tasks.settings import Settings
from brain_tasks.timekeeping import timeframe_seconds
from brain_tasks.vocabulary import OPEN, Origin, Status

KIND = Origin.REPLAY  # the attempt's kind: the dashboard tells a replay's attempts from the chains' by it


def record_replay(engine: sa.Engine, settings: Settings, plan: ReplayPlan) -> None:
    """The replay's row (kept as it is when it exists: a re-run of the same replay)."""
    replays.save_replay(engine, replay_id=plan.replay_id, symbols=plan.symbols, models=plan.models, start=plan.start,
                        end=plan.end, every=plan.every, grid=plan.grid, config_hash=plan.config_hash,
                        params=plan.params(settings), state=Status.PENDING)


def start(engine: sa.Engine, settings: Settings, plan: ReplayPlan, attempt_id: str) -> None:
    """The replay's row and a new attempt of its run, every symbol pending."""
    record_replay(engine, settings, plan)
    replays.set_state(engine, plan.replay_id, Status.RUNNING)
    start_attempt(engine, settings, KIND, plan.replay_id, attempt_id, plan.end, plan.symbols, plan.models)


def abandon(engine: sa.Engine, replay_id: str) -> None:
    """The replay's attempt was cancelled before it ran (no broker, an embedded command stopped): the
    replay is cancelled unless a pooling step already finished it."""
    row = replays.get_replay(engine, replay_id)
    if row is not None and row["state"] in OPEN:
        replays.set_state(engine, replay_id, Status.CANCELLED, finished=True)


def train_for_replay(engine: sa.Engine, settings: Settings, symbol: str, model_type: str, as_of: dt.date) -> dict:
    """One (symbol, step, model type) training through the chain's training step, marked as the replay's:
    the same inputs reuse the existing version; nothing is promoted or selected."""
    from brain_tasks.service.steps.train import train_symbol

    outcome = train_symbol(engine, settings, symbol, model_type, as_of, origin=Origin.REPLAY)
    return {**outcome.to_json(), "as_of": as_of.isoformat()}


def _symbol_trades(engine: sa.Engine, replay_id: str, symbol: str) -> dict[str, pd.DataFrame]:
    """The symbol's stored per-policy trades (net return, position, turnover) on the bars it traded."""
    rets = replays.returns(engine, replay_id, symbol)
    pos = replays.positions(engine, replay_id, symbol)
    out = {}
    for policy, r in rets.items():
        frame = pd.DataFrame({"net_return": r, "position": pos[policy]}).dropna(subset=["net_return"])
        frame["turnover"] = frame["position"].diff().abs().fillna(frame["position"].abs())
        out[policy] = frame
    return out


def pool(engine: sa.Engine, settings: Settings, plan: ReplayPlan, attempt_id: str | None,
         delivered: Any = None) -> dict[str, Any]:
    """The equal-weight portfolio of the symbols walked: its per-policy statistics (`ml.replay.policy_table`:
    metrics, HAC p-value of each policy's Sharpe difference against brain, DSR of the best policy, PBO by
    CSCV with 16 blocks), written as the '*' results; the replay's summary; then the attempt is closed.
    Returns the state, the attempt's summary and, per symbol, what its walk cost (`walks`)."""
    from brain_tasks.ml.metrics import bars_per_year
    from brain_tasks.ml.replay import pack_returns, policy_table, pooled_trades

    states: dict[str, ChainState] = {}
    for item in delivered if isinstance(delivered, list) else [delivered] if delivered else []:
        try:
            st = ChainState.from_wire(item)
        except (ValueError, TypeError, KeyError):
            continue
        states[st.symbol] = st
    walked = sorted({r["symbol"] for r in replays.results(engine, plan.replay_id)} - {replays.POOLED})
    walked = [s for s in plan.symbols if s in walked]
    per_symbol: dict[str, Any] = {}
    status = runs.run_status(engine, plan.replay_id, attempt_id).get("symbols", {}) if attempt_id else {}
    for s in plan.symbols:
        st = states.get(s)
        if s in walked and (st is None or st.ok):
            per_symbol[s] = {"state": Status.OK, **((st.replay if st else None) or {})}
        else:
            reason = (st.reason or st.error) if st else (status.get(s, {}).get("error") or "not walked")
            per_symbol[s] = {"state": (st.status if st else status.get(s, {}).get("state")) or Status.FAILED,
                             "reason": reason}
    ppy = bars_per_year(settings.timeframe)
    pooled: dict[str, Any] = {}
    if walked:
        trades = {s: _symbol_trades(engine, plan.replay_id, s) for s in walked}
        policies = [p for p in plan.policies if all(p in t for t in trades.values())]
        frames = {p: pooled_trades({s: t[p] for s, t in trades.items()}) for p in policies}
        if frames and len(frames[BRAIN]):
            pooled = policy_table(frames, ppy)
            bar = pd.Timedelta(seconds=timeframe_seconds(settings.timeframe))
            replays.write_results(engine, [
                dict(replay_id=plan.replay_id, symbol=replays.POOLED, policy=p, metrics=pooled["policies"][p],
                     n_bars=len(f), inputs="", returns=pack_returns(f["net_return"], bar=bar),
                     positions=pack_returns(f["exposure"], bar=bar)) for p, f in frames.items()])
    state = Status.OK if walked and len(walked) == len(plan.symbols) else (Status.PARTIAL if walked else Status.FAILED)
    summary = {"pooled": pooled, "symbols": per_symbol, "n_symbols_walked": len(walked),
               "n_blocks": (pooled.get("pbo") or {}).get("n_blocks", 16),
               "bars_per_block": (pooled.get("pbo") or {}).get("bars_per_block")}
    replays.set_state(engine, plan.replay_id, state, summary=summary, finished=True)
    run = summarize_attempt(engine, delivered if delivered is not None else [], plan.replay_id, attempt_id) \
        if attempt_id else {}
    # What the walks cost this time (`ChainState.replay_run`): the task result only, never a row.
    walks = {s: st.replay_run for s, st in states.items() if st.replay_run is not None}
    return {"replay_id": plan.replay_id, "state": state, "run": run, "walks": walks}


def show(engine: sa.Engine, replay_id: str, *, symbol: str | None = None,
         max_decisions: int | None = None) -> dict[str, Any] | None:
    """`brain-tasks replay show --json`: replay_id, state, window, policies (name -> pooled metrics with
    sharpe, total_return, max_drawdown and p_value against brain), pbo, dsr, bars_per_block, per-symbol
    summaries and decisions (symbol, step, policy, regime, model_type, version, action, reason; one row
    per regime of each (symbol, step, policy) decision).  Decisions: those of `symbol` only when given,
    the first `max_decisions` of them (None: all) in (symbol, step, policy) order; `decisions_total` is
    how many decisions there are and `decisions_truncated` whether some were left out."""
    row = replays.get_replay(engine, replay_id)
    if row is None:
        return None
    total = replays.decision_count(engine, replay_id, symbol)
    pooled = (row["summary"] or {}).get("pooled") or {}
    pbo = pooled.get("pbo") or {}
    return {"replay_id": replay_id, "state": row["state"], "symbols": row["symbols"], "models": row["models"],
            "start": row["start"], "end": row["end"], "every": row["every"], "grid": row["grid"],
            "policies": pooled.get("policies") or {}, "n_bars": pooled.get("n_bars"),
            "pbo": pbo.get("pbo"), "pbo_detail": pbo or None, "dsr": pooled.get("dsr"),
            "per_symbol": (row["summary"] or {}).get("symbols") or {},
            "decisions": replays.decision_table(engine, replay_id, symbol, limit=max_decisions),
            "decisions_total": total, "decisions_symbol": symbol,
            "decisions_truncated": max_decisions is not None and total > max_decisions}


def plan_of(engine: sa.Engine, replay_id: str) -> ReplayPlan | None:
    row = replays.get_replay(engine, replay_id)
    return None if row is None else ReplayPlan.from_row(row)


