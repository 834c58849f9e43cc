"""What Engine code imports: enqueue work by task name and read the active model.

Importing this module pulls in Celery and SQLAlchemy, not LightGBM or XGBoost: enqueueing uses
task names only, and a model library is loaded only when `active_model` is asked for the model.

Every error this module raises on purpose is a `BrainError`: a refused request (`RequestError`:
unknown model type, malformed or unknown symbol, bad date) before anything is enqueued, or a
`ServiceError` naming the database or broker that cannot be used (password redacted).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
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

    def __init__(self, settings: Settings | None = None, app: Any = None) -> None:
        self.settings = settings or get_settings()
        if app is None:
            from brain_tasks.app import app as default_app

            app = default_app
        self.app = app
        self.engine = make_engine(self.settings.database_url)

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
        attempt_id = str(uuid.uuid4())
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

        attempt_id = str(uuid.uuid4())
        # The attempt's rows exist before its message does: `wait` and `status` see it at once.
        start_attempt(self.engine, self.settings, kind, run_id, attempt_id, day, symbols, models)
        result = self._send(task, attempt_id, {"symbols": symbols, "as_of": day.isoformat(),
                                               "attempt_id": attempt_id, **kwargs})
        return RunHandle(run_id, result.id, attempt_id)

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

    def _send(self, name: str, attempt_id: str, kwargs: dict[str, Any]) -> Any:
        """send_task with a short connection retry, so a dead broker is named within seconds (and the
        attempt's pending rows are cancelled: nothing will run them)."""
        from kombu.exceptions import OperationalError

        from brain_tasks.brain import runs

        try:
            return self.app.send_task(name, task_id=attempt_id, kwargs=kwargs, retry=True, retry_policy={
                "max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0})
        except OperationalError as exc:
            broker = redact_url(str(self.app.conf.broker_url))
            runs.cancel_attempt(self.engine, attempt_id, f"the broker {broker} could not be reached")
            raise BrokerUnavailableError(f"cannot reach the broker {broker}: {exc}; nothing was enqueued") from None

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
        deadline = time.monotonic() + timeout
        while True:
            status = runs.run_status(self.engine, run_id, attempt_id)
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
            return {"symbol": symbol, "regime": regime, "as_of_bar": last.isoformat(),
                    "model_type": champion.model_type, "version": champion.version, "confidence": None,
                    "trade": True, "reason": "champion (no per-regime choice for this regime)"}
        return {"symbol": symbol, "regime": regime, "as_of_bar": last.isoformat(), "model_type": chosen["model_type"],
                "version": chosen["version"], "confidence": chosen["confidence"], "trade": bool(chosen["tradeable"]),
                "reason": chosen["reason"]}

    # --- serve -----------------------------------------------------------------------------------
    def predict(self, symbol: str, at: str | dt.datetime | None = None) -> Signal:
        """The decision for the latest closed bar (or the bar stamped `at`) from stored data, recorded
        in the signals table.  Raises NoDataError, StaleDataError (latest bar older than
        BRAIN_SIGNAL_MAX_AGE; only when `at` is None) or NoModelError."""
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
