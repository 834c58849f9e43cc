"""Serving: the Brain's decision for a symbol's latest closed bar, from stored data and the registry.

regime now (classified as the champion's training classified it) -> the model chosen for that regime
(else the champion, else no model) -> its prediction from features built by the training code on the
bounded window of candles they depend on (`ml.serving.required_history`) -> position and size.  Every decision is recorded
in the signals table once.  ML libraries are imported by the first prediction, not by this module's
importers; loaded models are kept per artifact sha256 (checked once, on load).
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain import registry, store
from brain_tasks.brain import signals as signal_rows
from brain_tasks.service.decision import Signal
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
# Keyed by database too: one process may serve from several Brains (tests do).
_manifests: dict[tuple[str, str, str, int], Any] = {}
_lock = threading.Lock()
_generations = itertools.count()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def bar_seconds(timeframe: str) -> int:
    from brain_tasks.ml.features import timeframe_seconds

    return timeframe_seconds(timeframe)


def signal_max_age(settings: Settings) -> float:
    """Seconds after a bar's close beyond which it is stale: BRAIN_SIGNAL_MAX_AGE, else one bar.

    One bar: once the next bar has closed without being stored, deciding on the previous one is
    deciding on old data.  The bar-close canvas collects before it publishes, so only a bar that did
    not come is flagged; an Engine asking in the seconds before collection ends is told so too.
    """
    if settings.signal_max_age is not None:
        return float(settings.signal_max_age)
    return float(bar_seconds(settings.timeframe))


# --- caches of immutable things ------------------------------------------------------------------

def _manifest(bind: sa.Engine | sa.Connection, engine: sa.Engine, symbol: str, model_type: str,
              version: int) -> Any:
    key = (str(engine.url), symbol, model_type, int(version))
    found = _manifests.get(key)
    if found is None:
        found = registry.manifest(bind, symbol, model_type, int(version))
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

# Bars younger than this are re-read on every call: a collector may still rewrite them (an in-progress
# bar finalised, a late event).  Older rows are cached per process and checked by their counts once
# per bar decided.
FRESH_BARS = 12
# Symbols whose old rows are kept (least recently used dropped).  Only a bar's serving window is kept
# (`ml.serving.required_history`: 2,064 5m bars by default, about 0.2 MB, plus the external events
# before them), cut down once it has grown by TRIM_SLACK rather than at every bar.
MARKET_CACHE_SIZE = 512
TRIM_SLACK = dt.timedelta(days=1)
_markets: OrderedDict[tuple[str, str, str, str, dt.datetime], _Cached] = OrderedDict()


@dataclass
class _Cached:
    start: dt.datetime                           # the rows held start here
    frozen_end: dt.datetime                      # every stored row in [start, frozen_end) is in `frames`
    frames: dict[str, pd.DataFrame | None]
    counts: tuple[int, int, int, int]
    generation: int
    checked_bar: dt.datetime | None              # the bar for which `counts` were last checked


@dataclass(frozen=True)
class _Hint:
    """Rows counted (and fresh candles read) for a symbol before its decision, in the calls' shared round
    trips (`signals.serving_state`, `signals.recent_candles`): `_rows` uses them when they are of its
    cache's window and cover the bar, and asks the database itself otherwise."""

    timeframe: str
    cut: dt.datetime                             # the latest bar that may be decided from them
    counts: tuple[tuple[dt.datetime, dt.datetime], tuple[int, ...], tuple[int, ...]] | None
    candles: pd.DataFrame | None = None          # candles from the window's frozen end up to `cut`


# The cache entry each symbol's last decision used (its window is counted with the next call's state).
_last_key: dict[tuple[str, str, str], tuple[str, str, str, str, dt.datetime]] = {}

_KINDS = ("candles", "funding", "open_interest", "liquidations")
_READERS = {"funding": store.read_funding, "open_interest": store.read_open_interest,
            "liquidations": store.read_liquidations}


_NOTHING = pd.DataFrame(columns=["ts"])  # a series not read (shared: never returned nor changed)


