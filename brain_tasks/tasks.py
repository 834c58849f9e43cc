"""Thin Celery tasks: parse JSON arguments, call `jobs` (which reads the Brain and calls ml/ or
market/), return a small JSON dict.

Failure policy, the same for every task:
- a `DataError` (bad input) is recorded as a data-quality row and returned as a failed status, never
  retried and never raised, so one broken symbol does not fail its fan-out's chord;
- a transient fault (exchange, database, lock wait) is retried with exponential backoff and full
  jitter; after the last retry it is returned as a failed status as well;
- anything else is a bug: its traceback is logged and it too becomes a failed status, because a
  raising member would keep the fan-out's summary from running for every other symbol.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import sqlalchemy.exc
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.log import get_task_logger
from celery.utils.time import get_exponential_backoff_interval

from brain_tasks import jobs, workflows
from brain_tasks.ml import pipeline  # noqa: F401  (workers load the ML stack at start-up, not in a task)
from brain_tasks.app import app
from brain_tasks.brain.db import make_engine
from brain_tasks.errors import DataError, TransientError
from brain_tasks.market.symbols import symbol_label
from brain_tasks.runs import as_of_date, run_id_for
from brain_tasks.settings import get_settings

log = get_task_logger(__name__)

TRANSIENT = (TransientError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, TimeoutError,
             ConnectionError)
MAX_RETRIES = 5


def _engine() -> Any:
    return make_engine(get_settings().database_url)


def guarded(data_kind: str, record: bool = True) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """The failure policy above, around a task body.  `record=False` where the body records its own
    data-quality findings (collection)."""

    def wrap(body: Callable[..., dict]) -> Callable[..., dict]:
        signature = inspect.signature(body)

        @functools.wraps(body)
        def run(self: Task, *args: Any, **kwargs: Any) -> dict:
            call = signature.bind(self, *args, **kwargs).arguments
            symbol = symbol_label(call.get("symbol", "*"))  # storable even when the symbol is the fault
            prev = call["prev"] if isinstance(call.get("prev"), dict) else {}
            step = self.name.rsplit(".", 1)[-1]
            ids = {k: call[k] for k in ("symbol", "model_type", "as_of") if call.get(k) is not None}
            try:
                return body(self, *args, **kwargs)
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
            failed = {**prev, **ids, "status": jobs.FAILED, "step": step, "error": error}
            try:
                if record:
                    jobs.record_task_failure(_engine(), get_settings(), symbol, data_kind, step, error,
                                             as_of_date(call.get("as_of")))
                if call.get("run_id") and step == "select_model":
                    jobs.record_symbol_state(_engine(), call["run_id"], symbol, as_of_date(call.get("as_of")),
                                             failed)
            except Exception:  # the database may be what failed; the status still travels on
                log.exception("%s %s: could not record the failure", step, symbol)
            return failed
        return run

    return wrap


def _limits(kind: str) -> dict[str, int]:
    s = get_settings()
    if kind == "train":
        return {"soft_time_limit": s.train_soft_time_limit, "time_limit": s.train_time_limit}
    return {"soft_time_limit": s.task_soft_time_limit, "time_limit": s.task_time_limit}


# --- plumbing ------------------------------------------------------------------------------------

@app.task(name="brain_tasks.ping")
def ping(value: Any = None) -> dict:
    """A trivial task: proves a worker is up and the JSON round trip works."""
    return {"pong": value, "worker": app.conf.broker_url.split("://", 1)[0]}


# --- collection ----------------------------------------------------------------------------------

def _collect(kind: str, symbol: str) -> dict:
    from brain_tasks.collect import collect, source_for

    s = get_settings()
    timeframe = s.timeframe if kind in ("candles", "open_interest") else None
    summary = collect(_engine(), source_for(s), kind, symbol, timeframe=timeframe)
    return {"symbol": symbol, "status": jobs.OK, "kind": kind, **summary}


@app.task(name="brain_tasks.collect_candles", bind=True, **_limits("collect"))
@guarded("candles", record=False)
def collect_candles(self: Task, symbol: str, run_id: str | None = None) -> dict:
    return _collect("candles", symbol)


@app.task(name="brain_tasks.collect_funding", bind=True, **_limits("collect"))
@guarded("funding", record=False)
def collect_funding(self: Task, symbol: str) -> dict:
    return _collect("funding", symbol)


@app.task(name="brain_tasks.collect_open_interest", bind=True, **_limits("collect"))
@guarded("open_interest", record=False)
def collect_open_interest(self: Task, symbol: str) -> dict:
    return _collect("open_interest", symbol)


@app.task(name="brain_tasks.collect_liquidations", bind=True, **_limits("collect"))
@guarded("liquidations", record=False)
def collect_liquidations(self: Task, symbol: str) -> dict:
    return _collect("liquidations", symbol)


@app.task(name="brain_tasks.collect_universe", bind=True)
def collect_universe(self: Task, kind: str = "candles", symbols: list[str] | None = None) -> Any:
    symbols = symbols or list(get_settings().symbols)
    return self.replace(workflows.collect_canvas(kind, symbols))


@app.task(name="brain_tasks.data_quality_check", bind=True, **_limits("collect"))
def data_quality_check(self: Task, symbols: list[str] | None = None) -> dict:
    from brain_tasks.collect import check_stored

    s = get_settings()
    return check_stored(_engine(), s.exchange, list(symbols or s.symbols), s.timeframe)


# --- the per-symbol chain ------------------------------------------------------------------------

@app.task(name="brain_tasks.train_symbol", bind=True, **_limits("train"))
@guarded("candles")
def train_symbol(self: Task, symbol: str, model_type: str, as_of: str | None = None,
                 run_id: str | None = None) -> dict:
    return jobs.train_symbol(_engine(), get_settings(), symbol, model_type, as_of_date(as_of))


@app.task(name="brain_tasks.compare_models", bind=True, **_limits("analysis"))
@guarded("models")
def compare_models(self: Task, prev: Any, symbol: str, as_of: str | None = None,
                   run_id: str | None = None) -> dict:
    return jobs.compare_models(_engine(), get_settings(), prev, symbol, as_of_date(as_of))


@app.task(name="brain_tasks.compute_importance", bind=True, **_limits("train"))
@guarded("models")
def compute_importance(self: Task, prev: dict, symbol: str, as_of: str | None = None) -> dict:
    return jobs.compute_importance(_engine(), get_settings(), prev, symbol, as_of_date(as_of))


@app.task(name="brain_tasks.check_rollback", bind=True, **_limits("analysis"))
@guarded("models")
def check_rollback(self: Task, prev: dict, symbol: str, as_of: str | None = None) -> dict:
    return jobs.check_rollback(_engine(), get_settings(), prev, symbol, as_of_date(as_of))


@app.task(name="brain_tasks.select_model", bind=True, **_limits("analysis"))
@guarded("models")
def select_model(self: Task, prev: dict, symbol: str, as_of: str | None = None,
                 run_id: str | None = None) -> dict:
    return jobs.select_model(_engine(), get_settings(), prev, symbol, as_of_date(as_of), run_id)


# --- fan-outs ------------------------------------------------------------------------------------

def _fan_out(task: Task, symbols: list[str] | None, as_of: str | None, models: list[str] | None) -> Any:
    """Replace `task` by the fan-out canvas; its result becomes the run's summary."""
    from brain_tasks.requests import check_models, check_symbols

    s = get_settings()
    day = as_of_date(as_of)
    # A message sent by name bypasses the client: refuse a bad request here too (a string of symbols
    # would otherwise fan out over its characters).
    symbols = check_symbols(s.symbols if symbols is None else symbols)
    models = check_models(models or s.models)
    run_id = run_id_for("retrain", day, symbols, models)
    jobs.start_run(_engine(), run_id, day, symbols, models)
    return task.replace(workflows.daily_retrain_canvas(symbols, day, models, run_id))


