"""The signals table: every decision served to the Engine, written once, read back by symbol.

Natural key (symbol, bar ts, model type, version): writing the same decision twice leaves the first
row untouched (insert ... on conflict do nothing), because the row is a record of what the Engine was
told and when, not a cache to refresh.  version 0 stands for "no model" (model type 'flat').
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd
import sqlalchemy as sa

from brain_tasks.timekeeping import to_utc
from brain_tasks.brain import registry, store
from brain_tasks.brain.tables import SignalRecord

# A decision's reads run on one connection when serving hands one in (the storage module's rule).
from brain_tasks.brain.store import connection
from brain_tasks.vocabulary import ChampionStatus

NO_VERSION = 0
COLUMNS = tuple(c.name for c in SignalRecord.__table__.columns)
Bind = sa.Engine | sa.Connection


def write(engine: Bind, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert `rows` (dicts with every column); a row whose key exists is left as it is.  Returns the
    number of new rows."""
    if not rows:
        return 0
    if len(rows) > 1:
        return store.upsert(engine, SignalRecord.__table__, [dict(r) for r in rows], conflict="nothing")
    # One row (the common case, once per predict): a plain statement skips upsert's frame building.
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    row = {**rows[0], "ts": to_utc(rows[0]["ts"])}
    # RETURNING counts the inserted row on every driver (psycopg reports rowcount -1 here).
    stmt = insert(SignalRecord).values(**row).on_conflict_do_nothing().returning(SignalRecord.symbol)
    if isinstance(engine, sa.Connection):
        return len(engine.execute(stmt).all())
    with engine.begin() as conn:
        return len(conn.execute(stmt).all())


def _where(symbol: str | None, model_type: str | None, version: int | None, start: Any, end: Any) -> list[Any]:
    t = SignalRecord
    conditions: list[Any] = []
    if symbol is not None:
        conditions.append(t.symbol == symbol)
    if model_type is not None:
        conditions.append(t.model_type == model_type)
    if version is not None:
        conditions.append(t.version == version)
    if start is not None:
        conditions.append(t.ts >= to_utc(start, "start"))
    if end is not None:
        conditions.append(t.ts < to_utc(end, "end"))
    return conditions


def latest(engine: sa.Engine, symbol: str) -> dict[str, Any] | None:
    """The newest signal of `symbol`: latest bar first, then the latest served."""
    stmt = (sa.select(SignalRecord.__table__).where(SignalRecord.symbol == symbol)
            .order_by(SignalRecord.ts.desc(), SignalRecord.served_at.desc()).limit(1))
    with engine.connect() as conn:
        row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


def find(engine: sa.Engine, symbol: str, ts: dt.datetime, model_type: str, version: int) -> dict[str, Any] | None:
    """The stored signal of exactly this key, if any."""
    stmt = sa.select(SignalRecord.__table__).where(
        SignalRecord.symbol == symbol, SignalRecord.ts == to_utc(ts), SignalRecord.model_type == model_type,
        SignalRecord.version == version)
    with engine.connect() as conn:
        row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


def listing(engine: sa.Engine, symbol: str | None = None, limit: int | None = 50) -> list[dict[str, Any]]:
    """The newest signals (of `symbol`, or of every symbol), newest bar first."""
    stmt = (sa.select(SignalRecord.__table__).where(*_where(symbol, None, None, None, None))
            .order_by(SignalRecord.ts.desc(), SignalRecord.symbol, SignalRecord.served_at.desc()))
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def frame(engine: sa.Engine, symbol: str | None = None, *, model_type: str | None = None,
          version: int | None = None, start: Any = None, end: Any = None) -> pd.DataFrame:
    """Signals as a frame sorted by symbol and bar (ts is UTC)."""
    return store.read_table(engine, SignalRecord.__table__, where={
        k: v for k, v in (("symbol", symbol), ("model_type", model_type), ("version", version)) if v is not None},
        order_by=["symbol", "ts", "served_at"]).pipe(_between, start, end)


def _between(df: pd.DataFrame, start: Any, end: Any) -> pd.DataFrame:
    if start is not None:
        df = df[df["ts"] >= pd.Timestamp(to_utc(start))]
    if end is not None:
        df = df[df["ts"] < pd.Timestamp(to_utc(end))]
    return df.reset_index(drop=True)


