"""Replays: the one module that reads and writes `replays`, `replay_decisions` and `replay_results`.

A replay's id is a digest of its inputs (`intake.replay_id_for`), and every row has a natural key
(replay, symbol, step, policy for a decision; replay, symbol or '*', policy for a result), so a
re-run writes the same rows: writes are `store.upsert`s that change a row only where a value differs.

The read API, for the CLI, the dashboard and the report (plain dicts and pandas Series, JSON-ready):

- `list_replays(engine, limit)`: newest first, without their per-symbol details;
- `get_replay(engine, replay_id)`: the replay row (parameters, state, summary) or None;
- `decisions(engine, replay_id, symbol=None, policy=None)`: one dict per (symbol, step, policy), with
  its per-regime choices;
- `decision_table(...)`: the same, one dict per regime (the `replay show --json` contract's
  `decisions`: symbol, step, policy, regime, model_type, version, action, reason); both take a `limit`
  (decisions, not regimes) and `decision_count(...)` says how many there are;
- `event_decisions(engine, replay_id, policy, symbol=None)`: only a policy's promotions and rollbacks
  (what the pooled page draws of every symbol);
- `results(engine, replay_id, symbol=None)`: the metrics of every (symbol or '*', policy);
- `returns(engine, replay_id, symbol='*')`: policy -> per-bar net returns (float32 precision,
  NaN where a bar had none); `positions(...)` likewise;
- `curves(engine, replay_id, symbol='*', max_points=2000)`: policy -> equity curve thinned for drawing
  (`ml.replay.equity_curve`: the peaks and troughs kept);
- `result_symbols(engine, replay_id)`: the symbols with results so far ('*' once pooled).

Parameterised SQL only (SQLAlchemy Core); PostgreSQL and SQLite alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from brain_tasks.brain import store
from brain_tasks.brain.tables import Candle, Replay, ReplayDecision, ReplayResult
from brain_tasks.timekeeping import now
from brain_tasks.vocabulary import Action

POOLED = "*"  # the symbol of the pooled (equal-weight portfolio) results
OTHERWISE = "*"  # the regime key of a policy's fallback choice (bars of an unknown regime)

__all__ = ["POOLED", "OTHERWISE", "save_replay", "set_state", "write_decisions", "write_results", "result_inputs",
           "bar_count", "stored_span", "list_replays",
           "get_replay", "decisions", "decision_count", "event_decisions", "decision_table", "results", "returns", "positions", "curves",
           "result_symbols"]


# --- what a replay may cover ---------------------------------------------------------------------

def stored_span(engine: sa.Engine, exchange: str, symbol: str, timeframe: str) -> tuple[dt.datetime, dt.datetime] | None:
    """(first, last) stored candle time of the symbol, or None when it has none: a replay's window is
    checked against it before anything is written."""
    c = Candle
    stmt = sa.select(sa.func.min(c.ts), sa.func.max(c.ts)).where(c.exchange == exchange, c.symbol == symbol,
                                                                 c.timeframe == timeframe)
    with engine.connect() as conn:
        first, last = conn.execute(stmt).one()
    if first is None:
        return None
    utc = dt.timezone.utc
    return tuple(v.replace(tzinfo=utc) if v.tzinfo is None else v.astimezone(utc) for v in (first, last))  # type: ignore[return-value]


# --- writes --------------------------------------------------------------------------------------

def save_replay(engine: sa.Engine, *, replay_id: str, symbols: Sequence[str], models: Sequence[str],
                start: dt.date, end: dt.date, every: str, grid: Mapping[str, Sequence[Any]], config_hash: str,
                params: Mapping[str, Any], state: str) -> bool:
    """The replay's row, created once (a second request of the same replay keeps the first row, its
    state and summary).  Returns True when this call created it."""
    stamp = now()
    row = dict(replay_id=replay_id, symbols=list(symbols), models=list(models), start=start, end=end, every=every,
               grid={k: list(v) for k, v in grid.items()}, config_hash=config_hash, params=store.jsonable(params),
               state=state, summary={}, created_at=stamp, updated_at=stamp, finished_at=None)
    return store.upsert(engine, Replay.__table__, [row], conflict="nothing") > 0


def set_state(engine: sa.Engine, replay_id: str, state: str, *, summary: Mapping[str, Any] | None = None,
              finished: bool = False) -> None:
    """Move the replay to `state`; with `summary`, replace its summary; `finished` stamps the end."""
    values: dict[str, Any] = {"state": state, "updated_at": now()}
    if summary is not None:
        values["summary"] = store.jsonable(dict(summary))
    if finished:
        values["finished_at"] = values["updated_at"]
    with engine.begin() as conn:
        conn.execute(sa.update(Replay).where(Replay.replay_id == replay_id).values(**values))


def write_decisions(engine: sa.Engine, rows: Sequence[Mapping[str, Any]]) -> int:
    """Upsert decision rows (replay_id, symbol, step, policy, as_of, step_end, choices, action, reason,
    details); returns the rows inserted or changed (0 on an identical re-run)."""
    return store.upsert(engine, ReplayDecision.__table__,
                        [{**r, "choices": store.jsonable(r["choices"]), "details": store.jsonable(r.get("details", {}))}
                         for r in rows])


def write_results(engine: sa.Engine, rows: Sequence[Mapping[str, Any]]) -> int:
    """Upsert result rows (replay_id, symbol, policy, metrics, n_bars, inputs, returns, positions: packed
    bytes)."""
    return store.upsert(engine, ReplayResult.__table__,
                        [{**r, "metrics": store.jsonable(r["metrics"])} for r in rows])


# --- reads ---------------------------------------------------------------------------------------

def _replay_dict(row: Any, full: bool = True) -> dict[str, Any]:
    out = {"replay_id": row.replay_id, "symbols": list(row.symbols), "models": list(row.models),
           "start": row.start.isoformat(), "end": row.end.isoformat(), "every": row.every, "grid": dict(row.grid),
           "config_hash": row.config_hash, "state": row.state, "created_at": row.created_at.isoformat(),
           "updated_at": row.updated_at.isoformat(),
           "finished_at": row.finished_at.isoformat() if row.finished_at else None}
    if full:
        out |= {"params": dict(row.params), "summary": dict(row.summary)}
    else:
        pooled = (row.summary or {}).get("pooled") or {}
        out["headline"] = {"pbo": (pooled.get("pbo") or {}).get("pbo"), "dsr": (pooled.get("dsr") or {}).get("dsr"),
                           "best": (pooled.get("dsr") or {}).get("best"),
                           "brain_sharpe": ((pooled.get("policies") or {}).get("brain") or {}).get("sharpe")}
    return out


def list_replays(engine: sa.Engine, limit: int = 50) -> list[dict[str, Any]]:
    """The latest `limit` replays, newest first: identity, window, state and a headline (pooled PBO, the
    DSR of the best policy, which policy that is, and brain's pooled Sharpe once finished)."""
    stmt = sa.select(Replay).order_by(Replay.created_at.desc(), Replay.replay_id).limit(int(limit))
    with Session(engine) as session:
        return [_replay_dict(r, full=False) for r in session.scalars(stmt)]


def get_replay(engine: sa.Engine, replay_id: str) -> dict[str, Any] | None:
    """The replay's row as a dict (parameters, state, summary: pooled and per-symbol statistics, the
    symbols skipped with their reasons), or None when there is no such replay."""
    with Session(engine) as session:
        row = session.scalars(sa.select(Replay).where(Replay.replay_id == replay_id)).first()
        return None if row is None else _replay_dict(row)


def _decisions_where(replay_id: str, symbol: str | None, policy: str | None) -> list[Any]:
    d = ReplayDecision
    return [d.replay_id == replay_id, *([d.symbol == symbol] if symbol is not None else []),
            *([d.policy == policy] if policy is not None else [])]


def _read_decisions(engine: sa.Engine, where: Sequence[Any], limit: int | None = None) -> list[dict[str, Any]]:
    d = ReplayDecision
    stmt = sa.select(d).where(*where).order_by(d.symbol, d.step, d.policy)
    if limit is not None:
        stmt = stmt.limit(limit)
    with Session(engine) as session:
        return [{"symbol": r.symbol, "step": r.step, "policy": r.policy, "as_of": r.as_of.isoformat(),
                 "step_end": r.step_end.isoformat(), "choices": dict(r.choices), "action": r.action,
                 "reason": r.reason, "details": dict(r.details)} for r in session.scalars(stmt)]


def decisions(engine: sa.Engine, replay_id: str, symbol: str | None = None,
              policy: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """One dict per (symbol, step, policy), in that order (the first `limit` of them): step (1..K), as_of
    (the versions' day), step_end (t_k, ISO), choices (regime -> {model_type, version}), action, reason,
    details."""
    return _read_decisions(engine, _decisions_where(replay_id, symbol, policy), limit)


def decision_count(engine: sa.Engine, replay_id: str, symbol: str | None = None, policy: str | None = None) -> int:
    """How many (symbol, step, policy) decisions `decisions` would return without a limit."""
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(ReplayDecision)
                                .where(*_decisions_where(replay_id, symbol, policy))).scalar_one())


