"""What Engine code imports: enqueue work by task name and read the active model.

Importing this module pulls in Celery and SQLAlchemy, not LightGBM or XGBoost: enqueueing uses
task names only, and a model library is loaded only when `active_model` is asked for the model.

Every error this module raises on purpose is a `BrainError`: a refused request (`RequestError`:
unknown model type, malformed or unknown symbol, bad date) before anything is enqueued, or a
`ServiceError` naming the database or broker that cannot be used (password redacted).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from brain_tasks.brain import registry
from brain_tasks.brain.db import check_schema, make_engine, redact_url
from brain_tasks.errors import (BrainError, BrokerUnavailableError, DatabaseUnavailableError, IntegrityError,
                                NoDataError, NoModelError, SchemaMissingError, ServiceError, StaleDataError)
from brain_tasks.intake import (BadDateError, BadSymbolError, RequestError, UnknownModelError, check_as_of,
                                check_models, check_symbols, run_id_for)
from brain_tasks.service.decision import Signal
from brain_tasks.settings import Settings, get_settings
from brain_tasks.vocabulary import OPEN, Status

__all__ = ["BrainClient", "RunHandle", "ActiveModel", "BrainError", "RequestError", "UnknownModelError",
           "BadSymbolError", "BadDateError", "ServiceError", "SchemaMissingError", "DatabaseUnavailableError",
           "BrokerUnavailableError", "IntegrityError", "NoModelError", "NoDataError", "StaleDataError", "Signal"]


PROBE_TIMEOUT = 3.0  # seconds: connecting to the broker / result store before an enqueue


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")


class _EmbeddedWork:
    """Embedded mode for Engine code: the CLI's own worker process (`service.embedded.embedded_worker`),
    started at this client's first enqueue and kept until `close` (or garbage collection, or
    interpreter exit).  On the way out the attempts it was given and that did not finish are cancelled
    and their queued messages deleted, so a later, unrelated command's worker never runs them."""

    def __init__(self, settings: Settings) -> None:
        import contextlib

        self.settings = settings
        self.attempts: list[str] = []
        self.stack = contextlib.ExitStack()
        self.worker: Any = None
        self.finalizer = weakref.finalize(self, _EmbeddedWork._shutdown, self.stack, settings, self.attempts,
                                          "the Engine process exited before this symbol finished")

    def start(self, attempt_id: str) -> None:
        from brain_tasks.service.embedded import CRASH_WARNING, embedded_worker

        self.attempts.append(attempt_id)
        if self.worker is None:
            logging.getLogger(__name__).warning(CRASH_WARNING)
            self.worker = self.stack.enter_context(embedded_worker(self.settings))

    def check(self) -> None:
        from brain_tasks.service.embedded import WorkerDied

        if self.worker is None:
            return
        try:
            self.worker.check()
        except (WorkerDied, TimeoutError) as exc:
            self.close(f"the embedded worker stopped: {exc}")
            raise ServiceError(f"{exc}; unfinished symbols are cancelled") from None

    def close(self, reason: str) -> None:
        self.finalizer.detach()
        _EmbeddedWork._shutdown(self.stack, self.settings, self.attempts, reason)
        self.worker = None
        self.finalizer = weakref.finalize(self, _EmbeddedWork._shutdown, self.stack, self.settings,
                                          self.attempts, "the Engine process exited before this symbol finished")

    @staticmethod
    def _shutdown(stack: Any, settings: Settings, attempts: list[str], reason: str) -> None:
        from brain_tasks.service.embedded import finish_attempts

        stack.close()  # stops the worker: the tasks at hand finish, no new one starts
        if attempts:
            finish_attempts(settings, attempts, reason)
            attempts.clear()


@dataclass(frozen=True)
class RunHandle:
    """One enqueue of a run: the run's deterministic id, the enqueued task and the attempt it started
    (the attempt id is the task id)."""

    run_id: str
    task_id: str
    attempt_id: str


@dataclass(frozen=True)
class ActiveModel:
    symbol: str
    model_type: str
    version: int
    regime: str | None
    manifest: dict[str, Any]
    model: Any  # has .predict(X); X columns = manifest["feature_names"]


