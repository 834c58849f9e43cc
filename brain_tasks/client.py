"""What Engine code imports: enqueue work by task name and read the active model.

Importing this module pulls in Celery and SQLAlchemy, not LightGBM or XGBoost: enqueueing uses
task names only, and a model library is loaded only when `active_model` is asked for the model.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import sqlalchemy as sa

from brain_tasks.brain.db import make_engine
from brain_tasks.brain.models import ModelManifest, ModelRegistry
from brain_tasks.errors import BrainError, NoDataError, NoModelError, StaleDataError  # noqa: F401 (re-exported)
from brain_tasks.runs import as_of_date, run_id_for
from brain_tasks.settings import Settings, get_settings


@dataclass(frozen=True)
class RunHandle:
    run_id: str
    task_id: str


@dataclass(frozen=True)
class ActiveModel:
    symbol: str
    model_type: str
    version: int
    regime: str | None
    manifest: dict[str, Any]
    model: Any  # has .predict(X); X columns = manifest["feature_names"]


@dataclass(frozen=True)
class Signal:
    """The Brain's decision for one closed bar of one symbol.

    `ts` is the bar's open time (UTC); `position` is -1 / 0 / +1 by the backtest's own rule and `size`
    the fraction of the unit stake (the walk-forward metrics trade size 1).  `model_type` is 'flat'
    (version None, prediction None) when no model was chosen for the regime or the data was stale;
    `tradeable` False means "stay flat" and `reason` says why.  `data_age_seconds`: how long ago the
    bar closed when the signal was computed.
    """

    symbol: str
    ts: dt.datetime
    regime: str | None
    model_type: str
    version: int | None
    prediction: float | None
    position: int
    size: float
    confidence: float | None
    tradeable: bool
    reason: str
    data_age_seconds: float
    artifact_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ts": self.ts.isoformat()}


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
        day = as_of_date(as_of)
        models = list(models or self.settings.models)
        result = self.app.send_task("brain_tasks.daily_retrain", kwargs={
            "symbols": list(symbols), "models": models, "as_of": day.isoformat()})
        return RunHandle(run_id_for("retrain", day, symbols, models), result.id)

    def nightly(self, as_of: str | dt.date | None = None, symbols: Sequence[str] | None = None) -> RunHandle:
        day = as_of_date(as_of)
        symbols = list(symbols or self.settings.symbols or self._stored_symbols())
        result = self.app.send_task("brain_tasks.nightly_analysis",
                                    kwargs={"symbols": symbols, "as_of": day.isoformat()})
        return RunHandle(run_id_for("nightly", day, symbols), result.id)

    def _stored_symbols(self) -> list[str]:
        from brain_tasks.brain import store

        return store.list_symbols(self.engine, self.settings.exchange, self.settings.timeframe)

    # --- read ------------------------------------------------------------------------------------
    def run_status(self, run_id: str) -> dict[str, Any]:
        from brain_tasks.jobs import run_status

        return run_status(self.engine, run_id)

    def wait(self, run_id: str, timeout: float = 3600.0, poll: float = 1.0,
             on_poll: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Block until the run's summary row is written (or raise TimeoutError); `on_poll` sees every
        status read on the way (the CLI's progress bar)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.run_status(run_id)
            if on_poll is not None:
                on_poll(status)
            if status["state"] not in ("pending", "unknown"):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} not finished after {timeout:.0f} s: {status['counts']}")
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

    # --- serve -----------------------------------------------------------------------------------
    def predict(self, symbol: str, at: str | dt.datetime | None = None) -> Signal:
        """The decision for the latest closed bar (or the bar stamped `at`) from stored data, recorded
        in the signals table.  Raises NoDataError, StaleDataError (latest bar older than
        BRAIN_MAX_DATA_AGE; only when `at` is None) or NoModelError."""
        from brain_tasks import serving

        return serving.predict(self.engine, self.settings, symbol, at)

    def predict_many(self, symbols: Sequence[str]) -> dict[str, Signal | BrainError]:
        """`predict` for each symbol; a symbol that cannot be served maps to its error, so one bad
        symbol never hides the others' signals."""
        from brain_tasks import serving

        return serving.predict_many(self.engine, self.settings, symbols)

    def latest_signal(self, symbol: str) -> Signal | None:
        """The newest recorded signal of `symbol` (e.g. published by the bar-close task), or None."""
        from brain_tasks import serving

        return serving.latest_signal(self.engine, symbol)