def event_decisions(engine: sa.Engine, replay_id: str, policy: str, symbol: str | None = None
                    ) -> list[dict[str, Any]]:
    """`decisions` of `policy` that are events of its timeline only: a promotion, or a rollback (the
    step's action, or the nightly live check's in `details.live.action`).  The pooled page draws every
    symbol's events but no symbol's steps: at 1,000 symbols this reads a few rows a symbol, not all."""
    d = ReplayDecision
    event = sa.or_(d.action.in_([Action.PROMOTE, Action.ROLLBACK]),
                   d.details["live"]["action"].as_string() == Action.ROLLBACK)
    return _read_decisions(engine, [*_decisions_where(replay_id, symbol, policy), event])


def decision_table(engine: sa.Engine, replay_id: str, symbol: str | None = None,
                   policy: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """`decisions` (the first `limit` of them) flattened to one dict per regime: symbol, step (its as-of
    day), step_index, policy, regime, model_type, version, action, reason."""
    out = []
    for d in decisions(engine, replay_id, symbol, policy, limit):
        for regime, choice in sorted(d["choices"].items()):
            out.append({"symbol": d["symbol"], "step": d["as_of"], "step_index": d["step"], "policy": d["policy"],
                        "regime": regime, "model_type": choice.get("model_type"), "version": choice.get("version"),
                        "action": d["action"], "reason": d["reason"]})
    return out


def results(engine: sa.Engine, replay_id: str, symbol: str | None = None) -> list[dict[str, Any]]:
    """One dict per (symbol or '*', policy): symbol, policy, n_bars, metrics (sharpe, sharpe_se, sortino,
    max_drawdown, total_return, turnover, time_in_market, hit_ratio, profit_factor, ...; p_value,
    p_greater and sharpe_diff against brain)."""
    r = ReplayResult
    stmt = sa.select(r.symbol, r.policy, r.n_bars, r.metrics).where(r.replay_id == replay_id)
    if symbol is not None:
        stmt = stmt.where(r.symbol == symbol)
    with engine.connect() as conn:
        rows = conn.execute(stmt.order_by(r.symbol, r.policy)).all()
    return [{"symbol": x.symbol, "policy": x.policy, "n_bars": x.n_bars, "metrics": dict(x.metrics)} for x in rows]


def result_inputs(engine: sa.Engine, replay_id: str, symbol: str) -> dict[str, str]:
    """policy -> the inputs digest its stored result was computed from (a re-run compares it)."""
    r = ReplayResult
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(r.policy, r.inputs).where(r.replay_id == replay_id,
                                                                      r.symbol == symbol)).all())