def served_versions(engine: sa.Engine, symbol: str | None = None) -> list[tuple[str, str, int]]:
    """(symbol, model type, version) of every model that has served a signal."""
    stmt = (sa.select(SignalRecord.symbol, SignalRecord.model_type, SignalRecord.version).distinct()
            .where(SignalRecord.version != NO_VERSION, *_where(symbol, None, None, None, None))
            .order_by(SignalRecord.symbol, SignalRecord.model_type, SignalRecord.version))
    with engine.connect() as conn:
        return [(r.symbol, r.model_type, int(r.version)) for r in conn.execute(stmt)]


def with_following_bars(engine: sa.Engine, exchange: str, timeframe: str, bar_seconds: int, symbol: str,
                        model_type: str, version: int, following: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One model's signals of `symbol` and the candles from its first signalled bar to `following` bars
    past its last one (what a live return needs: the bars that came after each decision)."""
    signals = frame(engine, symbol, model_type=model_type, version=version)
    if signals.empty:
        return signals, pd.DataFrame(columns=["ts", "open", "high", "low", "close", "volume"])
    step = pd.Timedelta(seconds=bar_seconds)
    candles = store.read_candles(engine, exchange, symbol, timeframe, start=signals["ts"].iloc[0],
                                 end=signals["ts"].iloc[-1] + (following + 1) * step)
    return signals, candles



def last_closed_bar(engine: Bind, exchange: str, symbol: str, timeframe: str, bar_seconds: int,
                    now: dt.datetime) -> dt.datetime | None:
    """The open time of the symbol's latest stored bar that had closed by `now` (a collector may have
    stored the bar still in progress: deciding on it would use prices not final yet)."""
    from brain_tasks.brain.tables import Candle

    stmt = sa.select(sa.func.max(Candle.ts)).where(
        Candle.exchange == exchange, Candle.symbol == symbol, Candle.timeframe == timeframe,
        Candle.ts <= to_utc(now) - dt.timedelta(seconds=bar_seconds))
    with connection(engine) as conn:
        value = conn.execute(stmt).scalar_one()
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class RowCounts(NamedTuple):
    """Stored rows of each market series serving reads, named as serving's frames are."""

    candles: int
    funding: int
    open_interest: int
    liquidations: int


# The tables counted, in `RowCounts` order, and the label of each count in a query's result.
_COUNTED_TABLES = (("candles", "candles"), ("funding", "funding_rates"), ("open_interest", "open_interest"),
                   ("liquidations", "liquidations"))
_OLD = tuple(f"old_{kind}" for kind, _ in _COUNTED_TABLES)
_RECENT = tuple(f"recent_{kind}" for kind, _ in _COUNTED_TABLES)


def _counts(row: Mapping[str, Any], labels: Sequence[str]) -> RowCounts:
    return RowCounts(*(int(row[label]) for label in labels))


@dataclass(frozen=True)
class StoredCounts:
    """Rows stored of a serving window: `old` in [start, frozen_end) (None when not counted), `recent`
    from frozen_end up to the bar decided (candles) and its close (events)."""

    start: dt.datetime
    frozen_end: dt.datetime
    old: RowCounts | None
    recent: RowCounts


def stored_counts(engine: Bind, exchange: str, symbol: str, timeframe: str, start: dt.datetime,
                  frozen_end: dt.datetime, candles_end: dt.datetime,
                  events_end: dt.datetime, check_old: bool = True) -> StoredCounts:
    """Rows stored of candles, funding, open interest and liquidations in [start, frozen_end), and after
    it up to candles_end (candles) / events_end (the rest), in one round trip.  Serving's cache of old
    rows is valid while the old counts match the rows it holds (a backfilled gap or a late event
    changes one); the recent ones say which recent series need reading at all.  With `check_old`
    False only the recent ones are counted (`old` is None)."""
    from brain_tasks.brain.tables import Candle, FundingRate, Liquidation, OpenInterest

    start, frozen_end = to_utc(start), to_utc(frozen_end)
    candles_end, events_end = to_utc(candles_end), to_utc(events_end)
    models = (Candle, FundingRate, OpenInterest, Liquidation)
    old = [_count(m, exchange, symbol, timeframe, start, frozen_end).label(label)
           for m, label in zip(models, _OLD)] if check_old else []
    recent = [_count(m, exchange, symbol, timeframe, frozen_end, candles_end if m is Candle else events_end)
              .label(label) for m, label in zip(models, _RECENT)]
    with connection(engine) as conn:
        row = conn.execute(sa.select(*old, *recent)).mappings().one()
    return StoredCounts(start, frozen_end, _counts(row, _OLD) if check_old else None, _counts(row, _RECENT))


