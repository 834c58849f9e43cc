"""training_runs: runs by attempt, the one module that reads and writes them.

A run's id says what it does (kind, as-of day, symbols, models: `brain_tasks.intake.run_id_for`); each
enqueue of it is an *attempt* with an id of its own (the enqueuing task's id).  Every (attempt,
symbol) row carries its state, the last step that started (once the symbol has finished: the step
that ended its chain, when one failed it or found its data stale), when it last made progress and a
deadline; the attempt's summary row (symbol '*') is computed from those rows alone, so it can be
written by the fan-out's summary step, by `reconcile_runs` when the chord died, or by an embedded
command on its way out, and all three write the same thing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from brain_tasks.brain import store
from brain_tasks.brain.tables import DataQualityLog, TrainingRun
from brain_tasks.intake import RUN_SUMMARY_SYMBOL as SUMMARY
from brain_tasks.timekeeping import now
from brain_tasks.vocabulary import OPEN, TERMINAL, Action, Status

T = TrainingRun


def start_attempt(engine: sa.Engine, run_id: str, attempt_id: str, kind: str, as_of: dt.date,
                  symbols: Sequence[str], models: Sequence[str], deadline: dt.datetime) -> None:
    """The attempt's rows, every symbol pending.  Idempotent: a redelivered enqueue keeps the states
    its first delivery already moved on."""
    stamp = now()
    rows = [dict(attempt_id=attempt_id, symbol=s, run_id=run_id, kind=kind, as_of=as_of, state=Status.PENDING, step=None,
                 models=list(models), error=None, details={}, redrives=0, started_at=stamp, progress_at=stamp,
                 deadline=deadline, finished_at=None) for s in [SUMMARY, *dict.fromkeys(symbols)]]
    store.upsert(engine, T.__table__, rows, conflict="nothing")


def step_started(engine: sa.Engine, attempt_id: str, symbol: str, step: str, deadline: dt.datetime) -> bool:
    """A step of the symbol's chain began: progress now, and it owes the next sign of life by `deadline`.
    A finished symbol stays finished (a late duplicate of a step changes nothing)."""
    stamp = now()
    with engine.begin() as conn:
        moved = conn.execute(sa.update(T).where(T.attempt_id == attempt_id, T.symbol == symbol, T.state.in_(OPEN))
                             .values(state=Status.RUNNING, step=step, progress_at=stamp, deadline=deadline)).rowcount
        if moved:
            conn.execute(sa.update(T).where(T.attempt_id == attempt_id, T.symbol == SUMMARY, T.state == Status.PENDING)
                         .values(state=Status.RUNNING, progress_at=stamp))
    return bool(moved)


def record_symbol_state(engine: sa.Engine, attempt_id: str, symbol: str, state: str, *, error: str | None,
                        details: Mapping[str, Any], step: str | None = None) -> None:
    """The symbol's chain ended in `state`, with `error` and the details its chain state records.
    `step`: the step that ended the chain early (failed, stale); it replaces the last step started,
    since the steps after it only passed the ended state along."""
    stamp = now()
    values: dict[str, Any] = dict(state=state, error=None if error is None else str(error)[:4000],
                                  details=store.jsonable(details), progress_at=stamp, deadline=None, finished_at=stamp)
    if step is not None:
        values["step"] = step
    with engine.begin() as conn:
        conn.execute(sa.update(T).where(T.attempt_id == attempt_id, T.symbol == symbol).values(**values))


def fail_symbol(engine: sa.Engine, attempt_id: str, symbol: str, reason: str, state: str = Status.FAILED) -> None:
    """End an unfinished symbol with `reason` (reconcile gave up, or an embedded command stopped)."""
    stamp = now()
    with engine.begin() as conn:
        conn.execute(sa.update(T).where(T.attempt_id == attempt_id, T.symbol == symbol, T.state.in_(OPEN))
                     .values(state=state, error=reason, progress_at=stamp, deadline=None, finished_at=stamp))


def cancel_attempt(engine: sa.Engine, attempt_id: str, reason: str) -> dict[str, Any] | None:
    """Mark every unfinished symbol cancelled with `reason` and close the attempt."""
    for row in _symbol_rows(engine, attempt_id):
        if row.state in OPEN:
            fail_symbol(engine, attempt_id, row.symbol, reason, state=Status.CANCELLED)
    return close_attempt(engine, attempt_id)


def redrive(engine: sa.Engine, attempt_id: str, symbol: str, deadline: dt.datetime, note: str) -> int:
    """Count one more re-drive of an unfinished symbol; returns its number (0: the symbol had finished)."""
    with engine.begin() as conn:
        row = conn.execute(sa.update(T).where(T.attempt_id == attempt_id, T.symbol == symbol, T.state.in_(OPEN))
                           .values(redrives=T.redrives + 1, state=Status.PENDING, progress_at=now(), deadline=deadline,
                                   error=note).returning(T.redrives)).first()
    return int(row.redrives) if row else 0


# --- summaries -----------------------------------------------------------------------------------

def _symbol_rows(engine: sa.Engine, attempt_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(T).where(T.attempt_id == attempt_id, T.symbol != SUMMARY)
                                 .order_by(T.symbol)))


def _head(engine: sa.Engine, attempt_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(T).where(T.attempt_id == attempt_id, T.symbol == SUMMARY)).first()


def _open_quality_findings(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(DataQualityLog.severity, sa.func.count()).where(
            DataQualityLog.resolved.is_(False)).group_by(DataQualityLog.severity))
        return {sev: int(n) for sev, n in rows}


def summary_of(engine: sa.Engine, attempt_id: str) -> dict[str, Any] | None:
    """The attempt's summary computed from its symbol rows; None while a symbol is unfinished."""
    head = _head(engine, attempt_id)
    rows = _symbol_rows(engine, attempt_id)
    if head is None or any(r.state not in TERMINAL for r in rows):
        return None
    ok = [r.symbol for r in rows if r.state == Status.OK]
    failed = {r.symbol: r.error or r.state for r in rows if r.state in (Status.FAILED, Status.CANCELLED)}
    stale = {r.symbol: r.error or r.state for r in rows if r.state == Status.STALE}
    fine = [r.symbol for r in rows if r.state in (Status.OK, Status.SKIPPED)]
    if any(r.state == Status.CANCELLED for r in rows):
        state = Status.CANCELLED
    elif not failed and not stale:
        state = Status.OK
    elif fine:
        state = Status.PARTIAL
    else:
        # Nothing came out: stale when stale data is the only reason (collect, then retry), else failed.
        state = Status.FAILED if failed else Status.STALE
    base = {"run_id": head.run_id, "attempt_id": attempt_id, "state": state}
    if head.kind == "nightly":
        details = {"drifted": {r.symbol: r.details.get("drifted", []) for r in rows if r.state == Status.OK},
                   "failed": failed, "stale": stale, "open_quality_findings": _open_quality_findings(engine),
                   "skipped": {r.symbol: r.details.get("reason", "") for r in rows if r.state == Status.SKIPPED},
                   "rollbacks": {r.symbol: r.details["live"]["reason"] for r in rows if r.state == Status.OK
                                 and (r.details.get("live") or {}).get("action") == Action.ROLLBACK}}
        audited = {r.symbol: r.details["audit"] for r in rows if (r.details or {}).get("audit")}
        details["signal_audit"] = {
            "audited": sum(a["audited"] for a in audited.values()),
            "mismatches": sum(a["mismatches"] for a in audited.values()),
            "mismatched": {s: a["first_mismatch"] for s, a in audited.items() if a["mismatches"]}}
        return {**base, **details}
    return {**base, "succeeded": ok, "failed": failed, "stale": stale, "n_symbols": len(rows)}