def bar_count(engine: sa.Engine, exchange: str, symbol: str, timeframe: str, end: dt.datetime) -> tuple[int, Any]:
    """(number, newest time) of the symbol's stored bars before `end`: part of what a replay's walk read."""
    c = Candle
    with engine.connect() as conn:
        n, last = conn.execute(sa.select(sa.func.count(), sa.func.max(c.ts)).where(
            c.exchange == exchange, c.symbol == symbol, c.timeframe == timeframe, c.ts < end)).one()
    return int(n), None if last is None else str(last)


def _packed(engine: sa.Engine, replay_id: str, symbol: str, column: str,
            policies: Sequence[str] | None) -> dict[str, pd.Series]:
    from brain_tasks.ml.replay import unpack_returns

    r = ReplayResult
    stmt = sa.select(r.policy, getattr(r, column)).where(r.replay_id == replay_id, r.symbol == symbol)
    if policies is not None:
        stmt = stmt.where(r.policy.in_(list(policies)))
    with engine.connect() as conn:
        rows = conn.execute(stmt.order_by(r.policy)).all()
    return {row[0]: unpack_returns(bytes(row[1])) for row in rows}


def returns(engine: sa.Engine, replay_id: str, symbol: str = POOLED,
            policies: Sequence[str] | None = None) -> dict[str, pd.Series]:
    """policy -> per-bar net returns of `symbol` ('*': the pooled portfolio) on the full bar grid from
    its first traded bar to its last, NaN where a bar had no return (float32 precision)."""
    return _packed(engine, replay_id, symbol, "returns", policies)


def positions(engine: sa.Engine, replay_id: str, symbol: str = POOLED,
              policies: Sequence[str] | None = None) -> dict[str, pd.Series]:
    """policy -> per-bar position (-1, 0, +1) of `symbol`; pooled ('*'): the share of symbols holding one."""
    return _packed(engine, replay_id, symbol, "positions", policies)


def curves(engine: sa.Engine, replay_id: str, symbol: str = POOLED, max_points: int = 2000,
           policies: Sequence[str] | None = None) -> dict[str, pd.Series]:
    """policy -> compounded equity (1 before the first bar) after each bar, at most `max_points` points
    (`ml.replay.equity_curve`): what a chart of the replay draws."""
    from brain_tasks.ml.replay import equity_curve

    return {p: equity_curve(r, max_points) for p, r in returns(engine, replay_id, symbol, policies).items()}


def result_symbols(engine: sa.Engine, replay_id: str) -> list[str]:
    """The symbols that have results in the replay so far ('*' included once the pool is written), sorted:
    the dashboard's symbol selector, without reading every row's metrics."""
    r = ReplayResult
    with engine.connect() as conn:
        return list(conn.execute(sa.select(r.symbol).where(r.replay_id == replay_id).distinct()
                                 .order_by(r.symbol)).scalars())
