"""The policy every guarded task shares, as a `celery.Task` base class (the app's `task_cls`).

Failure policy:
- a `DataError` (bad input) is recorded as a data-quality row and returned as a failed status, never
  retried and never raised, so one broken symbol does not fail its fan-out's chord;
- a transient fault (exchange, database, lock wait) is retried with exponential backoff and full
  jitter; after the last retry it is returned as a failed status as well;
- anything else is a bug: its traceback is logged and it too becomes a failed status, because a
  raising member would keep the fan-out's summary from running for every other symbol.

Progress policy: a step that carries an `attempt_id` marks its symbol's row of that attempt as
running at this step, with a deadline (the step's hard time limit plus `stall_timeout`) by which it
owes the next sign of life; `reconcile_runs` re-drives a symbol whose deadline passed with nothing of
its attempt alive.  The last step of a symbol's canvas (`FinalStep`) writes the symbol's outcome.

This module stays light (no pandas, no ML): the Engine's process builds Celery's own tasks from it.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from typing import Any, Callable, Mapping

import sqlalchemy.exc
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.log import get_task_logger
from celery.utils.time import get_exponential_backoff_interval

from brain_tasks.errors import DataError, TransientError
from brain_tasks.market.symbols import symbol_label
from brain_tasks.runs import as_of_date
from brain_tasks.settings import get_settings

log = get_task_logger("brain_tasks.tasks")

TRANSIENT = (TransientError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, TimeoutError,
             ConnectionError)
MAX_RETRIES = 5
FAILED = "failed"


def _engine() -> Any:
    from brain_tasks.brain.db import make_engine

    return make_engine(get_settings().database_url)


class BrainTask(Task):
    """Base class of every brain_tasks task; `guarded` bodies run under its policy."""

    def run_guarded(self, body: Callable[..., dict], call: Mapping[str, Any], data_kind: str, record: bool,
                    args: tuple, kwargs: dict) -> dict:
        symbol = symbol_label(call.get("symbol", "*"))  # storable even when the symbol is the fault
        prev = call["prev"] if isinstance(call.get("prev"), dict) else {}
        step = self.name.rsplit(".", 1)[-1]
        ids = {k: call[k] for k in ("symbol", "model_type", "as_of") if call.get(k) is not None}
        try:
            self.step_started(call, step)
            outcome = body(self, *args, **kwargs)
            self.step_finished(call, outcome)
            return outcome
        except (DataError, SoftTimeLimitExceeded) as exc:
            log.warning("%s %s: %s", step, symbol, exc)
            error = str(exc) or type(exc).__name__
        except TRANSIENT as exc:
            if self.request.retries < MAX_RETRIES and not self.request.is_eager:
                countdown = get_exponential_backoff_interval(
                    factor=2, retries=self.request.retries, maximum=300, full_jitter=True)
                raise self.retry(exc=exc, countdown=countdown, max_retries=MAX_RETRIES)
            log.error("%s %s gave up after %d retries: %s", step, symbol, self.request.retries, exc)
            error = f"transient fault persisted: {type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug: keep its traceback in the log, but let the fan-out finish
            log.exception("%s %s failed unexpectedly", step, symbol)
            error = f"{type(exc).__name__}: {exc}"
        failed = {**prev, **ids, "status": FAILED, "step": step, "error": error}
        try:
            if record:
                from brain_tasks import jobs

                jobs.record_task_failure(_engine(), get_settings(), symbol, data_kind, step, error,
                                         as_of_date(call.get("as_of")))
            self.step_finished(call, failed)
        except Exception:  # the database may be what failed; the status still travels on
            log.exception("%s %s: could not record the failure", step, symbol)
        return failed

    def step_started(self, call: Mapping[str, Any], step: str) -> None:
        attempt, symbol = call.get("attempt_id"), call.get("symbol")
        if not attempt or not symbol:
            return
        from brain_tasks.brain import runs

        s = get_settings()
        limit = self.time_limit or self.app.conf.task_time_limit or s.task_time_limit
        deadline = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=limit + s.stall_timeout)
        runs.step_started(_engine(), attempt, symbol, step, deadline)

    def step_finished(self, call: Mapping[str, Any], outcome: dict) -> None:
        """A step in the middle of a chain hands its outcome to the next step; nothing to record."""


class FinalStep(BrainTask):
    """The last step of a symbol's canvas: its outcome is the symbol's state in the attempt."""

    def step_finished(self, call: Mapping[str, Any], outcome: dict) -> None:
        attempt, symbol = call.get("attempt_id"), call.get("symbol")
        if attempt and symbol:
            from brain_tasks.brain import runs

            runs.record_symbol_state(_engine(), attempt, symbol, outcome)


def guarded(data_kind: str, record: bool = True) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Run a bound task body under `BrainTask`'s policy; `data_kind` labels its recorded failures and
    `record=False` is for bodies that record their own data-quality findings (collection).

        @app.task(name="brain_tasks.x", bind=True)     # base: the app's BrainTask, or FinalStep
        @guarded("candles")
        def x(self, symbol: str, attempt_id: str | None = None) -> dict: ...
    """

    def wrap(body: Callable[..., dict]) -> Callable[..., dict]:
        signature = inspect.signature(body)

        @functools.wraps(body)
        def run(self: BrainTask, *args: Any, **kwargs: Any) -> dict:
            call = signature.bind(self, *args, **kwargs).arguments
            return self.run_guarded(body, call, data_kind, record, args, kwargs)
        return run

    return wrap