def _read(engine: sa.Connection, exchange: str, symbol: str, timeframe: str, start: dt.datetime, bar: dt.datetime,
          close: dt.datetime, kinds: Sequence[str] = _KINDS, candles: pd.DataFrame | None = None
          ) -> dict[str, pd.DataFrame]:
    """Candles in [start, bar] and events in [start, close) of `kinds` (the others empty); `candles`:
    the candles from `start` on, read already."""
    out = dict.fromkeys(_KINDS, _NOTHING)
    if candles is not None:
        out["candles"] = candles[candles["ts"] <= pd.Timestamp(bar)].reset_index(drop=True)
    elif "candles" in kinds:
        out["candles"] = store.read_candles(engine, exchange, symbol, timeframe, start=start,
                                            end=bar + dt.timedelta(microseconds=1))
    for key, reader in _READERS.items():
        if key in kinds:
            out[key] = reader(engine, exchange, symbol, start=start, end=close)
    return out


def _count(frames: dict[str, pd.DataFrame | None]) -> tuple[int, int, int, int]:
    return tuple(0 if frames[k] is None else len(frames[k]) for k in _KINDS)  # type: ignore[return-value]


def _before(frame: pd.DataFrame | None, end: dt.datetime) -> pd.DataFrame | None:
    if frame is None or frame.empty:
        return None
    part = frame[frame["ts"] < pd.Timestamp(end)]
    return part.reset_index(drop=True) if len(part) else None