class Champion(NamedTuple):
    """A symbol's champion version."""

    model_type: str
    version: int


class SizerVersion(NamedTuple):
    """A symbol's newest position-sizer version."""

    version: int
    artifact_sha256: str


@dataclass(frozen=True)
class Choice:
    """The model chosen for one regime (a row of the regime choices; `registry.regime_choice`'s fields)."""

    model_type: str
    version: int | None                          # None: no model (model type 'flat')
    confidence: float | None
    tradeable: bool
    reason: str | None
    as_of: dt.date | None


@dataclass(frozen=True)
class ServingState:
    """What a decision reads of a symbol besides its market rows (see `serving_state`)."""

    last_bar: dt.datetime | None                  # open time of the latest stored bar closed by `now`
    champion: Champion | None
    choices: dict[str, Choice]                    # by regime
    sizer: SizerVersion | None                    # newest sizer version
    # With a window (start, frozen_end): `stored_counts` of it, up to the bar closed by `now`.
    counts: StoredCounts | None = None


def _count(model: Any, exchange: str, symbol: str, timeframe: str, lo: dt.datetime, hi: dt.datetime) -> Any:
    from brain_tasks.brain.tables import Candle

    extra = [model.timeframe == timeframe] if model is Candle else []
    return (sa.select(sa.func.count()).select_from(model)
            .where(model.exchange == exchange, model.symbol == symbol, model.ts >= lo, model.ts < hi, *extra)
            .scalar_subquery())


def _state(found: Mapping[str, Any]) -> ServingState:
    return ServingState(found["last_bar"], found["champion"], found["choices"], found["sizer"], found["counts"])


def _choice(r: Mapping[str, Any]) -> Choice:
    return Choice(r["model_type"], r["version"], r["confidence"], bool(r["tradeable"]), r["reason"], r["as_of"])


