"""Thin Celery tasks: parse JSON arguments, call a step of `brain_tasks.service.steps` (which reads the
Brain and calls ml/ or market/), return JSON.

Every task's failure and progress policy lives in its base class (`brain_tasks.policy.BrainTask`, the
app's task class).  A chain step takes the `ChainState` the step before it returned and returns the
next one (`_chain_step`); the canvas's last step, `record_outcome`, writes the symbol's outcome.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from celery.signals import task_postrun, worker_process_init

from brain_tasks import workflows
from brain_tasks.app import app
from brain_tasks.brain.db import make_engine
from brain_tasks.intake import as_of_date, run_id_for
from brain_tasks.policy import MAX_RETRIES, TRANSIENT, BrainTask, log
from brain_tasks.service.chain import ChainState, ModelOutcome
from brain_tasks.settings import get_settings
from brain_tasks.vocabulary import Status


_IN_POOL_PROCESS = False  # set in each pool process of a worker


@worker_process_init.connect
def _load_ml_stack(**_: Any) -> None:
    """Pool processes load the ML stack at start-up, not in a task.  Only they: the worker's main
    process runs no task, and importing it there (1.5 s of CPU) delayed every pool start by as much.
    Not torch and stable-baselines3: the first sizer or sequence model a process trains imports them
    (`ml.sizing.fit_ppo`, `ml.deep`), once, as Python keeps a module once imported; a process whose
    symbols are all flat never pays for them (bench/fanout.py measures that import)."""
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


def _day(as_of: Any) -> dt.date | None:
    """The as-of day of a task's arguments for labelling its failure; None when it is itself the fault."""
    try:
        return as_of_date(as_of)
    except Exception:
        return None


StepWork = Callable[[Any, Any, ChainState], ChainState]
StepFailure = Callable[[ChainState, str, str], ChainState]


def _chain_step(task: BrainTask, work: StepWork, received: Any, symbol: str, as_of: Any, attempt_id: str | None,
                *, data_kind: str = "models", fail: StepFailure | None = None) -> dict:
    """One step of a symbol's chain: the `ChainState` it received (JSON, or a group's list of them; None
    for a step that starts the chain) in, `work(engine, settings, state)` under the task's policy, the
    next state out as JSON.  A failure becomes `fail(state, step, error)`: by default the chain's state
    fails at this step."""
    state = ChainState.start(symbol, _day(as_of) or dt.date.min)  # what a failure reports until parsed

    def run() -> dict:
        nonlocal state
        if received is None:
            state = ChainState.start(symbol, as_of_date(as_of))
        else:
            state = received if isinstance(received, ChainState) else ChainState.from_wire(received)
        return work(_engine(), get_settings(), state).to_json()

    failure = fail or (lambda st, step, error: st.failed(step, error))
    return task.guard(run, symbol=symbol, attempt_id=attempt_id, finding=(data_kind, _day(as_of)),
                      fail=lambda error: failure(state, task.step_name, error).to_json())


# --- plumbing ------------------------------------------------------------------------------------

@app.task(name="brain_tasks.ping")
def ping(value: Any = None) -> dict:
    """A trivial task: proves a worker is up and the JSON round trip works."""
    return {"pong": value, "worker": app.conf.broker_url.split("://", 1)[0]}


# --- collection ----------------------------------------------------------------------------------

def _collect(task: BrainTask, kind: str, symbol: str, attempt_id: str | None = None) -> dict:
    """Collection records its own data-quality findings; a failure is a status for the summary."""
    from brain_tasks.service.steps.collect import collect, source_for

    def run() -> dict:
        s = get_settings()
        timeframe = s.timeframe if kind in ("candles", "open_interest") else None
        summary = collect(_engine(), source_for(s), kind, symbol, timeframe=timeframe)
        return {"symbol": symbol, "status": Status.OK, "kind": kind, **summary}

    return task.guard(run, symbol=symbol, attempt_id=attempt_id, fail=lambda error: {
        "symbol": symbol, "status": Status.FAILED, "step": task.step_name, "error": error})


@app.task(name="brain_tasks.collect_candles", bind=True, **_limits("collect"))
def collect_candles(self: BrainTask, symbol: str, run_id: str | None = None, attempt_id: str | None = None) -> dict:
    return _collect(self, "candles", symbol, attempt_id)


