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


def symbol_canvas(symbol: str, as_of: dt.date, models: Sequence[str], run_id: str) -> Signature:
    """collect -> train every model type in parallel -> compare -> importance -> rollback -> select.

    `run_id` rides along in the kwargs so that an operator can tell in Flower which run a task is for.
    """
    day = as_of.isoformat()
    return chain(
        _sig("collect_candles", symbol, run_id=run_id, immutable=True),
        group(_sig("train_symbol", symbol, m, day, run_id=run_id, immutable=True) for m in models),
        _sig("compare_models", symbol, day, run_id=run_id),
        _sig("compute_importance", symbol, day),
        _sig("check_rollback", symbol, day),
        _sig("select_model", symbol, day, run_id=run_id),
    )


def daily_retrain_canvas(symbols: Sequence[str], as_of: dt.date, models: Sequence[str],
                         run_id: str) -> Signature:
    """Fan the per-symbol canvases out; one summary step writes the run's training_runs row."""
    header = [symbol_canvas(s, as_of, models, run_id) for s in symbols]
    return chord(header, _sig("summarize_run", run_id))


def nightly_canvas(symbols: Sequence[str], as_of: dt.date, run_id: str) -> Signature:
    """Per symbol: feature drift and importance trends; then one data-quality summary."""
    day = as_of.isoformat()
    header = [_sig("analyse_symbol", s, day, immutable=True) for s in symbols]
    return chord(header, _sig("summarize_nightly", run_id, day))


def collect_canvas(kind: str, symbols: Sequence[str]) -> Signature:
    name = {"candles": "collect_candles", "funding": "collect_funding",
            "open_interest": "collect_open_interest", "liquidations": "collect_liquidations"}[kind]
    return group(_sig(name, s, immutable=True) for s in symbols)


def bar_close_canvas(symbols: Sequence[str]) -> Signature:
    """Collect the just-closed bar of every symbol, then publish every symbol's signal.  Collection
    returns a status instead of raising, so a symbol whose bar did not come still gets its (stale)
    signal published."""
    return chain(collect_canvas("candles", symbols), _sig("publish_signals", list(symbols), immutable=True))
