"""Thin Celery tasks: parse JSON arguments, call `jobs` (which reads the Brain and calls ml/ or
market/), return a small JSON dict.

Every task's failure and progress policy lives in its base class (`brain_tasks.policy.BrainTask`, the
app's task class); `@guarded(data_kind)` runs a body under it.  The last step of a symbol's canvas is a
`FinalStep`: its outcome is the symbol's state in the run's attempt.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.signals import task_postrun, worker_process_init

from brain_tasks import jobs, workflows
from brain_tasks.app import app
from brain_tasks.brain.db import make_engine
from brain_tasks.policy import MAX_RETRIES, TRANSIENT, FinalStep, guarded, log  # noqa: F401  (tasks appended below use them)
from brain_tasks.runs import as_of_date, run_id_for
from brain_tasks.settings import get_settings


_IN_POOL_PROCESS = False  # set in each pool process of a worker


@worker_process_init.connect
def _load_ml_stack(**_: Any) -> None:
    """Pool processes load the ML stack at start-up, not in a task.  Only they: the worker's main
    process runs no task, and importing it there (1.5 s of CPU) delayed every pool start by as much."""
    from brain_tasks.ml import pipeline  # noqa: F401

    global _IN_POOL_PROCESS
    _IN_POOL_PROCESS = True


@task_postrun.connect
def _release_result_subscriptions(**_: Any) -> None:
    """A pool process never waits for a result, yet freezing a chord (`daily_retrain` replaced by its
    fan-out) subscribes it to the result channel of every member (the group result's barrier calls
    `then` on each).  Nothing reads them: Redis buffers every published result for this process until
    its output-buffer limit cuts the connection, and each fan-out adds a thousand more channels
    (celery#4824, #6963).  Drop them when the task is done.  The app's backend, not the task's: the
    canvas's results were made by the app."""
    consumer = getattr(app.backend, "result_consumer", None)
    if _IN_POOL_PROCESS and consumer is not None and getattr(consumer, "subscribed_to", None):
        consumer.stop()  # closes the pub/sub connection, and Redis forgets its channels with it
        consumer.subscribed_to.clear()


def _engine() -> Any:
    return make_engine(get_settings().database_url)


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
def collect_candles(self: Task, symbol: str, run_id: str | None = None, attempt_id: str | None = None) -> dict:
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
                 run_id: str | None = None, attempt_id: str | None = None) -> dict:
    return jobs.train_symbol(_engine(), get_settings(), symbol, model_type, as_of_date(as_of))


@app.task(name="brain_tasks.compare_models", bind=True, **_limits("analysis"))
@guarded("models")
def compare_models(self: Task, prev: Any, symbol: str, as_of: str | None = None,
                   run_id: str | None = None, attempt_id: str | None = None) -> dict:
    return jobs.compare_models(_engine(), get_settings(), prev, symbol, as_of_date(as_of))


@app.task(name="brain_tasks.compute_importance", bind=True, **_limits("train"))
@guarded("models")
def compute_importance(self: Task, prev: dict, symbol: str, as_of: str | None = None,
                       run_id: str | None = None, attempt_id: str | None = None) -> dict:
    return jobs.compute_importance(_engine(), get_settings(), prev, symbol, as_of_date(as_of))


@app.task(name="brain_tasks.check_rollback", bind=True, **_limits("analysis"))
@guarded("models")
def check_rollback(self: Task, prev: dict, symbol: str, as_of: str | None = None,
                   run_id: str | None = None, attempt_id: str | None = None) -> dict:
    return jobs.check_rollback(_engine(), get_settings(), prev, symbol, as_of_date(as_of))


@app.task(name="brain_tasks.select_model", bind=True, **_limits("analysis"))
@guarded("models")
def select_model(self: Task, prev: dict, symbol: str, as_of: str | None = None,
                 run_id: str | None = None, attempt_id: str | None = None) -> dict:
    return jobs.select_model(_engine(), get_settings(), prev, symbol, as_of_date(as_of))


# --- fan-outs ------------------------------------------------------------------------------------
# A fan-out's attempt id is the id of the task that was enqueued (given by BrainClient, or this task's
# own id when beat or Engine code sent it): a redelivered message is the same attempt, not a new one.

def _fan_out(task: Task, symbols: list[str] | None, as_of: str | None, models: list[str] | None,
             attempt_id: str | None) -> Any:
    """Replace `task` by the fan-out canvas; its result becomes the attempt's summary."""
    from brain_tasks.requests import check_models, check_symbols

    s = get_settings()
    day = as_of_date(as_of)
    # A message sent by name bypasses the client: refuse a bad request here too (a string of symbols
    # would otherwise fan out over its characters).
    symbols = check_symbols(s.symbols if symbols is None else symbols)
    models = check_models(models or s.models)
    run_id = run_id_for("retrain", day, symbols, models)
    attempt_id = attempt_id or task.request.id
    jobs.start_attempt(_engine(), s, "retrain", run_id, attempt_id, day, symbols, models)
    return task.replace(workflows.daily_retrain_canvas(symbols, day, models, run_id, attempt_id))


@app.task(name="brain_tasks.daily_retrain", bind=True)
def daily_retrain(self: Task, symbols: list[str] | None = None, as_of: str | None = None,
                  models: list[str] | None = None, attempt_id: str | None = None) -> Any:
    return _fan_out(self, symbols, as_of, models, attempt_id)