@app.task(name="brain_tasks.collect_funding", bind=True, **_limits("collect"))
def collect_funding(self: BrainTask, symbol: str) -> dict:
    return _collect(self, "funding", symbol)


@app.task(name="brain_tasks.collect_open_interest", bind=True, **_limits("collect"))
def collect_open_interest(self: BrainTask, symbol: str) -> dict:
    return _collect(self, "open_interest", symbol)


@app.task(name="brain_tasks.collect_liquidations", bind=True, **_limits("collect"))
def collect_liquidations(self: BrainTask, symbol: str) -> dict:
    return _collect(self, "liquidations", symbol)


@app.task(name="brain_tasks.collect_universe", bind=True)
def collect_universe(self: BrainTask, kind: str = "candles", symbols: list[str] | None = None) -> Any:
    symbols = symbols or list(get_settings().symbols)
    return self.replace(workflows.collect_canvas(kind, symbols))


@app.task(name="brain_tasks.data_quality_check", bind=True, **_limits("collect"))
def data_quality_check(self: BrainTask, symbols: list[str] | None = None) -> dict:
    from brain_tasks.service.steps.collect import check_stored

    s = get_settings()
    return check_stored(_engine(), s.exchange, list(symbols or s.symbols), s.timeframe)


# --- the per-symbol chain ------------------------------------------------------------------------

@app.task(name="brain_tasks.train_symbol", bind=True, **_limits("train"))
def train_symbol(self: BrainTask, symbol: str, model_type: str, as_of: str | None = None,
                 run_id: str | None = None, attempt_id: str | None = None) -> dict:
    """One model type's training: the chain's state starts here, with this model's outcome in it."""
    from brain_tasks.service.steps import train

    def work(engine: Any, settings: Any, state: ChainState) -> ChainState:
        return state.with_model(train.train_symbol(engine, settings, symbol, model_type, state.as_of))

    def failed(state: ChainState, step: str, error: str) -> ChainState:
        return state.with_model(ModelOutcome(model_type=model_type, status=Status.FAILED, step=step, error=error))

    return _chain_step(self, work, None, symbol, as_of, attempt_id, data_kind="candles", fail=failed)


@app.task(name="brain_tasks.compare_models", bind=True, **_limits("analysis"))
def compare_models(self: BrainTask, state: Any, symbol: str, as_of: str | None = None,
                   run_id: str | None = None, attempt_id: str | None = None) -> dict:
    from brain_tasks.service.steps.compare import compare_models as work

    return _chain_step(self, work, state, symbol, as_of, attempt_id)


@app.task(name="brain_tasks.compute_importance", bind=True, **_limits("train"))
def compute_importance(self: BrainTask, state: Any, symbol: str, as_of: str | None = None,
                       run_id: str | None = None, attempt_id: str | None = None) -> dict:
    from brain_tasks.service.steps.explain import compute_importance as work

    return _chain_step(self, work, state, symbol, as_of, attempt_id)


@app.task(name="brain_tasks.check_rollback", bind=True, **_limits("analysis"))
def check_rollback(self: BrainTask, state: Any, symbol: str, as_of: str | None = None,
                   run_id: str | None = None, attempt_id: str | None = None) -> dict:
    from brain_tasks.service.steps.promote import check_rollback as work

    return _chain_step(self, work, state, symbol, as_of, attempt_id)


@app.task(name="brain_tasks.select_model", bind=True, **_limits("analysis"))
def select_model(self: BrainTask, state: Any, symbol: str, as_of: str | None = None,
                 run_id: str | None = None, attempt_id: str | None = None) -> dict:
    from brain_tasks.service.steps.choose import select_model as work

    return _chain_step(self, work, state, symbol, as_of, attempt_id)


