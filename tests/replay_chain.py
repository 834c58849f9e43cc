"""A replay run in-process, step by step, without Celery (what its canvas does, minus the broker)."""

from __future__ import annotations

from typing import Any

from brain_tasks.errors import DataError
from brain_tasks.service import replay_run
from brain_tasks.service.replay_plan import ReplayPlan, plan_replay
from brain_tasks.service.replay_walk import walk_symbol
from brain_tasks.service.steps import outcome
from brain_tasks.vocabulary import Status


def _train(engine: Any, settings: Any, symbol: str, model_type: str, as_of: Any) -> dict:
    """`replay_train` without Celery: a data error is a failed outcome, as the task's policy makes it."""
    try:
        return replay_run.train_for_replay(engine, settings, symbol, model_type, as_of)
    except DataError as exc:
        return {"model_type": model_type, "as_of": as_of.isoformat(), "status": Status.FAILED, "error": str(exc)}


def run_replay(engine: Any, settings: Any, symbols: list[str], models: list[str], start: str, end: str,
               every: str = "1d", grid: Any = None, attempt_id: str = "attempt-1") -> tuple[ReplayPlan, dict, list]:
    """plan -> start -> per symbol: trainings, walk, record outcome -> pool.  Returns the plan, the pool's
    result and the trainings' outcomes."""
    plan = plan_replay(engine, settings, symbols, models, start, end, every, grid)
    replay_run.start(engine, settings, plan, attempt_id)
    states, trainings = [], []
    for s in plan.symbols:
        # As the canvas delivers them: per model type, its trainings' outcomes in as-of order.
        trained = [[_train(engine, settings, s, m, st.as_of) for st in plan.steps] for m in plan.models]
        trainings += [o for chain in trained for o in chain]
        state = walk_symbol(engine, settings, plan, s, trained)
        outcome.record_outcome(engine, attempt_id, state)
        states.append(state.to_json())
    return plan, replay_run.pool(engine, settings, plan, attempt_id, states), trainings