@app.task(name="brain_tasks.retrain_symbol", bind=True)
def retrain_symbol(self: Task, symbol: str, as_of: str | None = None, models: list[str] | None = None,
                   attempt_id: str | None = None) -> Any:
    """One symbol's whole chain, as a run of its own."""
    return _fan_out(self, [symbol], as_of, models, attempt_id)


@app.task(name="brain_tasks.summarize_run", bind=True, autoretry_for=TRANSIENT, retry_backoff=True,
          retry_jitter=True, max_retries=MAX_RETRIES)
def summarize_run(self: Task, results: Any, run_id: str, attempt_id: str | None = None) -> dict:
    return jobs.summarize_attempt(_engine(), results, run_id, attempt_id)


@app.task(name="brain_tasks.nightly_analysis", bind=True)
def nightly_analysis(self: Task, symbols: list[str] | None = None, as_of: str | None = None,
                     attempt_id: str | None = None) -> Any:
    from brain_tasks.brain import store

    s = get_settings()
    day = as_of_date(as_of)
    from brain_tasks.requests import check_symbols

    symbols = check_symbols(symbols if symbols is not None else (s.symbols or store.list_symbols(
        _engine(), s.exchange, s.timeframe)), allow_empty=True)
    run_id = run_id_for("nightly", day, symbols)
    attempt_id = attempt_id or self.request.id
    jobs.start_attempt(_engine(), s, "nightly", run_id, attempt_id, day, symbols, [])
    return self.replace(workflows.nightly_canvas(symbols, day, run_id, attempt_id))


@app.task(name="brain_tasks.analyse_symbol", base=FinalStep, bind=True, **_limits("analysis"))
@guarded("features")
def analyse_symbol(self: Task, symbol: str, as_of: str | None = None, run_id: str | None = None,
                   attempt_id: str | None = None) -> dict:
    return jobs.analyse_symbol(_engine(), get_settings(), symbol, as_of_date(as_of))


@app.task(name="brain_tasks.summarize_nightly", bind=True, autoretry_for=TRANSIENT, retry_backoff=True,
          retry_jitter=True, max_retries=MAX_RETRIES)
def summarize_nightly(self: Task, results: Any, run_id: str, as_of: str | None = None,
                      attempt_id: str | None = None) -> dict:
    return jobs.summarize_attempt(_engine(), results, run_id, attempt_id)


# --- runs ----------------------------------------------------------------------------------------

@app.task(name="brain_tasks.reconcile_runs", bind=True, ignore_result=True)
def reconcile_runs(self: Task) -> dict:
    """Beat, every `reconcile_interval`: re-drive symbols whose chain the broker lost and close attempts
    whose chord died (brain_tasks/reconcile.py).  One instance at a time; a second one skips."""
    from brain_tasks.brain.locks import try_claim
    from brain_tasks.reconcile import live_attempts, reconcile

    engine = _engine()
    with try_claim(engine, "reconcile_runs") as mine:
        if not mine:
            return {"skipped": "another reconcile_runs is running"}
        done = reconcile(engine, get_settings(), lambda: live_attempts(app), send=lambda sig: sig.apply_async())
    if done["redriven"] or done["failed"] or done["closed"]:
        log.warning("reconcile_runs: %s", done)
    return done


# --- news and social sentiment -------------------------------------------------------------------

@app.task(name="brain_tasks.collect_sentiment", bind=True, **_limits("collect"))
@guarded("sentiment", record=False)
def collect_sentiment(self: Task, feeds: list[str] | None = None) -> dict:
    """Collect the configured news / social feeds (or the named ones) into sentiment_scores."""
    from brain_tasks.collect_news import collect_configured

    summary = collect_configured(_engine(), get_settings(), feeds=feeds)
    return {"status": jobs.FAILED if summary["failed"] else jobs.OK, **summary}


# --- position sizing -----------------------------------------------------------------------------

@guarded("models")
def _sizer_step(self: Task, symbol: str, as_of: str | None = None, chain_state: Any = None) -> dict:
    from brain_tasks import sizer_jobs

    return sizer_jobs.train_sizer(_engine(), get_settings(), chain_state, symbol, as_of_date(as_of))


@app.task(name="brain_tasks.train_sizer", base=FinalStep, bind=True, **_limits("train"))
def train_sizer(self: Task, prev: Any, symbol: str, as_of: str | None = None, run_id: str | None = None,
                attempt_id: str | None = None) -> dict:
    """The chain's last link, and so its final step: train and judge the symbol's position sizer, then
    record the symbol's outcome in the attempt.  The sizer's own failure never fails the symbol: the
    chain's state is what is recorded, and the sizer's outcome (or failure, by the usual policy) rides
    along under "sizer".  An attempt is finished only when its sizers are, so a run that waits for it
    (or compares its rows) sees them."""
    call = {"attempt_id": attempt_id, "symbol": symbol}
    self.step_started(call, "train_sizer")
    outcome = _sizer_step(self, symbol, as_of, chain_state=prev)
    state = prev if isinstance(prev, dict) else {"symbol": symbol, "status": jobs.FAILED,
                                                 "error": f"unexpected chain state {type(prev).__name__}"}
    result = {**state, "sizer": outcome}
    self.step_finished(call, result)
    return result


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