@app.task(name="brain_tasks.train_sizer", bind=True, **_limits("train"))
def train_sizer(self: BrainTask, state: Any, symbol: str, as_of: str | None = None, run_id: str | None = None,
                attempt_id: str | None = None) -> dict:
    """Train and judge the symbol's position sizer.  Its own failure never fails the symbol: it is
    recorded under the state's `sizer`, and the chain's outcome stands."""
    from brain_tasks.service.steps.sizer import MODEL_TYPE, train_sizer as work

    def failed(state: ChainState, step: str, error: str) -> ChainState:
        return state.update(sizer=ModelOutcome(model_type=MODEL_TYPE, status=Status.FAILED, step=step, error=error))

    return _chain_step(self, work, state, symbol, as_of, attempt_id, fail=failed)


@app.task(name="brain_tasks.record_outcome", bind=True)
def record_outcome(self: BrainTask, state: Any, symbol: str, run_id: str | None = None,
                   attempt_id: str | None = None) -> dict:
    """The last step of every symbol's canvas: the chain's state becomes the symbol's state in the
    attempt.  A state that cannot be read fails the symbol with the reason; a database that stays down
    leaves the row to the fan-out's summary, which writes the outcome the chord delivers."""
    from brain_tasks.service.steps.outcome import record_outcome as record

    try:
        final = ChainState.from_wire(state)
    except (ValueError, TypeError, KeyError) as exc:
        final = ChainState.start(symbol, dt.date.min).failed(self.step_name, f"unexpected chain state: {exc}")

    def run() -> dict:
        if attempt_id:
            record(_engine(), attempt_id, final)
        return final.to_json()

    return self.guard(run, symbol=symbol, fail=lambda error: final.to_json())


# --- fan-outs ------------------------------------------------------------------------------------
# A fan-out's attempt id is the id of the task that was enqueued (given by BrainClient, or this task's
# own id when beat or Engine code sent it): a redelivered message is the same attempt, not a new one.

def _fan_out(task: BrainTask, symbols: list[str] | None, as_of: str | None, models: list[str] | None,
             attempt_id: str | None) -> Any:
    """Replace `task` by the fan-out canvas; its result becomes the attempt's summary."""
    from brain_tasks.intake import check_models, check_symbols
    from brain_tasks.service.steps.outcome import start_attempt

    s = get_settings()
    day = as_of_date(as_of)
    # A message sent by name bypasses the client: refuse a bad request here too (a string of symbols
    # would otherwise fan out over its characters).
    symbols = check_symbols(s.symbols if symbols is None else symbols)
    models = check_models(models or s.models)
    run_id = run_id_for("retrain", day, symbols, models)
    attempt_id = attempt_id or task.request.id
    start_attempt(_engine(), s, "retrain", run_id, attempt_id, day, symbols, models)
    closed = _closed_attempt(run_id, attempt_id)
    if closed is not None:
        return closed
    return task.replace(workflows.daily_retrain_canvas(symbols, day, models, run_id, attempt_id))


def _closed_attempt(run_id: str, attempt_id: str) -> dict[str, Any] | None:
    """The attempt's status when it is closed already (cancelled because its sender gave up on it, or
    finished): a message that outlived its attempt, e.g. one an embedded client left behind, must
    not run the work later for a command that did not ask for it."""
    from brain_tasks.brain import runs

    if runs.attempt_state(_engine(), attempt_id) in runs.OPEN:
        return None
    log.warning("attempt %s of run %s is closed already: its fan-out is not run", attempt_id, run_id)
    return runs.run_status(_engine(), run_id, attempt_id)


@app.task(name="brain_tasks.daily_retrain", bind=True)
def daily_retrain(self: BrainTask, symbols: list[str] | None = None, as_of: str | None = None,
                  models: list[str] | None = None, attempt_id: str | None = None) -> Any:
    return _fan_out(self, symbols, as_of, models, attempt_id)


@app.task(name="brain_tasks.retrain_symbol", bind=True)
def retrain_symbol(self: BrainTask, symbol: str, as_of: str | None = None, models: list[str] | None = None,
                   attempt_id: str | None = None) -> Any:
    """One symbol's whole chain, as a run of its own."""
    return _fan_out(self, [symbol], as_of, models, attempt_id)


@app.task(name="brain_tasks.summarize_run", bind=True, autoretry_for=TRANSIENT, retry_backoff=True,
          retry_jitter=True, max_retries=MAX_RETRIES)