def _join(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame | None:
    if old is None:
        return new if len(new) else None
    return pd.concat([old, new], ignore_index=True) if len(new) else old


def _market(engine: sa.Connection, exchange: str, symbol: str, timeframe: str, data_start: dt.datetime,
            bar: dt.datetime, rows: int, hint: _Hint | None = None
            ) -> tuple[dict[str, pd.DataFrame | None], tuple[Any, ...] | None, bool]:
    """The rows a bar's decision depends on: the last `rows` candles up to `bar` (none before
    `data_start`, where training's began) and the external events stamped from
    `features.events_from` their first candle up to the bar's close (the feature code drops later ones).

    Also returns the identity of the rows read (see `_rows`), and whether the candles reach back to
    `data_start` (then no other row of this version's training window comes before them).
    """
    from brain_tasks.ml.features import events_from
    from brain_tasks.ml.inference import JUMP_MARGIN, usable_window

    step = dt.timedelta(seconds=bar_seconds(timeframe))
    close = bar + step
    # The bars training skipped (`usable_candles`) are skipped here too, judged on the bars before them.
    span = max(rows - 1 + JUMP_MARGIN, 0) * step
    while True:
        first = max(data_start, bar - span)
        frames, identity = _rows(engine, exchange, symbol, timeframe, data_start,
                                 events_from(pd.Timestamp(first), pd.Timestamp(close)).to_pydatetime(), bar, hint)
        candles = frames["candles"]
        candles = usable_window(candles[candles["ts"] >= pd.Timestamp(data_start)].reset_index(drop=True),
                                from_start=first <= data_start)
        if len(candles) >= rows or first <= data_start:
            break
        span += (rows - len(candles)) * step  # gaps or skipped bars: reach back by the rows missing
    candles = candles.iloc[-rows:].reset_index(drop=True)
    complete = len(candles) < rows or candles["ts"].iloc[0] <= pd.Timestamp(data_start)
    out: dict[str, pd.DataFrame | None] = {"candles": candles}
    if len(candles):
        since = events_from(candles["ts"].iloc[0], pd.Timestamp(close))
        for key in _KINDS[1:]:
            frame = frames[key]
            part = None if frame is None else frame[frame["ts"] >= since].reset_index(drop=True)
            out[key] = part if part is not None and len(part) else None
    else:
        out.update({k: None for k in _KINDS[1:]})
    return out, identity, complete


def _rows(engine: sa.Connection, exchange: str, symbol: str, timeframe: str, data_start: dt.datetime,
          start: dt.datetime, bar: dt.datetime, hint: _Hint | None = None
          ) -> tuple[dict[str, pd.DataFrame | None], tuple[Any, ...] | None]:
    """Candles from `start` (or earlier) up to `bar` and events from there up to the bar's close, from
    the process's cache of old rows plus the fresh tail read.

    Also returns an identity of those inputs (the cache's generation and a digest of the re-read tail),
    equal for two calls that read the same rows, or None when the rows were read without the cache.
    """
    step = dt.timedelta(seconds=bar_seconds(timeframe))
    close = bar + step
    key = (str(engine.engine.url), exchange, symbol, timeframe, data_start)
    cached = _markets.get(key)
    historical = cached is not None and cached.frozen_end > close  # older than the cache: read, leave it
    if cached is not None and not historical:
        if cached.start > start:
            cached = None  # rows before the cache's are needed (a gap in the candles): read them all
        elif start - cached.start > TRIM_SLACK:
            kept = {k: _from(cached.frames[k], start) for k in _KINDS}
            cached = _Cached(start, cached.frozen_end, kept, _count(kept), next(_generations), None)
    # Old rows are counted once per bar (and once after a cut), and a backfill seen one bar late changes
    # nothing already decided (the recorded signal keeps what was first said).
    check_old = cached is not None and cached.checked_bar != bar
    counted = (hint is not None and cached is not None and not historical and hint.timeframe == timeframe
               and hint.counts is not None and hint.counts[0] == (cached.start, cached.frozen_end) and bar <= hint.cut)
    if counted:  # counted up to a later close: the recent counts may name a series with no row for this bar
        counts: tuple[Any, Any] | None = (hint.counts[1] if check_old else None, hint.counts[2])
    else:
        counts = None if cached is None or historical else signal_rows.stored_counts(
            engine, exchange, symbol, timeframe, cached.start, cached.frozen_end, bar + dt.timedelta(microseconds=1),
            close, check_old=check_old)
    if cached is not None and counts is not None and (not check_old or counts[0] == cached.counts):
        cached.checked_bar = bar
        recent = [k for k, n in zip(_KINDS, counts[1]) if n]
        tail: dict[str, pd.DataFrame] | None = _read(engine, exchange, symbol, timeframe, cached.frozen_end, bar,
                                                     close, recent, hint.candles if counted else None)
        frames = {k: _join(cached.frames[k], tail[k]) for k in _KINDS}
    else:
        cached, tail = None, None
        frames = {k: (v if len(v) else None) for k, v in
                  _read(engine, exchange, symbol, timeframe, start, bar, close).items()}
    if historical:
        identity = None
    else:
        frozen_end = bar - FRESH_BARS * step
        if cached is None or frozen_end > cached.frozen_end or cached is not _markets.get(key):
            tail = None  # the cache moves on: its tail is re-cut below
            begin = start if cached is None else cached.start
            kept = {k: _before(frames[k], frozen_end) for k in _KINDS}
            cached = _Cached(begin, frozen_end, kept, _count(kept), next(_generations), bar)
            with _lock:
                _markets[key] = cached
                _markets.move_to_end(key)
                _last_key[key[:3]] = key
                while len(_markets) > MARKET_CACHE_SIZE:
                    _markets.popitem(last=False)
        if tail is None:
            since = pd.Timestamp(cached.frozen_end)
            tail = {k: frames[k][frames[k]["ts"] >= since] for k in _KINDS if frames[k] is not None}
        identity = (cached.generation, tuple(_digest(tail[k]) if k in tail else 0 for k in _KINDS))
    if frames["candles"] is None:
        frames["candles"] = pd.DataFrame(columns=["ts", "open", "high", "low", "close", "volume"])
    return frames, identity


def _digest(frame: pd.DataFrame) -> int:
    return int(pd.util.hash_pandas_object(frame, index=False).sum()) if len(frame) else 0  # empty == absent


def _from(frame: pd.DataFrame | None, start: dt.datetime) -> pd.DataFrame | None:
    if frame is None:
        return None
    part = frame[frame["ts"] >= pd.Timestamp(start)]
    return part.reset_index(drop=True) if len(part) else None


# --- the decision --------------------------------------------------------------------------------

def _states(conn: sa.Connection, settings: Settings, symbols: Sequence[str],
            stamp: dt.datetime) -> dict[str, signal_rows.ServingState]:
    """Each symbol's `signals.ServingState`, with the stored row counts of its cached window (the one its
    last decision used), in one round trip."""
    url = str(conn.engine.url)
    windows = {}
    for symbol in symbols:
        key = _last_key.get((url, settings.exchange, symbol))
        cached = None if key is None else _markets.get(key)
        if cached is not None and key is not None and key[3] == settings.timeframe:
            windows[symbol] = (cached.start, cached.frozen_end)
    return signal_rows.serving_state(conn, settings.exchange, settings.timeframe, bar_seconds(settings.timeframe),
                                     symbols, stamp, windows)


def _hint(settings: Settings, state: signal_rows.ServingState, stamp: dt.datetime,
          candles: pd.DataFrame | None = None) -> _Hint:
    cut = stamp - dt.timedelta(seconds=bar_seconds(settings.timeframe))
    return _Hint(settings.timeframe, cut, state.counts, candles)


def _latest_bar(state: signal_rows.ServingState, settings: Settings, symbol: str, stamp: dt.datetime) -> dt.datetime:
    step = bar_seconds(settings.timeframe)
    last = state.last_bar
    if last is None:
        raise NoDataError(f"no closed {settings.timeframe} bar stored for {symbol!r} on {settings.exchange!r}")
    age = (stamp - last).total_seconds() - step
    limit = signal_max_age(settings)
    if age > limit:
        raise StaleDataError(f"{symbol}: latest bar {last:%Y-%m-%d %H:%M} closed {age:.0f} s ago "
                             f"(more than {limit:.0f} s)", symbol=symbol, last_bar=last, age_seconds=age)
    return last


def _champion(conn: sa.Connection, engine: sa.Engine, symbol: str, state: signal_rows.ServingState) -> Any:
    return None if state.champion is None else _manifest(conn, engine, symbol, *state.champion)


# The last decision per symbol with the identity of everything it was computed from (registry state
# and the rows read): a second call for the same bar with the same inputs returns it instead of
# recomputing features over the whole history (the bar-close task and the Engine ask for the same bar).
_decisions: dict[tuple[str, str], tuple[tuple[Any, ...], Signal]] = {}
_written: dict[tuple[str, str], tuple[Any, ...]] = {}  # the last signal key each symbol recorded


def predict(engine: sa.Engine, settings: Settings, symbol: str, at: Any = None, *, stamp: dt.datetime | None = None,
            record: bool = True) -> Signal:
    """The decision for `symbol`'s latest closed bar (or the last stored bar at or before `at`).

    `stamp` is "now" (tests and the bar-close task pass their own).  With `record`, the signal is
    written to the signals table (once per bar and model).
    """
    stamp = stamp or now()
    # One connection for every read and the write: a checkout costs a ping and a release a rollback,
    # which were most of a warm call's time with a connection per query.
    with engine.connect() as conn:
        state = _states(conn, settings, [symbol], stamp)[symbol]
        signal = _predict(conn, engine, settings, symbol, at, stamp, state, _hint(settings, state, stamp))
        if record:
            _record(conn, engine, [signal], stamp)
    return signal


def _record(conn: sa.Connection, engine: sa.Engine, signals: Sequence[Signal], stamp: dt.datetime) -> None:
    """Write the signals not yet written by this process (a key it wrote already would change nothing,
    and the commit, a WAL flush, was the largest part of a repeated call)."""
    url = str(engine.url)
    new = [s for s in signals if _written.get((url, s.symbol)) != (s.ts, s.model_type, s.version)]
    if not new:
        return
    for signal in new:
        signal_rows.write(conn, [to_row(signal, stamp)])
    conn.commit()
    for signal in new:
        _written[(url, signal.symbol)] = (signal.ts, signal.model_type, signal.version)


def _predict(conn: sa.Connection, engine: sa.Engine, settings: Settings, symbol: str, at: Any,
             stamp: dt.datetime, state: signal_rows.ServingState, hint: _Hint | None = None) -> Signal:
    from brain_tasks.ml import inference as ml

    target = _latest_bar(state, settings, symbol, stamp) if at is None else store.to_utc(at, "at")
    champion = _champion(conn, engine, symbol, state)
    choices = state.choices
    anchor = champion or next((_manifest(conn, engine, symbol, c["model_type"], c["version"]) for c in choices.values()
                               if c["model_type"] != FLAT and c["version"] is not None), None)
    if anchor is None:
        raise NoModelError(f"no champion and no per-regime choice for {symbol!r}: retrain it first")
    config = ml.serve_config(anchor.config)
    exchange = settings.exchange
    market, rows_read, complete = _market(conn, exchange, symbol, config.timeframe, anchor.data_start, target,
                                          ml.required_history(config,
                                                              sentiment=ml.uses_sentiment(anchor.feature_names)),
                                          hint)
    candles = market["candles"]
    if candles is None or candles.empty:
        raise NoDataError(f"{symbol}: no stored bar at or before {target:%Y-%m-%d %H:%M} since its model's "
                          f"training data began ({anchor.data_start:%Y-%m-%d %H:%M})")
    bar = candles["ts"].iloc[-1].to_pydatetime()
    age = (stamp - bar).total_seconds() - bar_seconds(config.timeframe)
    inputs = None if rows_read is None else (
        bar, anchor.symbol, anchor.model_type, anchor.version, rows_read,
        tuple(sorted((r, tuple(sorted((k, str(v)) for k, v in c.items()))) for r, c in choices.items())))
    memo = _decisions.get((str(engine.url), symbol))
    if inputs is not None and memo is not None and memo[0] == inputs:
        return replace(memo[1], data_age_seconds=age)
    signal, same_rows = _decide(conn, engine, exchange, symbol, bar, age, anchor, config, champion, choices, market,
                                complete, state.sizer)
    if inputs is not None and same_rows:
        _decisions[(str(engine.url), symbol)] = (inputs, signal)
    return signal


def _decide(conn: sa.Connection, engine: sa.Engine, exchange: str, symbol: str, bar: dt.datetime, age: float,
            anchor: Any, config: Any, champion: Any, choices: dict[str, dict[str, Any]],
            market: dict[str, pd.DataFrame | None], complete: bool,
            sizer_version: tuple[int, str] | None) -> tuple[Signal, bool]:
    """The decision, and whether it was computed from `market` alone (not from other rows read).
    `complete`: the market's candles reach back to the anchor's data start."""
    from brain_tasks.ml import inference as ml

    regime = ml.regime_at(market["candles"], config)
    choice = choices.get(regime) if regime else None
    if choice is not None and (choice["model_type"] == FLAT or choice["version"] is None):
        return Signal(symbol, bar, regime, FLAT, None, None, 0, 0.0, choice["confidence"], False,
                      f"flat in regime '{regime}': {choice['reason'] or 'no model beat doing nothing'}", age), True
    if choice is not None:
        version = _manifest(conn, engine, symbol, choice["model_type"], int(choice["version"]))
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
        return Signal(symbol, bar, regime, FLAT, None, None, 0, 0.0, None, False,
                      f"no model chosen for regime '{regime}' and no champion", age), True

    vconfig = config if version is anchor else ml.serve_config(version.config)
    model = load_model(engine, version.artifact_sha256)
    sizer = _sizer(engine, sizer_version) if tradeable else None
    if sizer is not None and sizer.source != (version.model_type, int(version.version)):
        sizer = None
    need = ml.feature_rows(model, _sizer_rows(sizer) if sizer is not None else 0)
    sentiment = ml.uses_sentiment(version.feature_names)
    rows = ml.features.required_history(vconfig.timeframe, sentiment=sentiment) + need - 1
    start = pd.Timestamp(version.data_start)
    candles = market["candles"]
    held = candles[candles["ts"] >= start]
    # A later data start: the anchor's window is this version's once its first candles were judged on
    # bars of this version's own (see `ml.serving.usable_window`).
    same_rows = ((version.data_start == anchor.data_start and (complete or len(held) >= rows))
                 or (version.data_start > anchor.data_start and len(held) >= rows + ml.JUMP_MARGIN))
    if same_rows:
        vmarket = {**market, "candles": held.reset_index(drop=True)}
    else:  # the window read for the anchor is not this version's: read its own
        vmarket, _, _ = _market(conn, exchange, symbol, vconfig.timeframe, version.data_start, bar, rows)
    if sentiment:
        # Read on each call (its rows are not in the cache of market rows), so not kept as a decision.
        vmarket = {**vmarket, "sentiment": _sentiment(conn, symbol, vmarket["candles"], bar, vconfig.timeframe)}
        same_rows = False
    try:
        features = ml.feature_frame(vmarket, vconfig, need)
        rows_in = ml.model_rows(features, list(version.feature_names), version.model_type)
    except DataError as exc:
        raise NoDataError(f"{symbol}: {exc}") from exc
    prediction = ml.predict_last(model, rows_in)
    position = ml.position_of(prediction, vconfig, tradeable)
    size = float(abs(position))
    if sizer is not None:
        target = _sized(sizer, model, features, list(version.feature_names), vmarket["candles"], vconfig, regime)
        position, size = int(np.sign(target)), float(abs(target))
        why += f"; sized by {sizer.active} ({sizer.reason})"
    side = {1: "long", -1: "short", 0: "flat"}[position]
    return Signal(symbol, bar, regime, version.model_type, int(version.version), prediction, position,
                  size, confidence, tradeable, f"{why}; {side}", age,
                  version.artifact_sha256), same_rows


def _sentiment(conn: sa.Connection, symbol: str, candles: pd.DataFrame, bar: dt.datetime,
               timeframe: str) -> pd.DataFrame | None:
    """The symbol's sentiment rows from the window's first candle to the bar's close (the features read
    no row before the first candle and none known after the close)."""
    if candles.empty:
        return None
    close = bar + dt.timedelta(seconds=bar_seconds(timeframe))
    rows = store.read_sentiment(conn, symbol, start=candles["ts"].iloc[0].to_pydatetime(), end=close)
    return rows if len(rows) else None


_sizers: dict[str, Any] = {}


def _sizer_rows(sizer: Any) -> int:
    """Predictions the sizer's observation reads (see `_sized`)."""
    cfg = sizer.config
    return cfg.hit_window + cfg.vol_window + cfg.delay + 1


def _sizer(engine: sa.Engine, found: tuple[int, str] | None) -> Any:
    """The symbol's current position sizer (`ml.sizing.Sizer`) from its newest sizer version
    (`ServingState.sizer`), cached by its artifact's sha256."""
    from brain_tasks.ml.sizing import Sizer

    if found is None:
        return None
    digest = found[1]
    if digest not in _sizers:
        _fmt, data = registry.load_artifact(engine, digest)
        _sizers[digest] = Sizer.from_bytes(data)
    return _sizers[digest]


def _sized(sizer: Any, model: Any, features: pd.DataFrame, names: list[str], candles: pd.DataFrame, config: Any,
           regime: str | None) -> float:
    """The sizer's target position for the last bar: it sees the model's recent predictions, their hit
    rate and the realised volatility of the bars whose returns are known, as in its training.  The
    Engine's own position and drawdown are not known to the Brain: the observation takes them as flat."""
    from brain_tasks.ml import inference as ml
    from brain_tasks.ml.sizing import latest_observation, size_for

    n = _sizer_rows(sizer)
    history = ml.model_rows(features, names, "sequence")  # every usable row, not only the last
    context = int(getattr(model, "context_rows", 0))
    recent = history.iloc[-(n + context):]
    preds = np.asarray(model.predict(recent), dtype="float64")[-n:]
    returns = ml.bar_returns(candles, config.execution_lag)  # a quiet window (one close) returns 0, no error
    known = returns.reindex(recent.index[-n:]).to_numpy(dtype="float64")
    return float(size_for(sizer, latest_observation(preds, known, regime, sizer)))


def stale_signal(settings: Settings, error: StaleDataError, stamp: dt.datetime) -> Signal:
    """The flat signal recorded for the bar that should have closed by `stamp` but is not stored."""
    step = bar_seconds(settings.timeframe)
    expected = pd.Timestamp(stamp).floor(f"{step}s").to_pydatetime() - dt.timedelta(seconds=step)
    return Signal(error.symbol, expected, None, FLAT, None, None, 0, 0.0, None, False,
                  f"stale data: {error}; flat until fresh bars arrive", float(error.age_seconds))


def predict_many(engine: sa.Engine, settings: Settings, symbols: Sequence[str], *,
                 stamp: dt.datetime | None = None) -> dict[str, Signal | BrainError]:
    """`predict` of each symbol on one connection, recorded in one transaction."""
    stamp = stamp or now()
    out: dict[str, Signal | BrainError] = {}
    with engine.connect() as conn:
        # Every symbol's registry state and row counts in one round trip, their fresh candles in another.
        states = _states(conn, settings, symbols, stamp)
        starts = {s: st.counts[0][1] for s, st in states.items() if st.counts is not None}
        cut = stamp - dt.timedelta(seconds=bar_seconds(settings.timeframe))
        fresh = signal_rows.recent_candles(conn, settings.exchange, settings.timeframe, starts,
                                           cut + dt.timedelta(microseconds=1))
        for symbol in symbols:
            try:
                out[symbol] = _predict(conn, engine, settings, symbol, None, stamp, states[symbol],
                                       _hint(settings, states[symbol], stamp, fresh.get(symbol)))
            except BrainError as exc:
                out[symbol] = exc
        _record(conn, engine, [s for s in out.values() if isinstance(s, Signal)], stamp)
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
