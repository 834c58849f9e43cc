"""The policy every task shares, as a `celery.Task` base class (the app's `task_cls`).

Failure policy (`BrainTask.guard`):
- a `DataError` (bad input) is recorded as a data-quality row and returned as a failed outcome, never
  retried and never raised, so one broken symbol does not fail its fan-out's chord;
- a transient fault (exchange, database, lock wait) is retried with exponential backoff and full
  jitter; after the last retry it is returned as a failed outcome as well;
- anything else is a bug: its traceback is logged and it too becomes a failed outcome, because a
  raising member would keep the fan-out's summary from running for every other symbol.

What "a failed outcome" is belongs to the step: a chain step fails its `ChainState`
(`ChainState.failed`), a training marks its model failed, the sizer marks only itself failed.

Progress policy: a step that belongs to an attempt marks its symbol's row of that attempt as running
at this step, with a deadline (the step's hard time limit plus `stall_timeout`) by which it owes the
next sign of life; `reconcile_runs` re-drives a symbol whose deadline passed with nothing of its
attempt alive.  The canvas's last step (`brain_tasks.record_outcome`) writes the symbol's outcome.

This module stays light (no pandas, no ML): the Engine's process builds Celery's own tasks from it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy.exc
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.log import get_task_logger
from celery.utils.time import get_exponential_backoff_interval

from brain_tasks import timekeeping
from brain_tasks.errors import DataError, TransientError
from brain_tasks.market.symbols import symbol_label
from brain_tasks.settings import get_settings

log = get_task_logger("brain_tasks.tasks")

TRANSIENT = (TransientError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, TimeoutError,
             ConnectionError)
MAX_RETRIES = 5

Out = TypeVar("Out")


def _engine() -> Any:
    from brain_tasks.brain.db import make_engine

    return make_engine(get_settings().database_url)


class BrainTask(Task):
    """Base class of every brain_tasks task."""

    @property
    def step_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def guard(self, work: Callable[[], Out], *, symbol: str, fail: Callable[[str], Out],
              attempt_id: str | None = None, finding: tuple[str, dt.date | None] | None = None) -> Out:
        """Run `work` under the failure and progress policy.

        `symbol` labels the log lines and the finding; `fail(error)` makes the failed outcome the step
        returns; `finding=(data_kind, as_of)` records a failure as a data-quality row (None: the work
        records its own findings, as collection does); `attempt_id` marks the attempt's progress."""
        label = symbol_label(symbol)  # storable even when the symbol is the fault
        step = self.step_name
        try:
            self.mark_progress(attempt_id, symbol)
            return work()
        except (DataError, SoftTimeLimitExceeded) as exc:
            log.warning("%s %s: %s", step, label, exc)
            error = str(exc) or type(exc).__name__
        except TRANSIENT as exc:
            if self.request.retries < MAX_RETRIES and not self.request.is_eager:
                countdown = get_exponential_backoff_interval(
                    factor=2, retries=self.request.retries, maximum=300, full_jitter=True)
                raise self.retry(exc=exc, countdown=countdown, max_retries=MAX_RETRIES)
            log.error("%s %s gave up after %d retries: %s", step, label, self.request.retries, exc)
            error = f"transient fault persisted: {type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug: keep its traceback in the log, but let the fan-out finish
            log.exception("%s %s failed unexpectedly", step, label)
            error = f"{type(exc).__name__}: {exc}"
        if finding is not None:
            try:
                from brain_tasks.service.steps.outcome import record_task_failure

                data_kind, day = finding
                record_task_failure(_engine(), get_settings(), label, data_kind, step, error, day)
            except Exception:  # the database may be what failed; the failed outcome still travels on
                log.exception("%s %s: could not record the failure", step, label)
        return fail(error)

    def mark_progress(self, attempt_id: str | None, symbol: str) -> None:
        """The attempt's row of `symbol` is running at this step, and owes a sign of life by its deadline."""
        if not attempt_id or not symbol:
            return
        from brain_tasks.brain import runs

        s = get_settings()
        limit = self.time_limit or self.app.conf.task_time_limit or s.task_time_limit
        deadline = timekeeping.now() + dt.timedelta(seconds=limit + s.stall_timeout)
        runs.step_started(_engine(), attempt_id, symbol, self.step_name, deadline)
