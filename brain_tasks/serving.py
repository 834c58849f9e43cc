"""Serving: the Brain's decision for a symbol's latest closed bar, from stored data and the registry.

regime now (classified as the champion's training classified it) -> the model chosen for that regime
(else the champion, else no model) -> its prediction from features built by the training code on the
candles its training started from (`ml.serving`) -> position and size.  Every decision is recorded
in the signals table once.  ML libraries are imported by the first prediction, not by this module's
importers; loaded models are kept per artifact sha256 (checked once, on load).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain import registry, store
from brain_tasks.brain import signals as signal_rows
from brain_tasks.client import Signal
from brain_tasks.errors import (
    BrainError,
    DataError,
    NoDataError,
    NoModelError,
    StaleDataError,
)
from brain_tasks.settings import Settings

FLAT = "flat"
MODEL_CACHE_SIZE = 256

_models: OrderedDict[str, Any] = OrderedDict()
_manifests: dict[tuple[str, str, int], Any] = {}
_lock = threading.Lock()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def bar_seconds(timeframe: str) -> int:
    from brain_tasks.ml.features import timeframe_seconds

    return timeframe_seconds(timeframe)


def signal_max_age(settings: Settings) -> float:
    """Seconds after a bar's close beyond which it is stale: BRAIN_SIGNAL_MAX_AGE, else two bars."""
    return float(settings.signal_max_age if settings.signal_max_age is not None else 2 * bar_seconds(settings.timeframe))


# --- caches of immutable things ------------------------------------------------------------------

def _manifest(engine: sa.Engine, symbol: str, model_type: str, version: int) -> Any:
    key = (symbol, model_type, int(version))
    found = _manifests.get(key)
    if found is None:
        found = registry.manifest(engine, symbol, model_type, int(version))
        _manifests[key] = found
    return found


def load_model(engine: sa.Engine, digest: str) -> Any:
    """The model stored under `digest`, loaded (and its sha256 checked) once per process."""
    with _lock:
        model = _models.get(digest)
        if model is not None:
            _models.move_to_end(digest)
            return model
    from brain_tasks.ml.models import load_model as load

    fmt, data = registry.load_artifact(engine, digest)
    model = load(fmt, data)
    with _lock:
        _models[digest] = model
        while len(_models) > MODEL_CACHE_SIZE:
            _models.popitem(last=False)
    return model


# --- market data ---------------------------------------------------------------------------------

def _market(engine: sa.Engine, exchange: str, symbol: str, timeframe: str, start: dt.datetime,
            bar: dt.datetime) -> dict[str, pd.DataFrame | None]:
    """What training read for the bar `bar`: candles from `start` up to it, and the external series
    known by its close (events stamped before the close; the feature code drops the rest)."""
    close = bar + dt.timedelta(seconds=bar_seconds(timeframe))
    candles = store.read_candles(engine, exchange, symbol, timeframe, start=start, end=bar + dt.timedelta(microseconds=1))
    out: dict[str, pd.DataFrame | None] = {"candles": candles}
    for key, reader in (("funding", store.read_funding), ("open_interest", store.read_open_interest),
                        ("liquidations", store.read_liquidations)):
        frame = reader(engine, exchange, symbol, start=start, end=close)
        out[key] = frame if len(frame) else None
    return out


def _since(market: dict[str, pd.DataFrame | None], start: dt.datetime) -> dict[str, pd.DataFrame | None]:
    ts = pd.Timestamp(start)
    out: dict[str, pd.DataFrame | None] = {}
    for key, frame in market.items():
        part = None if frame is None else frame[frame["ts"] >= ts].reset_index(drop=True)
        out[key] = part if part is not None and len(part) else (None if key != "candles" else part)
    return out


# --- the decision --------------------------------------------------------------------------------

def _latest_bar(engine: sa.Engine, settings: Settings, symbol: str, stamp: dt.datetime) -> dt.datetime:
    step = bar_seconds(settings.timeframe)
    last = signal_rows.last_closed_bar(engine, settings.exchange, symbol, settings.timeframe, step, stamp)
    if last is None:
        raise NoDataError(f"no closed {settings.timeframe} bar stored for {symbol!r} on {settings.exchange!r}")
    age = (stamp - last).total_seconds() - step
    limit = signal_max_age(settings)
    if age > limit:
        raise StaleDataError(f"{symbol}: latest bar {last:%Y-%m-%d %H:%M} closed {age:.0f} s ago "
                             f"(more than {limit:.0f} s)", symbol=symbol, last_bar=last, age_seconds=age)
    return last