@app.task(name="brain_tasks.daily_retrain", bind=True)
def daily_retrain(self: Task, symbols: list[str] | None = None, as_of: str | None = None,
                  models: list[str] | None = None) -> Any:
    return _fan_out(self, symbols, as_of, models)


@app.task(name="brain_tasks.retrain_symbol", bind=True)
def retrain_symbol(self: Task, symbol: str, as_of: str | None = None, models: list[str] | None = None) -> Any:
    """One symbol's whole chain, as a run of its own."""
    return _fan_out(self, [symbol], as_of, models)


@app.task(name="brain_tasks.summarize_run", bind=True, autoretry_for=TRANSIENT, retry_backoff=True,
          retry_jitter=True, max_retries=MAX_RETRIES)
def summarize_run(self: Task, results: Any, run_id: str) -> dict:
    return jobs.summarize_run(_engine(), results, run_id)


@app.task(name="brain_tasks.nightly_analysis", bind=True)
def nightly_analysis(self: Task, symbols: list[str] | None = None, as_of: str | None = None) -> Any:
    from brain_tasks.brain import store

    s = get_settings()
    day = as_of_date(as_of)
    from brain_tasks.requests import check_symbols

    symbols = check_symbols(symbols if symbols is not None else (s.symbols or store.list_symbols(
        _engine(), s.exchange, s.timeframe)), allow_empty=True)
    run_id = run_id_for("nightly", day, symbols)
    jobs.start_run(_engine(), run_id, day, [], [])
    return self.replace(workflows.nightly_canvas(symbols, day, run_id))


@app.task(name="brain_tasks.analyse_symbol", bind=True, **_limits("analysis"))
@guarded("features")
def analyse_symbol(self: Task, symbol: str, as_of: str | None = None) -> dict:
    return jobs.analyse_symbol(_engine(), get_settings(), symbol, as_of_date(as_of))


@app.task(name="brain_tasks.summarize_nightly", bind=True, autoretry_for=TRANSIENT, retry_backoff=True,
          retry_jitter=True, max_retries=MAX_RETRIES)
def summarize_nightly(self: Task, results: Any, run_id: str, as_of: str | None = None) -> dict:
    return jobs.summarize_nightly(_engine(), results, run_id, as_of_date(as_of))


# --- serving -------------------------------------------------------------------------------------

@app.task(name="brain_tasks.publish_signals", bind=True, **_limits("analysis"))
@guarded("signals")
def publish_signals(self: Task, symbols: list[str] | None = None) -> dict:
    """Compute and record every symbol's decision for its latest closed bar (idempotent per bar)."""
    from brain_tasks.publish import publish_signals as publish

    return publish(_engine(), get_settings(), symbols)


@app.task(name="brain_tasks.bar_close", bind=True)
def bar_close(self: Task, symbols: list[str] | None = None) -> Any:
    """At a bar close: collect the bar that just closed for the universe, then publish the signals."""
    from brain_tasks.publish import universe

    symbols = universe(_engine(), get_settings(), symbols)
    if not symbols:
        return {"status": jobs.SKIPPED, "reason": "no symbols to serve"}
    return self.replace(workflows.bar_close_canvas(symbols))
