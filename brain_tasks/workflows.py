"""Canvases: the per-symbol chain, the fan-out over symbols, the nightly analysis.

A workflow is data.  Each function returns a Celery signature built from task *names* (so building
one imports no ML library); the caller applies it, or a task replaces itself with it.  Every step of a
per-symbol chain returns a status instead of raising on bad data, so one broken symbol ends its own
chain early and the fan-out's summary still runs for the others (a raising chord member would hand
the summary a ChordError instead).
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

from celery import chain, chord, group
from celery.canvas import Signature

from brain_tasks.app import app


def _sig(name: str, *args: object, immutable: bool = False, **kwargs: object) -> Signature:
    return app.signature(f"brain_tasks.{name}", args=args, kwargs=kwargs, immutable=immutable)


def symbol_canvas(symbol: str, as_of: dt.date, models: Sequence[str], run_id: str,
                  attempt_id: str | None = None) -> Signature:
    """collect -> train every model type in parallel -> compare -> importance -> rollback -> select
    -> train the position sizer -> record the outcome.

    From the trainings on, each step takes the `ChainState` the step before it returned
    (`brain_tasks.service.chain`) and returns the next; the last one records it as the symbol's state in
    the attempt.  `run_id` and `attempt_id` ride along in the kwargs: each step marks its progress in
    the attempt's training_runs row, and an operator can tell in Flower which run a task is for.
    """
    day = as_of.isoformat()
    ids = {"run_id": run_id, "attempt_id": attempt_id}
    return chain(
        _sig("collect_candles", symbol, immutable=True, **ids),
        group(_sig("train_symbol", symbol, m, day, immutable=True, **ids) for m in models),
        _sig("compare_models", symbol, day, **ids),
        _sig("compute_importance", symbol, day, **ids),
        _sig("check_rollback", symbol, day, **ids),
        _sig("select_model", symbol, day, **ids),
        _sig("train_sizer", symbol, day, **ids),
        _sig("record_outcome", symbol, **ids),
    )


def daily_retrain_canvas(symbols: Sequence[str], as_of: dt.date, models: Sequence[str],
                         run_id: str, attempt_id: str | None = None) -> Signature:
    """Fan the per-symbol canvases out; one summary step closes the attempt in training_runs."""
    header = [symbol_canvas(s, as_of, models, run_id, attempt_id) for s in symbols]
    return chord(header, _sig("summarize_run", run_id, attempt_id=attempt_id))


def analyse_canvas(symbol: str, as_of: dt.date, run_id: str, attempt_id: str | None = None) -> Signature:
    """The nightly's per-symbol chain: analyse -> record the outcome."""
    ids = {"run_id": run_id, "attempt_id": attempt_id}
    return chain(_sig("analyse_symbol", symbol, as_of.isoformat(), immutable=True, **ids),
                 _sig("record_outcome", symbol, **ids))


def nightly_canvas(symbols: Sequence[str], as_of: dt.date, run_id: str, attempt_id: str | None = None) -> Signature:
    """Per symbol: feature drift and importance trends; then one data-quality summary."""
    header = [analyse_canvas(s, as_of, run_id, attempt_id) for s in symbols]
    return chord(header, _sig("summarize_nightly", run_id, as_of.isoformat(), attempt_id=attempt_id))


def _replay_trainings(symbol: str, model_type: str, days: Sequence[dt.date], ids: dict[str, str | None]) -> Signature:
    """One model type's replay trainings, one after the other in as-of order.  In order, so that the
    version numbers of (symbol, model type) follow the as-of days in every run of the replay, whatever
    finishes first; each training gets the outcomes before it and returns them with its own (a chain's
    result is its last task's), so the walk receives every training's outcome."""
    first, *rest = days
    return chain(_sig("replay_train", [], symbol, model_type, first.isoformat(), immutable=True, **ids),
                 *(_sig("replay_train", symbol, model_type, d.isoformat(), **ids) for d in rest))


def replay_symbol_canvas(symbol: str, replay_id: str, days: Sequence[dt.date], models: Sequence[str],
                         attempt_id: str | None = None) -> Signature:
    """A replay's chain for one symbol: per model type, its trainings as of each step's eve in as-of
    order, the model types in parallel -> the decision walk over the steps -> record the outcome."""
    ids = {"run_id": replay_id, "attempt_id": attempt_id}
    return chain(
        group(_replay_trainings(symbol, m, days, ids) for m in models),
        _sig("replay_walk", symbol, replay_id, **ids),
        _sig("record_outcome", symbol, **ids),
    )


def replay_pool_sig(replay_id: str, attempt_id: str | None) -> Signature:
    """The pooling step sent on its own (no chord results before it)."""
    return _sig("replay_pool", None, replay_id, attempt_id=attempt_id)


def replay_canvas(symbols: Sequence[str], replay_id: str, days: Sequence[dt.date], models: Sequence[str],
                  attempt_id: str | None = None) -> Signature:
    """Fan the symbols' replay chains out; `replay_pool` pools them, summarises and closes the attempt."""
    header = [replay_symbol_canvas(s, replay_id, days, models, attempt_id) for s in symbols]
    return chord(header, _sig("replay_pool", replay_id, attempt_id=attempt_id))


def redrive_canvas(kind: str, symbol: str, as_of: dt.date, models: Sequence[str], run_id: str,
                   attempt_id: str, days: Sequence[dt.date] | None = None) -> Signature:
    """One symbol's canvas of an attempt, sent again on its own (reconcile_runs): every step finds
    the work already done and the last step records the symbol's state.  A replay's needs its steps'
    as-of `days` (run_id is the replay id)."""
    if kind == "nightly":
        return analyse_canvas(symbol, as_of, run_id, attempt_id)
    if kind == "replay":
        if days is None:
            raise ValueError("a replay's re-drive needs its steps' as-of days")
        return replay_symbol_canvas(symbol, run_id, days, models, attempt_id)
    return symbol_canvas(symbol, as_of, models, run_id, attempt_id)


def collect_canvas(kind: str, symbols: Sequence[str]) -> Signature:
    name = {"candles": "collect_candles", "funding": "collect_funding",
            "open_interest": "collect_open_interest", "liquidations": "collect_liquidations"}[kind]
    return group(_sig(name, s, immutable=True) for s in symbols)


def bar_close_canvas(symbols: Sequence[str]) -> Signature:
    """Collect the just-closed bar of every symbol, then publish every symbol's signal.  Collection
    returns a status instead of raising, so a symbol whose bar did not come still gets its (stale)
    signal published."""
    return chain(collect_canvas("candles", symbols), _sig("publish_signals", list(symbols), immutable=True))
