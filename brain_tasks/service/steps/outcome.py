"""Outcome: a symbol's chain ends by recording its state in its run's attempt (training_runs).

The canvas makes this its last step (`brain_tasks.record_outcome`), so what is recorded is whatever
the chain came to, and nothing has to know which step happens to be last.  The attempt's bookkeeping
(its pending rows, its summary once the fan-out is done) and the task-failure rows live here too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from brain_tasks import timekeeping
from brain_tasks.brain import registry, runs
from brain_tasks.service.chain import ChainState
from brain_tasks.settings import Settings
from brain_tasks.vocabulary import Status, outcome_state


def start_attempt(engine: sa.Engine, settings: Settings, kind: str, run_id: str, attempt_id: str, as_of: dt.date,
                  symbols: Sequence[str], models: Sequence[str]) -> None:
    """The attempt's rows, every symbol pending (`brain.runs.start_attempt`)."""
    deadline = timekeeping.now() + dt.timedelta(seconds=settings.stall_timeout)
    runs.start_attempt(engine, run_id, attempt_id, kind, as_of, symbols, models, deadline)


def record_outcome(engine: sa.Engine, attempt_id: str, state: ChainState) -> None:
    """The symbol's chain ended as `state`: its row gets the state, the error and the recorded details."""
    final = outcome_state(state.status)
    ended = final in (Status.FAILED, Status.STALE)
    runs.record_symbol_state(engine, attempt_id, state.symbol, final, error=state.error if ended else None,
                             details=state.details(), step=state.step if ended else None)


def summarize_attempt(engine: sa.Engine, results: Any, run_id: str, attempt_id: str | None) -> dict[str, Any]:
    """Close the attempt from its rows once the fan-out's chord is done.  An outcome the chord delivered
    that its row lacks (its last step could not write it) is written first; a symbol with neither is
    failed with the reason, since nothing of it is left to run."""
    attempt_id = attempt_id or runs.latest_attempt(engine, run_id)
    if attempt_id is None:
        return {"run_id": run_id, "attempt_id": None, "state": Status.UNKNOWN}
    delivered = {}
    for item in results if isinstance(results, list) else [results]:
        try:
            state = ChainState.from_wire(item)
        except (ValueError, TypeError, KeyError):
            continue  # not a chain's state (a failed chord member's error): its row says what happened
        delivered[state.symbol] = state
    for row in runs.open_symbols(engine, attempt_id):
        if row.symbol in delivered:
            record_outcome(engine, attempt_id, delivered[row.symbol])
        else:
            runs.fail_symbol(engine, attempt_id, row.symbol, "the fan-out finished without this symbol's outcome")
    return runs.close_attempt(engine, attempt_id) or {"run_id": run_id, "attempt_id": attempt_id,
                                                      "state": Status.UNKNOWN}


def record_task_failure(engine: sa.Engine, settings: Settings, symbol: str, data_kind: str, check: str,
                        error: BaseException | str, as_of: dt.date | None = None) -> None:
    """A domain error as a data-quality row: logged once per (symbol, check, day), never retried."""
    registry.record_finding(engine, source=settings.exchange, symbol=printable(symbol)[:64],
                            timeframe=settings.timeframe, data_kind=data_kind, check=check,
                            day=as_of or timekeeping.now().date(), details={"error": printable(str(error))[:2000]})


def printable(text: str) -> str:
    """`text` with control characters escaped: a NUL byte must not stop a failure from being recorded."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