def predict(engine: sa.Engine, settings: Settings, symbol: str, at: Any = None, *, stamp: dt.datetime | None = None,
            record: bool = True) -> Signal:
    """The decision for `symbol`'s latest closed bar (or the last stored bar at or before `at`).

    `stamp` is "now" (tests and the bar-close task pass their own).  With `record`, the signal is
    written to the signals table (once per bar and model).
    """
    from brain_tasks.ml import serving as ml

    stamp = stamp or now()
    target = _latest_bar(engine, settings, symbol, stamp) if at is None else store.to_utc(at, "at")
    champion = registry.champion(engine, symbol)
    choices = registry.regime_choice(engine, symbol)
    anchor = champion or next((_manifest(engine, symbol, c["model_type"], c["version"]) for c in choices.values()
                               if c["model_type"] != FLAT and c["version"] is not None), None)
    if anchor is None:
        raise NoModelError(f"no champion and no per-regime choice for {symbol!r}: retrain it first")
    config = ml.serve_config(anchor.config)
    exchange = settings.exchange
    market = _market(engine, exchange, symbol, config.timeframe, anchor.data_start, target)
    candles = market["candles"]
    if candles is None or candles.empty:
        raise NoDataError(f"{symbol}: no stored bar at or before {target:%Y-%m-%d %H:%M} since its model's "
                          f"training data began ({anchor.data_start:%Y-%m-%d %H:%M})")
    bar = candles["ts"].iloc[-1].to_pydatetime()
    age = (stamp - bar).total_seconds() - bar_seconds(config.timeframe)
    regime = ml.regime_at(candles, config)

    choice = choices.get(regime) if regime else None
    if choice is not None and (choice["model_type"] == FLAT or choice["version"] is None):
        signal = Signal(symbol, bar, regime, FLAT, None, None, 0, 0.0, choice["confidence"], False,
                        f"flat in regime '{regime}': {choice['reason'] or 'no model beat doing nothing'}", age)
        return _recorded(engine, signal, stamp, record)
    if choice is not None:
        version = _manifest(engine, symbol, choice["model_type"], int(choice["version"]))
        tradeable, confidence = bool(choice["tradeable"]), choice["confidence"]
        why = f"{version.model_type} v{version.version} chosen for regime '{regime}'"
        why += f" ({choice['reason']})" if choice["reason"] else ""
        if not tradeable:
            why = f"not tradeable: {why}"
    elif champion is not None:
        version, tradeable, confidence = champion, True, None
        why = (f"champion {champion.model_type} v{champion.version}: "
               + (f"no per-regime choice for regime '{regime}'" if regime else "regime unknown (warm-up)"))
    else:
        signal = Signal(symbol, bar, regime, FLAT, None, None, 0, 0.0, None, False,
                        f"no model chosen for regime '{regime}' and no champion", age)
        return _recorded(engine, signal, stamp, record)

    vconfig = config if version is anchor else ml.serve_config(version.config)
    vmarket = market if version.data_start == anchor.data_start else (
        _since(market, version.data_start) if version.data_start > anchor.data_start
        else _market(engine, exchange, symbol, vconfig.timeframe, version.data_start, bar))
    try:
        rows = ml.model_rows(ml.feature_frame(vmarket, vconfig), list(version.feature_names), version.model_type)
    except DataError as exc:
        raise NoDataError(f"{symbol}: {exc}") from exc
    prediction = ml.predict_last(load_model(engine, version.artifact_sha256), rows)
    position = ml.position_of(prediction, vconfig, tradeable)
    side = {1: "long", -1: "short", 0: "flat"}[position]
    signal = Signal(symbol, bar, regime, version.model_type, int(version.version), prediction, position,
                    float(abs(position)), confidence, tradeable, f"{why}; {side}", age, version.artifact_sha256)
    return _recorded(engine, signal, stamp, record)


def _recorded(engine: sa.Engine, signal: Signal, stamp: dt.datetime, record: bool, stale: bool = False) -> Signal:
    if record:
        signal_rows.write(engine, [to_row(signal, stamp, stale)])
    return signal


def stale_signal(settings: Settings, error: StaleDataError, stamp: dt.datetime) -> Signal:
    """The flat signal recorded for the bar that should have closed by `stamp` but is not stored."""
    step = bar_seconds(settings.timeframe)
    expected = pd.Timestamp(stamp).floor(f"{step}s").to_pydatetime() - dt.timedelta(seconds=step)
    return Signal(error.symbol, expected, None, FLAT, None, None, 0, 0.0, None, False,
                  f"stale data: {error}; flat until fresh bars arrive", float(error.age_seconds))


def predict_many(engine: sa.Engine, settings: Settings, symbols: Sequence[str], *,
                 stamp: dt.datetime | None = None) -> dict[str, Signal | BrainError]:
    out: dict[str, Signal | BrainError] = {}
    for symbol in symbols:
        try:
            out[symbol] = predict(engine, settings, symbol, stamp=stamp)
        except BrainError as exc:
            out[symbol] = exc
    return out


# --- rows ----------------------------------------------------------------------------------------

def to_row(signal: Signal, served_at: dt.datetime, stale: bool = False) -> dict[str, Any]:
    return {"symbol": signal.symbol, "ts": signal.ts, "model_type": signal.model_type,
            "version": signal.version if signal.version is not None else signal_rows.NO_VERSION,
            "regime": signal.regime, "prediction": signal.prediction, "position": int(signal.position),
            "size": float(signal.size), "confidence": signal.confidence, "tradeable": bool(signal.tradeable),
            "stale": stale, "reason": signal.reason, "artifact_sha256": signal.artifact_sha256,
            "data_age_seconds": float(signal.data_age_seconds), "served_at": served_at}


def from_row(row: dict[str, Any]) -> Signal:
    version = int(row["version"])
    return Signal(row["symbol"], row["ts"], row["regime"], row["model_type"],
                  None if version == signal_rows.NO_VERSION else version, row["prediction"], int(row["position"]),
                  float(row["size"]), row["confidence"], bool(row["tradeable"]), row["reason"],
                  float(row["data_age_seconds"]), row["artifact_sha256"])


def latest_signal(engine: sa.Engine, symbol: str) -> Signal | None:
    row = signal_rows.latest(engine, symbol)
    return from_row(row) if row is not None else None