class BrainClient:
    """Enqueue retrains and nightly analyses by name; read runs, models and the current choice."""

    def __init__(self, settings: Settings | None = None, app: Any = None, *,
                 run_embedded: bool | None = None) -> None:
        """`run_embedded`: in embedded mode (no BRAIN_BROKER_URL), run the enqueued work on a worker
        process of this client's own, as the CLI does.  Default: when the app is brain_tasks' own (an app
        passed in is the caller's to serve).  False when the caller runs the embedded worker itself."""
        self.settings = settings or get_settings()
        own_app = app is None
        if app is None:
            from brain_tasks.app import app as default_app

            app = default_app
        self.app = app
        self.engine = make_engine(self.settings.database_url)
        self._embedded = _EmbeddedWork(self.settings) if self.settings.embedded and (
            own_app if run_embedded is None else run_embedded) else None

    def close(self) -> None:
        """Embedded mode: stop this client's worker process; the symbols of its attempts that did not
        finish are cancelled and their queued messages deleted (nothing is replayed by a later command).
        Also run when the client is garbage-collected and at interpreter exit."""
        if self._embedded is not None:
            self._embedded.close("the BrainClient was closed before this symbol finished")

    def __enter__(self) -> "BrainClient":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- enqueue ---------------------------------------------------------------------------------
    def retrain(self, symbols: Sequence[str], models: Sequence[str] | None = None,
                as_of: str | dt.date | None = None) -> RunHandle:
        """Enqueue the daily retrain of `symbols` as a new attempt of its run (pending rows first); a bad
        request raises a `RequestError` and enqueues nothing."""
        day = check_as_of(as_of)
        symbols = check_symbols(symbols)
        models = check_models(models or self.settings.models)
        self._check_known(symbols)
        return self._enqueue("retrain", "brain_tasks.daily_retrain", run_id_for("retrain", day, symbols, models),
                             day, symbols, models, {"models": models})

    def nightly(self, as_of: str | dt.date | None = None, symbols: Sequence[str] | None = None) -> RunHandle:
        """Enqueue the nightly analysis as a new attempt of its run."""
        day = check_as_of(as_of)
        check_schema(self.settings.database_url)
        symbols = check_symbols(symbols or self.settings.symbols or self._stored_symbols())
        return self._enqueue("nightly", "brain_tasks.nightly_analysis", run_id_for("nightly", day, symbols),
                             day, symbols, [], {})

    def replay(self, symbols: Sequence[str], models: Sequence[str] | None, start: str | dt.date,
               end: str | dt.date, every: str = "1d", grid: Any = None) -> RunHandle:
        """Enqueue a replay of the Brain's decisions over the days `start`..`end`, a step every `every`
        (whole days), with the policies of docs/replay.md and the `grid` of brain settings
        (`{"dsr_level": [0.9, 0.95]}` or `["dsr_level=0.9,0.95"]`).  The run id is the replay id,
        deterministic from the request and the training config.  A bad request (see
        `service.replay_plan.plan_replay`) raises a `RequestError` and writes nothing.  Unlike `retrain`,
        this imports the ML configuration: the replay's id includes the training config's hash."""
        from brain_tasks.service import replay_run
        from brain_tasks.service.replay_plan import plan_replay

        check_schema(self.settings.database_url)
        plan = plan_replay(self.engine, self.settings, symbols, models, start, end, every, grid)
        attempt_id = self._ready_to_send()
        # The replay's row and the attempt's rows exist before its message does: `wait` sees it at once.
        replay_run.start(self.engine, self.settings, plan, attempt_id)
        try:
            result = self._send("brain_tasks.replay", attempt_id, {
                "symbols": plan.symbols, "models": plan.models, "start": plan.start.isoformat(),
                "end": plan.end.isoformat(), "every": plan.every, "grid": plan.grid, "attempt_id": attempt_id})
        except BrokerUnavailableError:
            replay_run.abandon(self.engine, plan.replay_id)
            raise
        return RunHandle(plan.replay_id, result.id, attempt_id)

    def _enqueue(self, kind: str, task: str, run_id: str, day: dt.date, symbols: list[str], models: list[str],
                 kwargs: dict[str, Any]) -> RunHandle:
        from brain_tasks.service.steps.outcome import start_attempt

        attempt_id = self._ready_to_send()
        # The attempt's rows exist before its message does: `wait` and `status` see it at once, and the
        # worker (which may take the message before send_task returns) finds them.  A send that still
        # fails cancels them with the reason (`_send`), so no attempt is left pending.
        start_attempt(self.engine, self.settings, kind, run_id, attempt_id, day, symbols, models)
        result = self._send(task, attempt_id, {"symbols": symbols, "as_of": day.isoformat(),
                                               "attempt_id": attempt_id, **kwargs})
        return RunHandle(run_id, result.id, attempt_id)

    def _ready_to_send(self) -> str:
        """A new attempt id, once something will take its message: the embedded worker started (it
        imports the ML stack while the message waits), or the broker and result store reached."""
        attempt_id = str(uuid.uuid4())
        if self._embedded is not None:
            self._embedded.start(attempt_id)
        elif not self.settings.embedded:
            self._check_broker()  # a dead broker or result store: named within seconds, nothing written
        return attempt_id

    def _check_known(self, symbols: list[str]) -> None:
        """A file source cannot collect a symbol it has no file for: refuse one that is neither stored nor
        on file up front (an exchange or the synthetic market collects new symbols in the chain)."""
        check_schema(self.settings.database_url)
        if self.settings.exchange != "freqtrade":
            return  # an exchange or the synthetic market collects new symbols in the chain's first step
        stored = set(self._stored_symbols())
        unknown = [s for s in symbols if s not in stored]
        if unknown:
            # The chain's first step collects from the configured files: a symbol there is not unknown.
            from brain_tasks.market.sources import FreqtradeSource

            folder = self.settings.sample_dir
            on_file = set(FreqtradeSource(folder).symbols(self.settings.timeframe)) if folder.is_dir() else set()
            unknown = [s for s in unknown if s not in on_file]
        if unknown:
            raise BadSymbolError(f"unknown symbol {', '.join(unknown)}: no {self.settings.timeframe} candles stored "
                                 f"for it on {self.settings.exchange!r} nor a file under {self.settings.sample_dir}")

    def _check_broker(self) -> None:
        """Reach the broker and a Redis result store before anything is written or sent.

        Sending subscribes the client to the task's result in a Redis result store first, and that
        subscription retries per the workers' settings (result_backend_always_retry: about 20 s, then a
        RuntimeError), which keep workers alive through a real outage.  A client must instead say at
        once that nothing was enqueued, so it checks both here with short timeouts and no retries of
        its own beyond two quick ones."""
        if not hasattr(self.app, "connection_for_write"):
            return  # not a Celery app (a stand-in that records what is sent): no connection to check
        broker = redact_url(str(self.app.conf.broker_url))
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.5, interval_max=1.0,
                                       timeout=PROBE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure to connect means nothing can be sent
            raise BrokerUnavailableError(f"cannot reach the broker {broker}: {_first_line(exc)}; "
                                         "nothing was enqueued") from None
        backend = self.app.backend
        client_for = getattr(backend, "_create_client", None)  # Celery's Redis / Sentinel result backends
        if client_for is None or not hasattr(backend, "connparams"):
            return
        where = redact_url(str(self.app.conf.result_backend))
        try:
            probe = client_for(**{**backend.connparams, "socket_connect_timeout": PROBE_TIMEOUT,
                                  "socket_timeout": PROBE_TIMEOUT})
            try:
                probe.ping()
            finally:
                probe.connection_pool.disconnect()
        except Exception as exc:  # noqa: BLE001 - as above, for the result store
            raise BrokerUnavailableError(f"cannot reach the result store {where}: {_first_line(exc)}; "
                                         "nothing was enqueued") from None

    def _send(self, name: str, attempt_id: str, kwargs: dict[str, Any]) -> Any:
        """send_task with a short connection retry; should the broker or result store go away between the
        check and the send, the attempt's pending rows are cancelled with the reason (nothing will run
        them) and BrokerUnavailableError names it."""
        from kombu.exceptions import OperationalError

        from brain_tasks.brain import runs

        backend_errors = tuple(getattr(getattr(self.app, "backend", None), "connection_errors", ()) or ())
        try:
            return self.app.send_task(name, task_id=attempt_id, kwargs=kwargs, retry=True, retry_policy={
                "max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0})
        except (OperationalError, *backend_errors) as exc:
            broker = redact_url(str(self.app.conf.broker_url))
            runs.cancel_attempt(self.engine, attempt_id, f"the broker {broker} could not be reached")
            raise BrokerUnavailableError(f"cannot reach the broker {broker}: {_first_line(exc)}; "
                                         "nothing was enqueued") from None

    def _stored_symbols(self) -> list[str]:
        from brain_tasks.brain import store

        return store.list_symbols(self.engine, self.settings.exchange, self.settings.timeframe)

    # --- read ------------------------------------------------------------------------------------
    def run_status(self, run_id: str, attempt_id: str | None = None) -> dict[str, Any]:
        """One attempt of a run (default: its latest): state, per-state counts and per-symbol states."""
        from brain_tasks.brain import runs

        return runs.run_status(self.engine, run_id, attempt_id)

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent runs with their attempts, newest first."""
        from brain_tasks.brain import runs

        return runs.list_runs(self.engine, limit)

    def wait(self, handle: RunHandle | str, timeout: float = 3600.0, poll: float = 1.0,
             on_poll: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Block until the attempt is closed (or raise TimeoutError); `on_poll` sees every status read
        on the way (the CLI's progress bar and liveness check) and may raise to stop waiting.

        `handle` is what `retrain`/`nightly` returned, or a run id: then the run's latest attempt at
        the time of the call is followed.  Only that attempt's rows are read, so a re-run's wait can
        never return an earlier attempt's outcome.
        """
        from brain_tasks.brain import runs

        if isinstance(handle, RunHandle):
            run_id, attempt_id = handle.run_id, handle.attempt_id
        else:
            run_id, attempt_id = handle, runs.latest_attempt(self.engine, handle)
            if attempt_id is None:
                raise LookupError(f"run {run_id} has no attempt")
        import sqlalchemy.exc

        deadline = time.monotonic() + timeout
        while True:
            try:
                status = runs.run_status(self.engine, run_id, attempt_id)
            except sqlalchemy.exc.OperationalError:
                # The database is failing over (or restarting): the run goes on, so does the wait; the
                # pool was discarded and the next read connects to whichever host takes writes.
                if time.monotonic() > deadline:
                    raise
                time.sleep(poll)
                continue
            if self._embedded is not None and status["state"] in OPEN:
                self._embedded.check()  # its worker died or never came up: say so, do not wait out `timeout`
            if on_poll is not None:
                on_poll(status)
            if status["state"] not in (*OPEN, Status.UNKNOWN):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} attempt {attempt_id} not finished after {timeout:.0f} s: "
                                   f"{status['counts']}")
            time.sleep(poll)

    def active_model(self, symbol: str, regime: str | None = None) -> ActiveModel:
        """The model to trade: the one chosen for `regime` when that choice is a tradeable model, else
        the champion (sha256 checked).  NoModelError when nothing was promoted yet."""
        from brain_tasks.ml.models import load_model

        chosen = registry.regime_choice(self.engine, symbol).get(regime or "", {})
        if chosen.get("tradeable") and chosen.get("version") is not None:
            manifest = registry.manifest(self.engine, symbol, chosen["model_type"], int(chosen["version"]))
        else:
            manifest = registry.champion(self.engine, symbol)
        if manifest is None:
            raise NoModelError(f"no champion model for {symbol!r}")
        info = {c.name: getattr(manifest, c.name) for c in manifest.__table__.columns}
        fmt, data = registry.load_artifact(self.engine, manifest.artifact_sha256)
        return ActiveModel(symbol, manifest.model_type, manifest.version, regime, info, load_model(fmt, data))

    def current_choice(self, symbol: str) -> dict[str, Any]:
        """The current volatility regime (from the latest stored candles), the model chosen for it, the
        confidence of that choice and whether to trade at all (`trade`: False with the reason when no
        model beat doing nothing there)."""
        import pandas as pd

        from brain_tasks.brain import store
        from brain_tasks.timekeeping import timeframe_seconds
        from brain_tasks.ml.regimes import volatility_regimes

        s = self.settings
        last = store.last_timestamp(self.engine, "candles", exchange=s.exchange, symbol=symbol,
                                    timeframe=s.timeframe)
        if last is None:
            raise NoModelError(f"no candles stored for {symbol!r}")
        champion = registry.champion(self.engine, symbol)
        if champion is None:
            raise NoModelError(f"no champion model for {symbol!r}")
        # The regime is classified exactly as the models' training classified it.
        window, lookback = int(champion.config["regime_window"]), int(champion.config["regime_lookback"])
        bar = pd.Timedelta(seconds=timeframe_seconds(s.timeframe))
        candles = store.read_candles(self.engine, s.exchange, symbol, s.timeframe,
                                     start=last - (window + lookback + 1) * bar)
        regimes = volatility_regimes(candles, window=window, lookback=lookback).dropna()
        regime = str(regimes.iloc[-1]) if len(regimes) else "normal"
        chosen = registry.regime_choice(self.engine, symbol).get(regime)
        if chosen is None:
            from brain_tasks.vocabulary import LOSES_TO_FLAT

            # The champion trades as the fallback unless its own out-of-sample result is worse than flat.
            losing = registry.loses_to_flat(self.engine, champion)
            out = {"symbol": symbol, "regime": regime, "as_of_bar": last.isoformat(),
                   "model_type": champion.model_type, "version": champion.version, "confidence": None,
                   "trade": not losing, "reason": "champion (no per-regime choice for this regime)"
                   + (f": {LOSES_TO_FLAT}" if losing else "")}
        else:
            out = {"symbol": symbol, "regime": regime, "as_of_bar": last.isoformat(),
                   "model_type": chosen["model_type"], "version": chosen["version"],
                   "confidence": chosen["confidence"], "trade": bool(chosen["tradeable"]), "reason": chosen["reason"]}
        # Stale by predict's own rule (BRAIN_SIGNAL_MAX_AGE after the bar's close): then nothing trades.
        from brain_tasks.service.serving import signal_max_age
        from brain_tasks.timekeeping import now

        age = (now() - last).total_seconds() - timeframe_seconds(s.timeframe)
        stale = age > signal_max_age(s)
        out.update(stale=stale, data_age_seconds=age)
        if stale:
            out.update(trade=False, reason=f"stale data: the latest bar closed {age:.0f} s ago (more than "
                                           f"{signal_max_age(s):.0f} s, BRAIN_SIGNAL_MAX_AGE); predict would "
                                           f"refuse it: {out['reason']}")
        return out

    # --- serve -----------------------------------------------------------------------------------
    def predict(self, symbol: str, at: str | dt.datetime | None = None) -> Signal:
        """The decision for the latest closed bar (or the last stored bar at or before `at`) from stored
        data.  A live decision is recorded in the signals table; one on a past bar (`at` before the latest
        bar, or any bar while the data is stale) is returned and not recorded, so `latest_signal` only
        ever returns what was served.  Raises NoDataError, StaleDataError (latest bar older than
        BRAIN_SIGNAL_MAX_AGE; only when `at` is None; its message says how to pass `at`) or
        NoModelError."""
        from brain_tasks.service import serving

        return serving.predict(self.engine, self.settings, symbol, at)

    def predict_many(self, symbols: Sequence[str]) -> dict[str, Signal | BrainError]:
        """`predict` for each symbol; a symbol that cannot be served maps to its error, so one bad
        symbol never hides the others' signals."""
        from brain_tasks.service import serving

        return serving.predict_many(self.engine, self.settings, symbols)

    def latest_signal(self, symbol: str) -> Signal | None:
        """The newest recorded signal of `symbol` (e.g. published by the bar-close task), or None."""
        from brain_tasks.service import serving

        return serving.latest_signal(self.engine, symbol)