def summarize_run(self: BrainTask, results: Any, run_id: str, attempt_id: str | None = None) -> dict:
    from brain_tasks.service.steps.outcome import summarize_attempt

    return summarize_attempt(_engine(), results, run_id, attempt_id)


@app.task(name="brain_tasks.nightly_analysis", bind=True)
def nightly_analysis(self: BrainTask, symbols: list[str] | None = None, as_of: str | None = None,
                     attempt_id: str | None = None) -> Any:
    from brain_tasks.brain import store
    from brain_tasks.intake import check_symbols
    from brain_tasks.service.steps.outcome import start_attempt

    s = get_settings()
    day = as_of_date(as_of)
    symbols = check_symbols(symbols if symbols is not None else (s.symbols or store.list_symbols(
        _engine(), s.exchange, s.timeframe)), allow_empty=True)
    run_id = run_id_for("nightly", day, symbols)
    attempt_id = attempt_id or self.request.id
    start_attempt(_engine(), s, "nightly", run_id, attempt_id, day, symbols, [])
    closed = _closed_attempt(run_id, attempt_id)
    if closed is not None:
        return closed
    return self.replace(workflows.nightly_canvas(symbols, day, run_id, attempt_id))


@app.task(name="brain_tasks.analyse_symbol", bind=True, **_limits("analysis"))
def analyse_symbol(self: BrainTask, symbol: str, as_of: str | None = None, run_id: str | None = None,
                   attempt_id: str | None = None) -> dict:
    """The nightly chain's working step: the chain's state starts (and mostly ends) here."""
    from brain_tasks.service.steps.analyse import analyse_symbol as analyse

    def work(engine: Any, settings: Any, state: ChainState) -> ChainState:
        return analyse(engine, settings, state.symbol, state.as_of)

    return _chain_step(self, work, None, symbol, as_of, attempt_id, data_kind="features")


@app.task(name="brain_tasks.summarize_nightly", bind=True, autoretry_for=TRANSIENT, retry_backoff=True,
          retry_jitter=True, max_retries=MAX_RETRIES)
def summarize_nightly(self: BrainTask, results: Any, run_id: str, as_of: str | None = None,
                      attempt_id: str | None = None) -> dict:
    from brain_tasks.service.steps.outcome import summarize_attempt

    return summarize_attempt(_engine(), results, run_id, attempt_id)


# --- replays ------------------------------------------------------------------------------------

@app.task(name="brain_tasks.replay", bind=True)
def replay(self: BrainTask, symbols: list[str], models: list[str] | None = None, start: str | None = None,
           end: str | None = None, every: str = "1d", grid: Any = None, attempt_id: str | None = None) -> Any:
    """Replay the Brain's decisions over history (service/replay_run.py): checks the request as the client
    does (a message sent by name bypasses it), records the replay and the attempt, then replaces itself
    by the fan-out: trainings on the workers, one decision walk per symbol, the pooling step."""
    from brain_tasks.service import replay_run
    from brain_tasks.service.replay_plan import plan_replay

    engine, s = _engine(), get_settings()
    plan = plan_replay(engine, s, symbols, models, start, end, every, grid)
    attempt_id = attempt_id or self.request.id
    replay_run.start(engine, s, plan, attempt_id)
    return self.replace(workflows.replay_canvas(plan.symbols, plan.replay_id, [st.as_of for st in plan.steps],
                                                plan.models, attempt_id))


@app.task(name="brain_tasks.replay_train", bind=True, **_limits("train"))
def replay_train(self: BrainTask, earlier: Any, symbol: str, model_type: str, as_of: str, run_id: str | None = None,
                 attempt_id: str | None = None) -> list[dict]:
    """One (symbol, step, model type) training of a replay, in its model type's chain
    (`workflows.replay_symbol_canvas`): `earlier` holds the outcomes of the trainings before it, and it
    returns them with its own appended.  A failure is a status, never a raise (the walk goes on with
    the versions it has)."""
    from brain_tasks.service.replay_run import train_for_replay

    before = [o for o in earlier if isinstance(o, dict)] if isinstance(earlier, list) else []

    def run() -> list[dict]:
        return [*before, train_for_replay(_engine(), get_settings(), symbol, model_type, as_of_date(as_of))]

    return self.guard(run, symbol=symbol, attempt_id=attempt_id, finding=("models", _day(as_of)), fail=lambda error: [
        *before, {"model_type": model_type, "as_of": str(as_of), "status": Status.FAILED, "step": self.step_name,
                  "error": error}])


