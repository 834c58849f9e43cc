"""What Engine code imports: enqueue work by task name and read the active model.

Importing this module pulls in Celery and SQLAlchemy, not LightGBM or XGBoost: enqueueing uses
task names only, and a model library is loaded only when `active_model` is asked for the model.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import sqlalchemy as sa

from brain_tasks.brain.db import make_engine
from brain_tasks.brain.models import ModelManifest, ModelRegistry
from brain_tasks.runs import as_of_date, run_id_for
from brain_tasks.settings import Settings, get_settings


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
        """Enqueue the daily retrain of `symbols` as a new attempt of its run (pending rows first)."""
        day = as_of_date(as_of)
        symbols, models = list(symbols), list(models or self.settings.models)
        return self._enqueue("retrain", "brain_tasks.daily_retrain", run_id_for("retrain", day, symbols, models),
                             day, symbols, models, {"models": models})

    def nightly(self, as_of: str | dt.date | None = None, symbols: Sequence[str] | None = None) -> RunHandle:
        """Enqueue the nightly analysis as a new attempt of its run."""
        day = as_of_date(as_of)
        symbols = list(symbols or self.settings.symbols or self._stored_symbols())
        return self._enqueue("nightly", "brain_tasks.nightly_analysis", run_id_for("nightly", day, symbols),
                             day, symbols, [], {})

    def _enqueue(self, kind: str, task: str, run_id: str, day: dt.date, symbols: list[str], models: list[str],
                 kwargs: dict[str, Any]) -> RunHandle:
        from brain_tasks import jobs

        attempt_id = str(uuid.uuid4())
        # The attempt's rows exist before its message does: `wait` and `status` see it at once.
        jobs.start_attempt(self.engine, self.settings, kind, run_id, attempt_id, day, symbols, models)
        result = self.app.send_task(task, task_id=attempt_id, kwargs={
            "symbols": symbols, "as_of": day.isoformat(), "attempt_id": attempt_id, **kwargs})
        return RunHandle(run_id, result.id, attempt_id)

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
            if status["state"] not in (*runs.OPEN, "unknown"):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} attempt {attempt_id} not finished after {timeout:.0f} s: "
                                   f"{status['counts']}")
            time.sleep(poll)

    def active_model(self, symbol: str, regime: str | None = None) -> ActiveModel:
        """The model to trade: the one selected for `regime`, else the champion (sha256 checked)."""
        from brain_tasks.jobs import get_artifact
        from brain_tasks.ml.models import load_model

        row = self._selected(symbol, regime) if regime else None
        if row is None:
            row = self._latest(symbol, ModelRegistry.status == "champion")
        if row is None:
            raise LookupError(f"no champion model for {symbol!r}")
        with sa.orm.Session(self.engine) as session:
            manifest = session.get_one(ModelManifest, (row.symbol, row.model_type, row.version))
            info = {c.name: getattr(manifest, c.name) for c in ModelManifest.__table__.columns}
        fmt, data = get_artifact(self.engine, row.artifact_sha256)
        return ActiveModel(symbol, row.model_type, row.version, regime, info, load_model(fmt, data))

    def current_choice(self, symbol: str) -> dict[str, Any]:
        """The current volatility regime (from the latest stored candles), the model chosen for it and
        the confidence of that choice."""
        import pandas as pd

        from brain_tasks.brain import store
        from brain_tasks.ml.features import timeframe_seconds
        from brain_tasks.ml.regimes import volatility_regimes

        s = self.settings
        last = store.last_timestamp(self.engine, "candles", exchange=s.exchange, symbol=symbol,
                                    timeframe=s.timeframe)
        if last is None:
            raise LookupError(f"no candles stored for {symbol!r}")
        champion = self._latest(symbol, ModelRegistry.status == "champion")
        if champion is None:
            raise LookupError(f"no champion model for {symbol!r}")
        with sa.orm.Session(self.engine) as session:
            config = session.get_one(ModelManifest, (symbol, champion.model_type, champion.version)).config
        # The regime is classified exactly as the models' training classified it.
        window, lookback = int(config["regime_window"]), int(config["regime_lookback"])
        bar = pd.Timedelta(seconds=timeframe_seconds(s.timeframe))
        candles = store.read_candles(self.engine, s.exchange, symbol, s.timeframe,
                                     start=last - (window + lookback + 1) * bar)
        regimes = volatility_regimes(candles, window=window, lookback=lookback).dropna()
        regime = str(regimes.iloc[-1]) if len(regimes) else "normal"
        row = self._selected(symbol, regime) or champion
        choice = (row.selected_regimes or {}).get(regime, {})
        return {"symbol": symbol, "regime": regime, "as_of_bar": last.isoformat(), "model_type": row.model_type,
                "version": row.version, "confidence": choice.get("confidence"),
                "reason": choice.get("reason", "champion (no per-regime choice for this regime)")}

    def _latest(self, symbol: str, *where: Any) -> ModelRegistry | None:
        with sa.orm.Session(self.engine) as session:
            return session.scalars(sa.select(ModelRegistry).where(ModelRegistry.symbol == symbol, *where)
                                   .order_by(ModelRegistry.as_of.desc(), ModelRegistry.updated_at.desc())).first()

    def _selected(self, symbol: str, regime: str) -> ModelRegistry | None:
        with sa.orm.Session(self.engine) as session:
            rows = session.scalars(sa.select(ModelRegistry).where(ModelRegistry.symbol == symbol)
                                   .order_by(ModelRegistry.as_of.desc())).all()
        latest = rows[0].as_of if rows else None
        return next((r for r in rows if r.as_of == latest and regime in (r.selected_regimes or {})), None)