def close_attempt(engine: sa.Engine, attempt_id: str) -> dict[str, Any] | None:
    """Write the attempt's summary row once every symbol has finished; return the summary (None if
    a symbol is still unfinished).  Idempotent: the rows decide, not who calls."""
    summary = summary_of(engine, attempt_id)
    if summary is None:
        return None
    details = {k: v for k, v in summary.items() if k not in ("run_id", "attempt_id", "state", "n_symbols")}
    failed, stale = summary.get("failed") or {}, summary.get("stale") or {}
    n = summary.get("n_symbols", len(failed) + len(stale))
    counted = [f"{len(failed)} failed" if failed else "", f"{len(stale)} stale" if stale else ""]
    stamp = now()
    with engine.begin() as conn:
        conn.execute(sa.update(T).where(T.attempt_id == attempt_id, T.symbol == SUMMARY).values(
            state=summary["state"], details=store.jsonable(details), deadline=None, progress_at=stamp,
            error=f"of {n} symbols: {', '.join(c for c in counted if c)}" if failed or stale else None,
            finished_at=stamp))
    return summary


# --- reads ---------------------------------------------------------------------------------------

def latest_attempt(engine: sa.Engine, run_id: str) -> str | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(T.attempt_id).where(T.run_id == run_id, T.symbol == SUMMARY)
                           .order_by(T.started_at.desc(), T.attempt_id.desc()).limit(1)).first()
    return row.attempt_id if row else None