@app.task(name="brain_tasks.replay_walk", bind=True, **_limits("train"))
def replay_walk(self: BrainTask, trained: Any, symbol: str, replay_id: str, run_id: str | None = None,
                attempt_id: str | None = None) -> dict:
    """The symbol's decision walk over the replay's steps, every policy traded; its chain state out."""
    from brain_tasks.service.replay_run import plan_of
    from brain_tasks.service.replay_walk import walk_symbol

    engine = _engine()
    plan = plan_of(engine, replay_id)
    end = plan.end if plan is not None else dt.date.min

    def run() -> dict:
        if plan is None:
            return ChainState.start(symbol, end).failed(self.step_name, f"no replay {replay_id!r}").to_json()
        return walk_symbol(engine, get_settings(), plan, symbol, trained).to_json()

    return self.guard(run, symbol=symbol, attempt_id=attempt_id, finding=("models", end if plan else None),
                      fail=lambda error: ChainState.start(symbol, end).failed(self.step_name, error).to_json())


@app.task(name="brain_tasks.replay_pool", bind=True, autoretry_for=TRANSIENT, retry_backoff=True,
          retry_jitter=True, max_retries=MAX_RETRIES, **_limits("analysis"))
def replay_pool(self: BrainTask, results: Any = None, replay_id: str = "", attempt_id: str | None = None) -> dict:
    """The chord's body: pool the symbols, write the replay's summary, close the attempt."""
    from brain_tasks.service import replay_run

    engine = _engine()
    plan = replay_run.plan_of(engine, replay_id)
    if plan is None:
        return {"replay_id": replay_id, "state": Status.UNKNOWN}
    return replay_run.pool(engine, get_settings(), plan, attempt_id, results)


# --- runs ----------------------------------------------------------------------------------------

@app.task(name="brain_tasks.reconcile_runs", bind=True, ignore_result=True)
def reconcile_runs(self: BrainTask) -> dict:
    """Beat, every `reconcile_interval`: re-drive symbols whose chain the broker lost and close attempts
    whose chord died (brain_tasks/service/reconcile.py).  One instance at a time; a second one skips."""
    from brain_tasks.brain.locks import try_claim
    from brain_tasks.service.reconcile import live_attempts, reconcile

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
def collect_sentiment(self: BrainTask, feeds: list[str] | None = None) -> dict:
    """Collect the configured news / social feeds (or the named ones) into sentiment_scores."""
    from brain_tasks.service.feeds import collect_configured

    def run() -> dict:
        summary = collect_configured(_engine(), get_settings(), feeds=feeds)
        return {"status": Status.FAILED if summary["failed"] else Status.OK, **summary}

    return self.guard(run, symbol="*", fail=lambda error: {
        "symbol": "*", "status": Status.FAILED, "step": self.step_name, "error": error})


# --- serving -------------------------------------------------------------------------------------

@app.task(name="brain_tasks.publish_signals", bind=True, **_limits("analysis"))
def publish_signals(self: BrainTask, symbols: list[str] | None = None) -> dict:
    """Compute and record every symbol's decision for its latest closed bar (idempotent per bar)."""
    from brain_tasks.service.steps.publish import publish_signals as publish

    return self.guard(lambda: publish(_engine(), get_settings(), symbols), symbol="*",
                      finding=("signals", None),
                      fail=lambda error: {"symbol": "*", "status": Status.FAILED, "step": self.step_name,
                                          "error": error})


@app.task(name="brain_tasks.bar_close", bind=True)
def bar_close(self: BrainTask, symbols: list[str] | None = None) -> Any:
    """At a bar close: collect the bar that just closed for the universe, then publish the signals."""
    from brain_tasks.service.steps.publish import universe

    symbols = universe(_engine(), get_settings(), symbols)
    if not symbols:
        return {"status": Status.SKIPPED, "reason": "no symbols to serve"}
    return self.replace(workflows.bar_close_canvas(symbols))
