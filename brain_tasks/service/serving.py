"""Serving: the Brain's decision for a symbol's latest closed bar, from stored data and the registry.

regime now (classified as the champion's training classified it) -> the model chosen for that regime
(else the champion unless it loses to flat, else no model) -> its prediction from features built by the training code on the
bounded window of candles they depend on (`ml.inference.required_history`) -> position and size.  Every decision is recorded
in the signals table once.  ML libraries are imported by the first prediction, not by this module's
importers.  What serving keeps between calls (loaded models, manifests, windows of market rows, the last
decision) lives in one `Server` per database engine: its docstring states when each cache is invalidated.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

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
from brain_tasks.timekeeping import now, timeframe_seconds, to_utc
from brain_tasks.vocabulary import LOSES_TO_FLAT

FLAT = "flat"
MODEL_CACHE_SIZE = 256
# Bars younger than this are re-read on every call: a collector may still rewrite them (an in-progress
# bar finalised, a late event).  Older rows are kept by the `Server` and checked by their counts once
# per bar decided.
FRESH_BARS = 12
# Symbols whose old rows are kept (least recently used dropped).  Only a bar's serving window is kept
# (`ml.inference.required_history`: 2,064 5m bars by default, about 0.2 MB, plus the external events
# before them), cut down once it has grown by TRIM_SLACK rather than at every bar.
MARKET_CACHE_SIZE = 512
TRIM_SLACK = dt.timedelta(days=1)




def signal_max_age(settings: Settings) -> float:
    """Seconds after a bar's close beyond which it is stale: BRAIN_SIGNAL_MAX_AGE, else one bar.

    One bar: once the next bar has closed without being stored, deciding on the previous one is
    deciding on old data.  The bar-close canvas collects before it publishes, so only a bar that did
    not come is flagged; an Engine asking in the seconds before collection ends is told so too.
    """
    if settings.signal_max_age is not None:
        return float(settings.signal_max_age)
    return float(timeframe_seconds(settings.timeframe))


# --- market rows ---------------------------------------------------------------------------------

class WindowKey(NamedTuple):
    """What a window of market rows is kept for: a symbol's series, from one training data start on."""

    exchange: str
    symbol: str
    timeframe: str
    data_start: dt.datetime


@dataclass
class _Window:
    """Old market rows of one `WindowKey`, as the `Server` keeps them."""

    start: dt.datetime                           # the rows held start here
    frozen_end: dt.datetime                      # every stored row in [start, frozen_end) is in `frames`
    frames: dict[str, pd.DataFrame | None]
    counts: signal_rows.RowCounts
    generation: int
    checked_bar: dt.datetime | None              # the bar for which `counts` were last checked


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


def _count(frames: dict[str, pd.DataFrame | None]) -> signal_rows.RowCounts:
    return signal_rows.RowCounts(**{k: 0 if frames[k] is None else len(frames[k]) for k in _KINDS})


def _before(frame: pd.DataFrame | None, end: dt.datetime) -> pd.DataFrame | None:
    if frame is None or frame.empty:
        return None
    part = frame[frame["ts"] < pd.Timestamp(end)]
    return part.reset_index(drop=True) if len(part) else None


