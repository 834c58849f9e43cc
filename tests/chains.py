"""A symbol's chain run in-process, step by step, without Celery (what the canvas does, minus the broker)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from brain_tasks.service.chain import ChainState
from brain_tasks.service.steps import choose, compare, explain, outcome, promote, sizer, train


def trained(engine: Any, settings: Any, symbol: str, models: list[str], day: dt.date) -> ChainState:
    """The state after the trainings of `models` (each as its own task would return it)."""
    state = ChainState.start(symbol, day)
    for m in models:
        state = state.with_model(train.train_symbol(engine, settings, symbol, m, day))
    return state


def run_chain(engine: Any, settings: Any, symbol: str, models: list[str], day: dt.date,
              attempt_id: str | None = None, *, with_sizer: bool = False) -> ChainState:
    """train -> compare -> importance -> rollback -> select (-> sizer); with `attempt_id`, the outcome is
    recorded as the canvas's last step records it."""
    state = trained(engine, settings, symbol, models, day)
    for step in (compare.compare_models, explain.compute_importance, promote.check_rollback,
                 choose.select_model):
        state = step(engine, settings, state)
    if with_sizer:
        state = sizer.train_sizer(engine, settings, state)
    if attempt_id:
        outcome.record_outcome(engine, attempt_id, state)
    return state