def _utc(ts: dt.datetime) -> dt.datetime:
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def serving_state(bind: Bind, exchange: str, timeframe: str, bar_seconds: int, symbols: Sequence[str],
                  now: dt.datetime, windows: Mapping[str, tuple[dt.datetime, dt.datetime]] | None = None,
                  sizer_type: str = "ppo_sizer") -> dict[str, ServingState]:
    """Each symbol's latest closed bar (as `last_closed_bar`), champion, per-regime choices, newest
    `sizer_type` version (as `registry.latest_version`) and, for the symbols in `windows`, the stored
    row counts of `stored_counts` (old rows in [start, frozen_end); recent ones up to the bar closed
    by `now` and its close), for every symbol in one round trip: serving asked them one query at a
    time, and the round trips were most of a warm decision's SQL."""
    from brain_tasks.brain.tables import (
        Candle,
        FundingRate,
        Liquidation,
        ModelManifest,
        ModelRegistry,
        OpenInterest,
        RegimeChoice,
    )

    symbols = list(dict.fromkeys(symbols))
    if not symbols:
        return {}
    windows = windows or {}
    with connection(bind) as conn:
        if conn.dialect.name == "postgresql":
            return _serving_state_pg(conn, exchange, timeframe, bar_seconds, symbols, now, windows, sizer_type)
    step = dt.timedelta(seconds=bar_seconds)
    cut = to_utc(now) - step
    models = (Candle, FundingRate, OpenInterest, Liquidation)
    counts = [*_OLD, *_RECENT]
    types = {"regime": RegimeChoice.regime.type, "model_type": RegimeChoice.model_type.type,
             "version": sa.Integer(), "ts": Candle.ts.type, "confidence": RegimeChoice.confidence.type,
             "tradeable": RegimeChoice.tradeable.type, "reason": RegimeChoice.reason.type,
             "sha": ModelManifest.artifact_sha256.type, "as_of": RegimeChoice.as_of.type,
             **{n: sa.Integer() for n in counts}}

    def row(kind: str, symbol: Any, **values: Any) -> list[Any]:
        name = symbol if hasattr(symbol, "label") else sa.literal(symbol, sa.String())
        return [sa.literal(kind, sa.String()).label("kind"), name.label("symbol"),
                *((values[k] if k in values else sa.cast(sa.null(), t)).label(k) for k, t in types.items())]

    parts: list[Any] = []
    for symbol in symbols:
        last = (sa.select(sa.func.max(Candle.ts)).where(
            Candle.exchange == exchange, Candle.symbol == symbol, Candle.timeframe == timeframe, Candle.ts <= cut)
            .scalar_subquery())
        n: dict[str, Any] = {}
        if symbol in windows:
            start, frozen_end = (to_utc(t) for t in windows[symbol])
            ends = [cut + dt.timedelta(microseconds=1) if m is Candle else cut + step for m in models]
            n = dict(zip(counts, [_count(m, exchange, symbol, timeframe, start, frozen_end) for m in models]
                         + [_count(m, exchange, symbol, timeframe, frozen_end, e) for m, e in zip(models, ends)]))
        parts.append(sa.select(*row("bar", symbol, ts=last, **n)))
        newest = (sa.select(ModelManifest.version, ModelManifest.artifact_sha256)
                  .where(ModelManifest.symbol == symbol, ModelManifest.model_type == sizer_type)
                  .order_by(ModelManifest.as_of.desc(), ModelManifest.version.desc()).limit(1).subquery())
        parts.append(sa.select(*row("sizer", symbol, version=newest.c.version, sha=newest.c.artifact_sha256)))
    parts.append(sa.select(*row("holder", ModelRegistry.symbol, model_type=ModelRegistry.model_type,
                                version=ModelRegistry.version))
                 .where(ModelRegistry.symbol.in_(symbols), registry.is_champion()))
    c = RegimeChoice
    parts.append(sa.select(*row("choice", c.symbol, regime=c.regime, model_type=c.model_type, version=c.version,
                                confidence=c.confidence, tradeable=c.tradeable, reason=c.reason, as_of=c.as_of))
                 .where(c.symbol.in_(symbols)))
    found = _empty(symbols)
    with connection(bind) as conn:
        result = conn.execute(sa.union_all(*parts)).mappings().all()
    for r in result:
        state = found[r["symbol"]]
        if r["kind"] == "bar":
            if r["ts"] is not None:
                state["last_bar"] = _utc(r["ts"])
            if r["symbol"] in windows:
                state["counts"] = _window_counts(windows[r["symbol"]], r)
        elif r["kind"] == "sizer" and r["sha"] is not None:
            state["sizer"] = SizerVersion(int(r["version"]), r["sha"])
        elif r["kind"] == "holder":  # the champion's row
            state["champion"] = Champion(r["model_type"], int(r["version"]))
        elif r["kind"] == "choice":
            state["choices"][r["regime"]] = _choice(r)
    return {s: _state(v) for s, v in found.items()}