def _join(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame | None:
    if old is None:
        return new if len(new) else None
    return pd.concat([old, new], ignore_index=True) if len(new) else old


def _digest(frame: pd.DataFrame) -> int:
    return int(pd.util.hash_pandas_object(frame, index=False).sum()) if len(frame) else 0  # empty == absent


def _from(frame: pd.DataFrame | None, start: dt.datetime) -> pd.DataFrame | None:
    if frame is None:
        return None
    part = frame[frame["ts"] >= pd.Timestamp(start)]
    return part.reset_index(drop=True) if len(part) else None


@dataclass(frozen=True)
class Round:
    """What one call (`Server.predict` or `Server.predict_many`) read for all its symbols in shared round
    trips before deciding any: each symbol's `signals.ServingState` (with the stored row counts of the
    window its last decision used) and, for many symbols, the fresh candles after each such window.
    A decision uses these reads where they describe the window it is about to use and cover its bar
    (`counts`, `fresh`), and reads the database itself otherwise."""

    settings: Settings
    stamp: dt.datetime                           # "now" of the call
    states: Mapping[str, signal_rows.ServingState]
    fresh: Mapping[str, pd.DataFrame]            # candles from each counted window's frozen end up to `cut`

    @property
    def cut(self) -> dt.datetime:
        """The latest bar that may be decided from these reads: the one closed by `stamp`."""
        return self.stamp - dt.timedelta(seconds=timeframe_seconds(self.settings.timeframe))

    def counts(self, symbol: str, timeframe: str, window: _Window, bar: dt.datetime
               ) -> signal_rows.StoredCounts | None:
        """The stored counts of `window` read for `symbol`, when they are of this window and cover `bar`."""
        counted = self.states[symbol].counts if symbol in self.states else None
        if (counted is None or timeframe != self.settings.timeframe or bar > self.cut
                or (counted.start, counted.frozen_end) != (window.start, window.frozen_end)):
            return None
        return counted


class Server:
    """Decisions served from one database (`engine`), and every cache serving keeps between calls.

    Who holds one: `server(engine)` gives the one instance of an engine (`brain.db.make_engine` keeps
    one engine per database URL per process, so the Engine's `BrainClient`, the worker's
    `publish_signals` / bar-close path and the CLI share it); the module-level `predict`,
    `predict_many` and `load_model` go through it.  A disposed engine's instance goes with it.

    When each cache is invalidated:
    - `models` (artifact sha256 -> loaded model) and `sizers` (artifact sha256 -> `ml.sizing.Sizer`):
      never.  An artifact is addressed by its content (sha256 checked on load).  `models` keeps the
      MODEL_CACHE_SIZE most recently used; `sizers` keeps every sizer loaded.
    - `gates` (description sha256 -> `ml.distribution.Gate`, the version's out-of-distribution gate parsed
      once): never, for the same reason.
    - `manifests` ((symbol, model type, version) -> manifest): never.  A registered version is not
      rewritten; what changes (champion, regime choices, newest sizer) is read on every call
      (`signals.serving_state`) and only names versions.
    - `verdicts` ((symbol, model type, version) -> whether its walk-forward result loses to flat): never,
      for the same reason (a version's walk-forward metrics are written with it, once).
    - `markets` (`WindowKey` -> the window's old rows, MARKET_CACHE_SIZE most recently used kept): rows
      younger than FRESH_BARS bars before the decided bar are never kept; they are re-read on every call.
      The older rows held are trusted while the stored counts of each series over [start, frozen_end)
      equal the rows held, checked once per decided bar and after a trim (in the call's shared round trip
      when it counted this window, else by `signals.stored_counts`); on a mismatch the window is dropped
      and every row read again.  A backfill seen after its bar was decided changes only later bars.  A bar
      that closed before the window's frozen end (a historical `at`) is served from a full read and leaves
      the window alone.  The
      window moves its frozen end forward as bars close, is read again from the start when a decision
      needs rows before its start, and is cut to what is needed once its start is TRIM_SLACK too early.
    - `last_window` ((exchange, symbol) -> `WindowKey` of its last decision): replaced by each decision;
      it only says which window the next call's shared round trip counts.
    - `decisions` (symbol -> the identity of its last decision's inputs, and the decision): reused only
      when a call's inputs have the same identity (bar, anchor version, regime choices, the window's
      generation and a digest of the fresh rows read).  A decision for a historical bar, or one that read
      rows besides its window (a version with another window, sentiment), is not kept.
    - `written` (symbol -> the (bar, model type, version) last recorded): a signal with that key is not
      written again (the signals table keeps the first row of a key anyway).

    Thread safety: an Engine may call from several threads.  `models` and `markets` (with `last_window`)
    change under one lock, as before this class; the other caches are single dictionary operations, and a
    race between two calls at worst computes the same value twice.
    """

    def __init__(self, engine: sa.Engine) -> None:
        # Weakly: `_SERVERS` holds this instance for as long as the engine lives, not longer.
        self._engine = weakref.ref(engine)
        self.models: OrderedDict[str, Any] = OrderedDict()
        self.sizers: dict[str, Any] = {}
        self.gates: dict[str, Any] = {}
        self.manifests: dict[tuple[str, str, int], Any] = {}
        self.verdicts: dict[tuple[str, str, int], bool] = {}
        self.markets: OrderedDict[WindowKey, _Window] = OrderedDict()
        self.last_window: dict[tuple[str, str], WindowKey] = {}
        self.decisions: dict[str, tuple[tuple[Any, ...], Signal]] = {}
        self.written: dict[str, tuple[Any, ...]] = {}
        self._lock = threading.Lock()
        self._generations = itertools.count()

    @property
    def engine(self) -> sa.Engine:
        engine = self._engine()
        if engine is None:
            raise RuntimeError("this Server's engine was disposed of: ask `server(engine)` for the new one")
        return engine

    # --- immutable things, by content address or version ---------------------------------------

    def manifest(self, symbol: str, model_type: str, version: int, bind: sa.Engine | sa.Connection | None = None
                 ) -> Any:
        """The registry manifest of a version (read through `bind`, default the engine, once)."""
        key = (symbol, model_type, int(version))
        found = self.manifests.get(key)
        if found is None:
            found = registry.manifest(self.engine if bind is None else bind, symbol, model_type, int(version))
            self.manifests[key] = found
        return found

    def loses_to_flat(self, version: Any) -> bool:
        """Whether a version's walk-forward result (regime 'all') is worse than never trading
        (`ml.metrics.loses_to_flat`), read once: those metrics are written with the version and never again."""
        key = (version.symbol, version.model_type, int(version.version))
        found = self.verdicts.get(key)
        if found is None:
            found = self.verdicts.setdefault(key, registry.loses_to_flat(self.engine, version))
        return found

    def load_model(self, digest: str) -> Any:
        """The model stored under `digest`, loaded (and its sha256 checked) once."""
        with self._lock:
            model = self.models.get(digest)
            if model is not None:
                self.models.move_to_end(digest)
                return model
        from brain_tasks.ml.models import load_model as load

        fmt, data = registry.load_artifact(self.engine, digest)
        model = load(fmt, data)
        with self._lock:
            self.models[digest] = model
            while len(self.models) > MODEL_CACHE_SIZE:
                self.models.popitem(last=False)
        return model

    def sizer(self, found: signal_rows.SizerVersion | None) -> Any:
        """The symbol's current position sizer (`ml.sizing.Sizer`) from its newest sizer version
        (`ServingState.sizer`), loaded once per artifact."""
        from brain_tasks.ml.sizing import Sizer

        if found is None:
            return None
        digest = found.artifact_sha256
        if digest not in self.sizers:
            _fmt, data = registry.load_artifact(self.engine, digest)
            self.sizers[digest] = Sizer.from_bytes(data)
        return self.sizers[digest]

    def gate(self, version: Any) -> Any:
        """The out-of-distribution gate of a version (`ml.distribution.Gate`), parsed once per
        description; None for a version trained before the gate existed."""
        from brain_tasks.ml.distribution import Gate

        digest = getattr(version, "distribution_sha256", None)
        if digest is None:
            return None
        found = self.gates.get(digest)
        if found is None:
            found = self.gates.setdefault(digest, Gate.of(registry.distribution(self.engine, digest)))
        return found

    # --- decisions -------------------------------------------------------------------------------

    def predict(self, settings: Settings, symbol: str, at: Any = None, *, stamp: dt.datetime | None = None,
                record: bool = True) -> Signal:
        """The decision for `symbol`'s latest closed bar (or the last stored bar at or before `at`).

        `stamp` is "now" (tests and the bar-close task pass their own).  With `record`, the signal is
        written to the signals table (once per bar and model), unless it is historical (`historical`):
        a decision on a past bar was never served, so it is returned and not recorded.
        """
        stamp = stamp or now()
        # One connection for every read and the write: a checkout costs a ping and a release a rollback,
        # which were most of a warm call's time with a connection per query.
        with self.engine.connect() as conn:
            shared = self._round(conn, settings, [symbol], stamp)
            signal = self._predict(conn, shared, symbol, at)
            if record and not historical(shared, signal):
                self._record(conn, [signal], stamp)
        return signal

    def predict_many(self, settings: Settings, symbols: Sequence[str], *,
                     stamp: dt.datetime | None = None) -> dict[str, Signal | BrainError]:
        """`predict` of each symbol on one connection, recorded in one transaction."""
        stamp = stamp or now()
        out: dict[str, Signal | BrainError] = {}
        with self.engine.connect() as conn:
            # Every symbol's registry state and row counts in one round trip, their fresh candles in another.
            shared = self._round(conn, settings, symbols, stamp, fresh=True)
            for symbol in symbols:
                try:
                    out[symbol] = self._predict(conn, shared, symbol, None)
                except BrainError as exc:
                    out[symbol] = exc
            self._record(conn, [s for s in out.values() if isinstance(s, Signal)], stamp)
        return out

    def _round(self, conn: sa.Connection, settings: Settings, symbols: Sequence[str], stamp: dt.datetime,
               fresh: bool = False) -> Round:
        """The call's shared reads: each symbol's `signals.ServingState` with the stored row counts of its
        last window, in one round trip; with `fresh`, the candles after each window in another."""
        windows = {}
        for symbol in symbols:
            key = self.last_window.get((settings.exchange, symbol))
            kept = None if key is None else self.markets.get(key)
            if kept is not None and key is not None and key.timeframe == settings.timeframe:
                windows[symbol] = (kept.start, kept.frozen_end)
        states = signal_rows.serving_state(conn, settings.exchange, settings.timeframe,
                                           timeframe_seconds(settings.timeframe), symbols, stamp, windows)
        tails: dict[str, pd.DataFrame] = {}
        if fresh:
            starts = {s: st.counts.frozen_end for s, st in states.items() if st.counts is not None}
            cut = stamp - dt.timedelta(seconds=timeframe_seconds(settings.timeframe))
            tails = signal_rows.recent_candles(conn, settings.exchange, settings.timeframe, starts,
                                               cut + dt.timedelta(microseconds=1))
        return Round(settings, stamp, states, tails)

    def _record(self, conn: sa.Connection, signals: Sequence[Signal], stamp: dt.datetime) -> None:
        """Write the signals not yet written by this server (a key it wrote already would change nothing,
        and the commit, a WAL flush, was the largest part of a repeated call)."""
        new = [s for s in signals if self.written.get(s.symbol) != (s.ts, s.model_type, s.version)]
        if not new:
            return
        for signal in new:
            signal_rows.write(conn, [to_row(signal, stamp)])
        conn.commit()
        for signal in new:
            self.written[signal.symbol] = (signal.ts, signal.model_type, signal.version)

    def _champion(self, conn: sa.Connection, symbol: str, state: signal_rows.ServingState) -> Any:
        champion = state.champion
        return None if champion is None else self.manifest(symbol, champion.model_type, champion.version, conn)

    def _predict(self, conn: sa.Connection, shared: Round, symbol: str, at: Any) -> Signal:
        from brain_tasks.ml import inference as ml

        settings, stamp, state = shared.settings, shared.stamp, shared.states[symbol]
        target = _latest_bar(state, settings, symbol, stamp) if at is None else to_utc(at, "at")
        champion = self._champion(conn, symbol, state)
        choices = state.choices
        anchor = champion or next((self.manifest(symbol, c.model_type, c.version, conn) for c in choices.values()
                                   if c.model_type != FLAT and c.version is not None), None)
        if anchor is None:
            raise NoModelError(f"no champion and no per-regime choice for {symbol!r}: retrain it first")
        config = ml.serve_config(anchor.config)
        exchange = settings.exchange
        market, rows_read, complete = self._market(
            conn, exchange, symbol, config.timeframe, anchor.data_start, target,
            ml.required_history(config, sentiment=ml.uses_sentiment(anchor.feature_names)), shared)
        candles = market["candles"]
        if candles is None or candles.empty:
            raise NoDataError(f"{symbol}: no stored bar at or before {target:%Y-%m-%d %H:%M} since its model's "
                              f"training data began ({anchor.data_start:%Y-%m-%d %H:%M})")
        bar = candles["ts"].iloc[-1].to_pydatetime()
        age = (stamp - bar).total_seconds() - timeframe_seconds(config.timeframe)
        inputs = None if rows_read is None else (
            bar, anchor.symbol, anchor.model_type, anchor.version, rows_read, _choices_identity(choices))
        memo = self.decisions.get(symbol)
        if inputs is not None and memo is not None and memo[0] == inputs:
            return replace(memo[1], data_age_seconds=age)
        signal, same_rows = self._decide(conn, exchange, symbol, bar, age, anchor, config, champion, choices,
                                         market, complete, state.sizer, max_age=settings.model_max_age)
        if inputs is not None and same_rows:
            self.decisions[symbol] = (inputs, signal)
        return signal

    def _decide(self, conn: sa.Connection, exchange: str, symbol: str, bar: dt.datetime, age: float,
                anchor: Any, config: Any, champion: Any, choices: dict[str, signal_rows.Choice],
                market: dict[str, pd.DataFrame | None], complete: bool,
                sizer_version: signal_rows.SizerVersion | None, *, max_age: float = 0) -> tuple[Signal, bool]:
        """The decision, and whether it was computed from `market` alone (not from other rows read).
        `complete`: the market's candles reach back to the anchor's data start; `max_age`: the model
        expiry in seconds (0: none)."""
        from brain_tasks.ml import inference as ml

        regime = ml.regime_at(market["candles"], config)
        choice = choices.get(regime) if regime else None
        context = decision_context(champion, choices, sizer_version, market)
        if choice is not None and (choice.model_type == FLAT or choice.version is None):
            return Signal(symbol, bar, regime, FLAT, None, None, 0, 0.0, choice.confidence, False,
                          f"flat in regime '{regime}': {choice.reason or 'no model beat doing nothing'}", age,
                          context=context), True
        if choice is not None:
            version = self.manifest(symbol, choice.model_type, int(choice.version), conn)
            tradeable, confidence = bool(choice.tradeable), choice.confidence
            why = f"{version.model_type} v{version.version} chosen for regime '{regime}'"
            why += f" ({choice.reason})" if choice.reason else ""
            if not tradeable:
                why = f"not tradeable: {why}"
        elif champion is not None and self.loses_to_flat(champion):
            # What the chooser does with a model worse than not trading (`steps.choose`): flat, with the reason.
            where = f"regime '{regime}' has no per-regime choice" if regime else "regime unknown (warm-up)"
            return Signal(symbol, bar, regime, FLAT, None, None, 0, 0.0, None, False,
                          f"flat: {where} and champion {champion.model_type} v{champion.version} is {LOSES_TO_FLAT}",
                          age, context=context), True
        elif champion is not None:
            version, tradeable, confidence = champion, True, None
            why = (f"champion {champion.model_type} v{champion.version}: "
                   + (f"no per-regime choice for regime '{regime}'" if regime else "regime unknown (warm-up)"))
        else:
            return Signal(symbol, bar, regime, FLAT, None, None, 0, 0.0, None, False,
                          f"no model chosen for regime '{regime}' and no champion", age, context=context), True

        vconfig = config if version is anchor else ml.serve_config(version.config)
        model = self.load_model(version.artifact_sha256)
        sizer = self.sizer(sizer_version) if tradeable else None
        if sizer is not None and (sizer.source != (version.model_type, int(version.version))
                                  or not _selection_trades(choices, sizer.source)):
            sizer = None
        need = ml.feature_rows(model, _sizer_rows(sizer) if sizer is not None else 0)
        sentiment = ml.uses_sentiment(version.feature_names)
        rows = ml.features.required_history(vconfig.timeframe, sentiment=sentiment) + need - 1
        start = pd.Timestamp(version.data_start)
        candles = market["candles"]
        held = candles[candles["ts"] >= start]
        # A later data start: the anchor's window is this version's once its first candles were judged on
        # bars of this version's own (see `ml.inference.usable_window`).
        same_rows = ((version.data_start == anchor.data_start and (complete or len(held) >= rows))
                     or (version.data_start > anchor.data_start and len(held) >= rows + ml.JUMP_MARGIN))
        if same_rows:
            vmarket = {**market, "candles": held.reset_index(drop=True)}
        else:  # the window read for the anchor is not this version's: read its own
            vmarket, _, _ = self._market(conn, exchange, symbol, vconfig.timeframe, version.data_start, bar, rows)
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
        from brain_tasks.ml.distribution import assess

        # The two gates: inputs the version never saw, and a version too old for this bar.
        gate = self.gate(version)
        verdict = None if gate is None else assess(gate, rows_in.iloc[-1])
        model_age = (bar - version.data_end).total_seconds()
        blocked = [verdict.reason()] if verdict is not None and not verdict.in_distribution else []
        if max_age and model_age > max_age:
            blocked.append(expiry_reason(version, model_age, max_age))
        if blocked and tradeable:
            tradeable, sizer = False, None
            why = f"not tradeable: {'; '.join(blocked)}; {why}"
        elif blocked:
            why = f"{why}; {'; '.join(blocked)}"
        if model_age < 0:  # a past bar asked of a later version: that version saw this bar in training
            why += (f"; in sample: {version.model_type} v{version.version} was trained on bars up to "
                    f"{version.data_end:%Y-%m-%d %H:%M}, after this bar")
        if gate is None:
            why += f"; served without the distribution gate ({version.model_type} v{version.version} has no input " \
                   "description: trained before the gate, or too few rows)"
        position = ml.position_of(prediction, vconfig, tradeable)
        size = float(abs(position))
        if sizer is not None:
            target = _sized(sizer, model, features, list(version.feature_names), vmarket["candles"], vconfig, regime)
            position, size = int(np.sign(target)), float(abs(target))
            why += f"; sized by {sizer.active} ({sizer.reason})"
        side = {1: "long", -1: "short", 0: "flat"}[position]
        return Signal(symbol, bar, regime, version.model_type, int(version.version), prediction, position,
                      size, confidence, tradeable, f"{why}; {side}", age, version.artifact_sha256,
                      in_distribution=True if verdict is None else verdict.in_distribution,
                      dissimilarity=None if verdict is None else verdict.dissimilarity,
                      model_age_seconds=model_age, context=context), same_rows

    def decide_again(self, conn: sa.Connection, settings: Settings, row: Mapping[str, Any]) -> Signal:
        """A served signal's decision computed again from the rows as stored now, with the registry state
        it was decided with (its `context`: champion, regime choices, sizer; a row served before contexts
        existed: its own model for its own regime).  For the nightly audit (`service.audit`)."""
        from brain_tasks.ml import inference as ml

        symbol, bar = row["symbol"], to_utc(row["ts"])
        ctx = row.get("context") or {}
        version = None if int(row["version"]) == signal_rows.NO_VERSION else int(row["version"])
        if "choices" in ctx:
            ref = ctx.get("champion")
            champion = None if ref is None else self.manifest(symbol, ref[0], int(ref[1]), conn)
            choices = {r: signal_rows.Choice(c[0], c[1], c[3], bool(c[2]), None, None) for r, c in ctx["choices"].items()}
            sizer = None if ctx.get("sizer") is None else signal_rows.SizerVersion(int(ctx["sizer"][0]), ctx["sizer"][1])
        else:
            champion = None if version is None else self.manifest(symbol, row["model_type"], version, conn)
            choices = {} if row["regime"] is None else {row["regime"]: signal_rows.Choice(
                row["model_type"], version, row["confidence"], bool(row["tradeable"]), None, None)}
            sizer = None
        anchor = champion or next((self.manifest(symbol, c.model_type, int(c.version), conn) for c in choices.values()
                                   if c.model_type != FLAT and c.version is not None), None)
        if anchor is None:
            raise NoModelError(f"{symbol}: the signal of {bar:%Y-%m-%d %H:%M} names no version to decide it again")
        config = ml.serve_config(anchor.config)
        market, _, complete = self._market(
            conn, settings.exchange, symbol, config.timeframe, anchor.data_start, bar,
            ml.required_history(config, sentiment=ml.uses_sentiment(anchor.feature_names)))
        candles = market["candles"]
        if candles is None or candles.empty or candles["ts"].iloc[-1].to_pydatetime() != bar:
            raise NoDataError(f"{symbol}: the bar {bar:%Y-%m-%d %H:%M} is no longer stored")
        signal, _ = self._decide(conn, settings.exchange, symbol, bar, float(row["data_age_seconds"]), anchor, config,
                                 champion, choices, market, complete, sizer, max_age=settings.model_max_age)
        return signal

    def _market(self, engine: sa.Connection, exchange: str, symbol: str, timeframe: str, data_start: dt.datetime,
                bar: dt.datetime, rows: int, shared: Round | None = None
                ) -> tuple[dict[str, pd.DataFrame | None], tuple[Any, ...] | None, bool]:
        """The rows a bar's decision depends on: the last `rows` candles up to `bar` (none before
        `data_start`, where training's began) and the external events stamped from
        `features.events_from` their first candle up to the bar's close (the feature code drops later ones).

        Also returns the identity of the rows read (see `_rows`), and whether the candles reach back to
        `data_start` (then no other row of this version's training window comes before them).
        """
        from brain_tasks.ml.features import events_from
        from brain_tasks.ml.inference import JUMP_MARGIN, usable_window

        step = dt.timedelta(seconds=timeframe_seconds(timeframe))
        close = bar + step
        # The bars training skipped (`usable_candles`) are skipped here too, judged on the bars before them.
        span = max(rows - 1 + JUMP_MARGIN, 0) * step
        while True:
            first = max(data_start, bar - span)
            frames, identity = self._rows(engine, exchange, symbol, timeframe, data_start,
                                          events_from(pd.Timestamp(first), pd.Timestamp(close)).to_pydatetime(), bar,
                                          shared)
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

    def _rows(self, engine: sa.Connection, exchange: str, symbol: str, timeframe: str, data_start: dt.datetime,
              start: dt.datetime, bar: dt.datetime, shared: Round | None = None
              ) -> tuple[dict[str, pd.DataFrame | None], tuple[Any, ...] | None]:
        """Candles from `start` (or earlier) up to `bar` and events from there up to the bar's close, from
        the window of old rows kept (`markets`) plus the fresh tail read.  `shared`: the call's shared reads,
        used where they describe this window.

        Also returns an identity of those inputs (the cache's generation and a digest of the re-read tail),
        equal for two calls that read the same rows, or None when the rows were read without the cache.
        """
        step = dt.timedelta(seconds=timeframe_seconds(timeframe))
        close = bar + step
        key = WindowKey(exchange, symbol, timeframe, data_start)
        cached = self.markets.get(key)
        historical = cached is not None and cached.frozen_end > close  # older than the cache: read, leave it
        if cached is not None and not historical:
            if cached.start > start:
                cached = None  # rows before the cache's are needed (a gap in the candles): read them all
            elif start - cached.start > TRIM_SLACK:
                kept = {k: _from(cached.frames[k], start) for k in _KINDS}
                cached = _Window(start, cached.frozen_end, kept, _count(kept), next(self._generations), None)
        # Old rows are counted once per bar (and once after a cut), and a backfill seen one bar late changes
        # nothing already decided (the recorded signal keeps what was first said).
        check_old = cached is not None and cached.checked_bar != bar
        counted = (None if shared is None or cached is None or historical
                   else shared.counts(symbol, timeframe, cached, bar))
        counts: signal_rows.StoredCounts | None
        if counted is not None:
            # Counted up to a later close: the recent counts may name a series with no row for this bar.
            counts = counted if check_old else replace(counted, old=None)
        else:
            counts = None if cached is None or historical else signal_rows.stored_counts(
                engine, exchange, symbol, timeframe, cached.start, cached.frozen_end,
                bar + dt.timedelta(microseconds=1), close, check_old=check_old)
        if cached is not None and counts is not None and (not check_old or counts.old == cached.counts):
            cached.checked_bar = bar
            recent = [k for k, n in counts.recent._asdict().items() if n]
            fresh = None if counted is None or shared is None else shared.fresh.get(symbol)
            tail: dict[str, pd.DataFrame] | None = _read(engine, exchange, symbol, timeframe, cached.frozen_end,
                                                         bar, close, recent, fresh)
            frames = {k: _join(cached.frames[k], tail[k]) for k in _KINDS}
        else:
            cached, tail = None, None
            frames = {k: (v if len(v) else None) for k, v in
                      _read(engine, exchange, symbol, timeframe, start, bar, close).items()}
        if historical:
            identity = None
        else:
            frozen_end = bar - FRESH_BARS * step
            if cached is None or frozen_end > cached.frozen_end or cached is not self.markets.get(key):
                tail = None  # the window moves on: its tail is re-cut below
                begin = start if cached is None else cached.start
                kept = {k: _before(frames[k], frozen_end) for k in _KINDS}
                cached = _Window(begin, frozen_end, kept, _count(kept), next(self._generations), bar)
                with self._lock:
                    self.markets[key] = cached
                    self.markets.move_to_end(key)
                    self.last_window[(exchange, symbol)] = key
                    while len(self.markets) > MARKET_CACHE_SIZE:
                        self.markets.popitem(last=False)
            if tail is None:
                since = pd.Timestamp(cached.frozen_end)
                tail = {k: frames[k][frames[k]["ts"] >= since] for k in _KINDS if frames[k] is not None}
            identity = (cached.generation, tuple(_digest(tail[k]) if k in tail else 0 for k in _KINDS))
        if frames["candles"] is None:
            frames["candles"] = pd.DataFrame(columns=["ts", "open", "high", "low", "close", "volume"])
        return frames, identity


# The one holder of serving state: each engine's `Server`, dropped with its engine.
_SERVERS: weakref.WeakKeyDictionary[sa.Engine, Server] = weakref.WeakKeyDictionary()


def server(engine: sa.Engine) -> Server:
    """The `Server` of `engine` (created on first use; see `Server` for who shares it)."""
    found = _SERVERS.get(engine)
    if found is None:
        found = _SERVERS.setdefault(engine, Server(engine))  # a racing thread's instance wins, unused
    return found


def load_model(engine: sa.Engine, digest: str) -> Any:
    """The model stored under `digest`, loaded (and its sha256 checked) once per engine."""
    return server(engine).load_model(digest)


def predict(engine: sa.Engine, settings: Settings, symbol: str, at: Any = None, *, stamp: dt.datetime | None = None,
            record: bool = True) -> Signal:
    """`Server.predict` on `engine`'s server."""
    return server(engine).predict(settings, symbol, at, stamp=stamp, record=record)


def predict_many(engine: sa.Engine, settings: Settings, symbols: Sequence[str], *,
                 stamp: dt.datetime | None = None) -> dict[str, Signal | BrainError]:
    """`Server.predict_many` on `engine`'s server."""
    return server(engine).predict_many(settings, symbols, stamp=stamp)


# --- the decision's pure parts -------------------------------------------------------------------

def _latest_bar(state: signal_rows.ServingState, settings: Settings, symbol: str, stamp: dt.datetime) -> dt.datetime:
    step = timeframe_seconds(settings.timeframe)
    last = state.last_bar
    if last is None:
        raise NoDataError(f"no closed {settings.timeframe} bar stored for {symbol!r} on {settings.exchange!r}")
    age = (stamp - last).total_seconds() - step
    limit = signal_max_age(settings)
    if age > limit:
        raise StaleDataError(f"{symbol}: latest bar {last:%Y-%m-%d %H:%M} closed {age:.0f} s ago "
                             f"(more than {limit:.0f} s, BRAIN_SIGNAL_MAX_AGE); collect fresh bars, or to decide "
                             f"a past bar pass at=..., e.g. predict({symbol!r}, at=\"{last:%Y-%m-%d %H:%M}Z\") "
                             "(not recorded as served)", symbol=symbol, last_bar=last, age_seconds=age)
    return last


def data_age(state: signal_rows.ServingState, settings: Settings, stamp: dt.datetime) -> float | None:
    """Seconds since the latest stored bar closed (None: no bar): what `_latest_bar` judges stale."""
    if state.last_bar is None:
        return None
    return (stamp - state.last_bar).total_seconds() - timeframe_seconds(settings.timeframe)


def historical(shared: Round, signal: Signal) -> bool:
    """Whether a decision is on a past bar rather than served live: it is not on the symbol's latest
    closed bar, or that bar is stale.  A live decision asked with `at` (the latest bar's time) is served."""
    state = shared.states.get(signal.symbol)
    if state is None or state.last_bar is None or signal.ts != state.last_bar:
        return True
    age = data_age(state, shared.settings, shared.stamp)
    return age is None or age > signal_max_age(shared.settings)


def expiry_reason(version: Any, model_age: float, max_age: float) -> str:
    return (f"model expired: {version.model_type} v{version.version} was trained on bars up to "
            f"{version.data_end:%Y-%m-%d %H:%M}, {model_age / 86400:.1f} days before this bar "
            f"(more than BRAIN_MODEL_MAX_AGE = {max_age / 86400:g} days)")


# How many of the last candles a signal's context keeps verbatim (the ones a collector may still
# rewrite: a correction among them is named, bar and field), and the span of each older digest.
RECENT_KEPT = FRESH_BARS
CHUNK_BARS = 144


def _ns(ts: pd.Series) -> np.ndarray:
    return np.ascontiguousarray(pd.DatetimeIndex(ts).as_unit("ns").asi8)


def _digest_of(ns: np.ndarray, values: np.ndarray) -> str:
    import hashlib

    h = hashlib.sha256(ns.tobytes())
    h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()[:16]


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _iso(ns: int) -> str:
    return (_EPOCH + dt.timedelta(microseconds=int(ns) // 1000)).isoformat()  # pd.Timestamp costs 30x more


def fingerprint(market: Mapping[str, pd.DataFrame | None]) -> dict[str, Any]:
    """What identifies the rows a decision read, small enough to keep with each signal: for the candles
    the first bar, the count, a digest per CHUNK_BARS bars and the last RECENT_KEPT bars verbatim; a
    digest of each other series.  Plain arrays, hashed once: it runs on every new decision."""
    candles = market.get("candles")
    out: dict[str, Any] = {}
    if candles is not None and len(candles):
        ns = _ns(candles["ts"])
        values = np.column_stack([candles[c].to_numpy(dtype="float64") for c in CANDLE_FIELDS])
        cut = max(len(ns) - RECENT_KEPT, 0)
        out["candles"] = {
            "first": _iso(ns[0]), "n": int(len(ns)),
            "chunks": [[_iso(ns[i]), _digest_of(ns[i:min(i + CHUNK_BARS, cut)], values[i:min(i + CHUNK_BARS, cut)])]
                       for i in range(0, cut, CHUNK_BARS)],
            "recent": [[_iso(t), *[v if np.isfinite(v) else None for v in row.tolist()]]
                       for t, row in zip(ns[cut:], values[cut:])]}
    for kind in _KINDS[1:]:
        frame = market.get(kind)
        if frame is not None and len(frame):
            ns = _ns(frame["ts"])
            values = frame.drop(columns=["ts"]).select_dtypes("number").to_numpy(dtype="float64", na_value=np.nan)
            out[kind] = {"first": _iso(ns[0]), "n": int(len(ns)), "digest": _digest_of(ns, values)}
    return out


CANDLE_FIELDS = ("open", "high", "low", "close", "volume")


def decision_context(champion: Any, choices: Mapping[str, signal_rows.Choice],
                     sizer: signal_rows.SizerVersion | None, market: Mapping[str, pd.DataFrame | None]
                     ) -> dict[str, Any]:
    """The registry state a decision read and the fingerprint of its rows, kept with the signal so the
    nightly audit can decide the same bar again with the same versions (`service.audit`)."""
    return {"champion": None if champion is None else [champion.model_type, int(champion.version)],
            "choices": {r: [c.model_type, c.version, bool(c.tradeable), registry.finite(c.confidence)]
                        for r, c in choices.items()},
            "sizer": None if sizer is None else [int(sizer.version), sizer.artifact_sha256],
            "rows": fingerprint(market)}


def _choices_identity(choices: Mapping[str, signal_rows.Choice]) -> tuple[Any, ...]:
    """The regime choices as a decision's input identity.  Values are compared as text, so that a NaN
    confidence read again still names the same inputs."""
    return tuple(sorted((regime, tuple(sorted((k, str(v)) for k, v in vars(c).items())))
                        for regime, c in choices.items()))


def _sentiment(conn: sa.Connection, symbol: str, candles: pd.DataFrame, bar: dt.datetime,
               timeframe: str) -> pd.DataFrame | None:
    """The symbol's sentiment rows from the window's first candle to the bar's close (the features read
    no row before the first candle and none known after the close)."""
    if candles.empty:
        return None
    close = bar + dt.timedelta(seconds=timeframe_seconds(timeframe))
    rows = store.read_sentiment(conn, symbol, start=candles["ts"].iloc[0].to_pydatetime(), end=close)
    return rows if len(rows) else None


def _selection_trades(choices: dict[str, signal_rows.Choice], source: tuple[str, int] | None) -> bool:
    """Whether the symbol's current selection trades `source` (the version a sizer was trained on) in some
    regime.  The sizer step trains only then (`steps.sizer`); once the selection stops trading it, the
    newest sizer is a leftover of a day when it did, and a decision by the champion (an unknown regime's
    fallback) must not be sized by it."""
    return source is not None and any(
        c.tradeable and (c.model_type, c.version) == source for c in choices.values())


def _sizer_rows(sizer: Any) -> int:
    """Predictions the sizer's observation reads (see `_sized`)."""
    cfg = sizer.config
    return cfg.hit_window + cfg.vol_window + cfg.delay + 1


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
    step = timeframe_seconds(settings.timeframe)
    expected = pd.Timestamp(stamp).floor(f"{step}s").to_pydatetime() - dt.timedelta(seconds=step)
    return Signal(error.symbol, expected, None, FLAT, None, None, 0, 0.0, None, False,
                  f"stale data: {error}; flat until fresh bars arrive", float(error.age_seconds))


# --- rows ----------------------------------------------------------------------------------------

def to_row(signal: Signal, served_at: dt.datetime, stale: bool = False) -> dict[str, Any]:
    return {"symbol": signal.symbol, "ts": signal.ts, "model_type": signal.model_type,
            "version": signal.version if signal.version is not None else signal_rows.NO_VERSION,
            "regime": signal.regime, "prediction": signal.prediction, "position": int(signal.position),
            "size": float(signal.size), "confidence": signal.confidence, "tradeable": bool(signal.tradeable),
            "stale": stale, "reason": signal.reason, "artifact_sha256": signal.artifact_sha256,
            "data_age_seconds": float(signal.data_age_seconds), "served_at": served_at,
            # NULL when nothing was judged (a flat or stale signal, a version without a description).
            "in_distribution": None if signal.dissimilarity is None else bool(signal.in_distribution),
            "dissimilarity": signal.dissimilarity,
            "model_age_seconds": signal.model_age_seconds, "context": signal.context}


def from_row(row: dict[str, Any]) -> Signal:
    version = int(row["version"])
    return Signal(row["symbol"], row["ts"], row["regime"], row["model_type"],
                  None if version == signal_rows.NO_VERSION else version, row["prediction"], int(row["position"]),
                  float(row["size"]), row["confidence"], bool(row["tradeable"]), row["reason"],
                  float(row["data_age_seconds"]), row["artifact_sha256"],
                  in_distribution=row.get("in_distribution") is not False, dissimilarity=row.get("dissimilarity"),
                  model_age_seconds=row.get("model_age_seconds"), context=row.get("context"))


def latest_signal(engine: sa.Engine, symbol: str) -> Signal | None:
    row = signal_rows.latest(engine, symbol)
    return from_row(row) if row is not None else None