def attempt_state(engine: sa.Engine, attempt_id: str) -> str | None:
    head = _head(engine, attempt_id)
    return head.state if head else None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def run_status(engine: sa.Engine, run_id: str, attempt_id: str | None = None) -> dict[str, Any]:
    """One attempt of a run (default: its latest): its state, counts and per-symbol states."""
    attempt_id = attempt_id or latest_attempt(engine, run_id)
    head = _head(engine, attempt_id) if attempt_id else None
    if head is None or head.run_id != run_id:
        return {"run_id": run_id, "attempt_id": attempt_id, "state": Status.UNKNOWN, "details": {}, "counts": {},
                "symbols": {}}
    symbols = {r.symbol: {"state": r.state, "step": r.step, "error": r.error, "redrives": r.redrives,
                          "progress_at": _iso(r.progress_at), "deadline": _iso(r.deadline),
                          "failed_models": (r.details or {}).get("failed_models") or {}}
               for r in _symbol_rows(engine, attempt_id)}
    counts: dict[str, int] = {}
    for v in symbols.values():
        counts[v["state"]] = counts.get(v["state"], 0) + 1
    return {"run_id": run_id, "attempt_id": attempt_id, "kind": head.kind, "as_of": head.as_of.isoformat(),
            "state": head.state, "error": head.error, "details": head.details or {}, "counts": counts,
            "started_at": _iso(head.started_at), "finished_at": _iso(head.finished_at), "symbols": symbols}


def list_runs(engine: sa.Engine, limit: int = 20) -> list[dict[str, Any]]:
    """The `limit` most recently started runs, newest first, each with its attempts (newest first) and
    their per-state symbol counts."""
    with engine.connect() as conn:
        recent = conn.execute(sa.select(T.run_id, sa.func.max(T.started_at).label("last")).where(
            T.symbol == SUMMARY).group_by(T.run_id).order_by(sa.desc("last"), T.run_id).limit(limit)).all()
        run_ids = [r.run_id for r in recent]
        if not run_ids:
            return []
        heads = conn.execute(sa.select(T).where(T.run_id.in_(run_ids), T.symbol == SUMMARY)
                             .order_by(T.started_at.desc(), T.attempt_id.desc())).all()
        counts = conn.execute(sa.select(T.attempt_id, T.state, sa.func.count()).where(
            T.run_id.in_(run_ids), T.symbol != SUMMARY).group_by(T.attempt_id, T.state)).all()
    by_attempt: dict[str, dict[str, int]] = {}
    for attempt, state, n in counts:
        by_attempt.setdefault(attempt, {})[state] = int(n)
    out = {rid: {"run_id": rid, "attempts": []} for rid in run_ids}
    for h in heads:
        entry = out[h.run_id]
        entry.setdefault("kind", h.kind)
        entry.setdefault("as_of", h.as_of.isoformat())
        entry["attempts"].append({"attempt_id": h.attempt_id, "state": h.state, "started_at": _iso(h.started_at),
                                  "finished_at": _iso(h.finished_at), "counts": by_attempt.get(h.attempt_id, {})})
    return [out[rid] for rid in run_ids]


def open_attempts(engine: sa.Engine) -> list[Any]:
    """Summary rows of attempts not closed yet."""
    with engine.connect() as conn:
        return list(conn.execute(sa.select(T).where(T.symbol == SUMMARY, T.state.in_(OPEN))
                                 .order_by(T.started_at)))


def open_symbols(engine: sa.Engine, attempt_id: str) -> list[Any]:
    """Symbols of the attempt that have not finished."""
    return [r for r in _symbol_rows(engine, attempt_id) if r.state in OPEN]


def overdue_symbols(engine: sa.Engine, attempt_id: str, now: dt.datetime | None = None) -> list[Any]:
    """Unfinished symbols of the attempt whose deadline has passed."""
    now = now or now()
    return [r for r in _symbol_rows(engine, attempt_id)
            if r.state in OPEN and (r.deadline is None or r.deadline < now)]