def _empty(symbols: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each symbol's `ServingState` fields before the rows fill them (nothing stored: all None)."""
    return {s: {"last_bar": None, "champion": None, "choices": {}, "sizer": None, "counts": None} for s in symbols}


def _window_counts(window: tuple[dt.datetime, dt.datetime], row: Mapping[str, Any]) -> StoredCounts:
    start, frozen_end = window
    return StoredCounts(start, frozen_end, _counts(row, _OLD), _counts(row, _RECENT))


def recent_candles(bind: Bind, exchange: str, timeframe: str, starts: Mapping[str, dt.datetime],
                   end: dt.datetime) -> dict[str, pd.DataFrame]:
    """Each symbol's candles from its start (`starts`) up to `end` (excluded), in one query: the
    fresh tails `predict_many` re-reads of every symbol (a few rows each)."""
    if not starts:
        return {}
    frame = store.read_series(bind, "candles", ("symbol", "ts", "open", "high", "low", "close", "volume"),
                              {"exchange": exchange, "timeframe": timeframe}, min(starts.values()), end,
                              order_by=("symbol", "ts"), any_of={"symbol": list(starts)})
    out = {}
    groups = dict(tuple(frame.groupby("symbol", sort=False))) if len(frame) else {}
    for symbol, start in starts.items():
        part = groups.get(symbol)
        if part is None:
            part = frame.iloc[:0]
        part = part[part["ts"] >= pd.Timestamp(to_utc(start))].drop(columns="symbol").reset_index(drop=True)
        out[symbol] = part
    return out


# PostgreSQL: one statement of fixed shape over arrays of the symbols and their windows, whatever their
# number (a part per symbol, as below for other databases, cost 4 ms a symbol to build and plan).  Each
# per-symbol figure is an index lookup or an index-only count of one symbol's rows.
_COUNT = "(SELECT count(*) FROM {table} x WHERE x.exchange = :exchange AND x.symbol = w.symbol{tf} AND x.ts >= {lo} " \
         "AND x.ts < {hi})"
_STATE_PG = sa.text("""
WITH w AS (
    SELECT * FROM unnest(CAST(:symbols AS text[]), CAST(:starts AS timestamptz[]), CAST(:frozen AS timestamptz[]))
        AS w(symbol, start_ts, frozen_end))
SELECT 'bar' AS kind, w.symbol, NULL AS regime, NULL AS model_type, s.version,
       (SELECT max(c.ts) FROM candles c WHERE c.exchange = :exchange AND c.symbol = w.symbol
            AND c.timeframe = :timeframe AND c.ts <= :cut) AS ts,
       NULL::float8 AS confidence, NULL::boolean AS tradeable, NULL AS reason, NULL::date AS as_of,
       s.artifact_sha256 AS sha, """ + ", ".join(
    [_COUNT.format(table=t, tf=" AND x.timeframe = :timeframe" if k == "candles" else "", lo="w.start_ts",
                   hi="w.frozen_end") + f" AS {label}" for (k, t), label in zip(_COUNTED_TABLES, _OLD)]
    + [_COUNT.format(table=t, tf=" AND x.timeframe = :timeframe" if k == "candles" else "", lo="w.frozen_end",
                     hi=":candles_end" if k == "candles" else ":events_end") + f" AS {label}"
       for (k, t), label in zip(_COUNTED_TABLES, _RECENT)])
    + """
FROM w LEFT JOIN LATERAL (
    SELECT m.version, m.artifact_sha256 FROM model_manifests m WHERE m.symbol = w.symbol AND m.model_type = :sizer
    ORDER BY m.as_of DESC, m.version DESC LIMIT 1) s ON TRUE
UNION ALL
SELECT 'holder', r.symbol, NULL, r.model_type, r.version, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM model_registry r WHERE r.symbol = ANY(CAST(:symbols AS text[])) AND r.status = :champion
UNION ALL
SELECT 'choice', g.symbol, g.regime, g.model_type, g.version, NULL, g.confidence, g.tradeable, g.reason, g.as_of,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM regime_choices g WHERE g.symbol = ANY(CAST(:symbols AS text[]))
""")


def _serving_state_pg(conn: sa.Connection, exchange: str, timeframe: str, bar_seconds: int, symbols: list[str],
                      now: dt.datetime, windows: Mapping[str, tuple[dt.datetime, dt.datetime]],
                      sizer_type: str) -> dict[str, ServingState]:

    step = dt.timedelta(seconds=bar_seconds)
    cut = to_utc(now) - step
    rows = conn.execute(_STATE_PG, {
        "symbols": symbols, "exchange": exchange, "timeframe": timeframe, "cut": cut, "sizer": sizer_type,
        "champion": ChampionStatus.CHAMPION, "candles_end": cut + dt.timedelta(microseconds=1),
        "events_end": cut + step,
        "starts": [to_utc(windows[s][0]) if s in windows else None for s in symbols],
        "frozen": [to_utc(windows[s][1]) if s in windows else None for s in symbols]}).mappings().all()
    found = _empty(symbols)
    for r in rows:
        state = found[r["symbol"]]
        if r["kind"] == "bar":
            if r["ts"] is not None:
                state["last_bar"] = r["ts"].astimezone(dt.UTC)
            if r["sha"] is not None:
                state["sizer"] = SizerVersion(int(r["version"]), r["sha"])
            if r["symbol"] in windows:
                state["counts"] = _window_counts(windows[r["symbol"]], r)
        elif r["kind"] == "holder":  # the champion's row
            state["champion"] = Champion(r["model_type"], int(r["version"]))
        else:
            state["choices"][r["regime"]] = _choice(r)
    return {s: _state(v) for s, v in found.items()}
