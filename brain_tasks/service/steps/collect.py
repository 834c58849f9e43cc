"""The collection service: source -> quality checks -> Brain, what the collect tasks and `brain-tasks ingest` run.

A collection resumes from the last stored timestamp (and reaches back to re-fetch open gaps), writes
with idempotent upserts, records every finding in data_quality_logs and resolves the ones it no longer
sees.  Bad input raises `DataError` only after its findings are recorded; a batch with defects may add
rows but never rewrites rows already stored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain import tables, store
from brain_tasks.brain.findings import open_findings, record_findings, resolve_findings
from brain_tasks.errors import DataError
from brain_tasks.market.frames import BadRequest, timeframe_delta, validate_symbol
from brain_tasks import timekeeping
from brain_tasks.timekeeping import parse_utc
from brain_tasks.market.quality import (JUMP_WINDOW, VALIDATORS, Finding, Validated, coverage, find_gaps,
                                        stale_finding, validate_candles)
from brain_tasks.market.sources import CcxtSource, FileSource, FreqtradeSource, MarketSource, SyntheticSource
from brain_tasks.market.symbols import symbol_label
from brain_tasks.settings import get_settings


class BadBatch(DataError):
    """A batch with defects: its findings are recorded and its fit rows stored; ``summary`` says what."""

    check = "bad_batch"

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class _Kind:
    table: sa.Table
    source_col: str        # 'exchange' or 'source'
    bars: bool             # sampled on a grid (gaps, staleness, resume at last + step)
    has_timeframe: bool    # the table's key has a timeframe column


KINDS: dict[str, _Kind] = {
    "candles": _Kind(tables.Candle.__table__, "exchange", True, True),
    "funding": _Kind(tables.FundingRate.__table__, "exchange", True, False),
    "open_interest": _Kind(tables.OpenInterest.__table__, "exchange", True, False),
    "liquidations": _Kind(tables.Liquidation.__table__, "exchange", False, False),
    "sentiment": _Kind(tables.SentimentScore.__table__, "source", False, False),
}
_EVENT_LOOKBACK = pd.Timedelta(days=7)


def _iso(ts: pd.Timestamp | None) -> str | None:
    return None if ts is None else ts.isoformat()


def _key(spec: _Kind, source: MarketSource, symbol: str, timeframe: str | None) -> dict[str, str]:
    key = {spec.source_col: source.name, "symbol": symbol}
    if spec.has_timeframe:
        key["timeframe"] = timeframe or ""
    return key


def _stored_ts(engine: sa.Engine, spec: _Kind, key: dict[str, str], start: pd.Timestamp | None,
               end: pd.Timestamp | None) -> pd.Series:
    return store.stored_timestamps(engine, spec.table, key, start, end)


def _fetch(source: MarketSource, kind: str, symbol: str, timeframe: str | None, since: Any, until: Any) -> pd.DataFrame:
    if kind == "candles":
        return source.fetch_candles(symbol, timeframe, since, until)
    if kind == "open_interest":
        return source.fetch_open_interest(symbol, timeframe, since, until)
    return getattr(source, f"fetch_{kind}")(symbol, since, until)


def _validate(kind: str, df: pd.DataFrame, step_tf: str | None, now: pd.Timestamp, fallback: pd.Timestamp,
              max_bar_ratio: float, reference_closes: list[float]) -> Validated:
    if kind == "candles":
        return validate_candles(df, step_tf, now=now, fallback_ts=fallback, max_bar_ratio=max_bar_ratio,
                                reference_closes=reference_closes)
    if kind == "funding":
        return VALIDATORS[kind](df, interval=step_tf, now=now, fallback_ts=fallback)
    return VALIDATORS[kind](df, now=now, fallback_ts=fallback)


def collect(engine: sa.Engine, source: MarketSource, kind: str, symbol: str, *, timeframe: str | None = None,
            since: Any = None, until: Any = None, now: Any = None, max_rows: int = 500_000,
            lookback_bars: int = 1000, backfill_bars: int = 5000,
            max_bar_ratio: float | None = None) -> dict[str, Any]:
    """Collect one kind of data of one symbol into the Brain and return a JSON-safe summary.

    ``since=None`` resumes after the last stored row (reaching back to the oldest open gap within
    ``backfill_bars``); ``timeframe`` is the bar of candles / open interest and the settlement
    interval of funding (default: the source's, else 8h).  Collecting the same window twice
    changes nothing.  A candle more than ``max_bar_ratio`` (default: the BRAIN_MAX_BAR_RATIO setting)
    times away from the bars before it is rejected as implausible.
    """
    now_ts = parse_utc(now) if now is not None else pd.Timestamp(timekeeping.now())
    dq_tf = timeframe if kind in ("candles", "open_interest") else None
    explicit_since = since is not None
    fallback = now_ts.floor("D")
    try:
        if kind not in KINDS:
            raise BadRequest(f"unknown data kind {kind!r}; expected one of {sorted(KINDS)}", check="unknown_kind")
        spec = KINDS[kind]
        validate_symbol(symbol)
        since_ts, until_ts = parse_utc(since), parse_utc(until)
        if since_ts is not None:
            fallback = since_ts
        if since_ts is not None and until_ts is not None and since_ts >= until_ts:
            raise BadRequest(f"empty window: since {since_ts} is not before until {until_ts}", check="bad_window")
        step_tf = _step_timeframe(source, kind, symbol, timeframe)
        step = timeframe_delta(step_tf) if step_tf else None
        key = _key(spec, source, symbol, timeframe)
        start, stored_before = _resume(engine, spec, source, kind, symbol, key, dq_tf, since_ts, step, now_ts,
                                       lookback_bars, backfill_bars)
        end = until_ts if until_ts is not None else now_ts
        # A file source ends where its data ends; only an open-ended request to a live source is unbounded.
        bounded = until_ts is not None or _live(source)
        if step is not None and start is not None and bounded and (end - start) / step > max_rows:
            raise BadRequest(f"{kind} {symbol} {step_tf}: {int((end - start) / step)} rows from {start} to {end} "
                             f"exceed the limit of {max_rows}; collect a shorter window", check="too_large")
        # A file is read whole and split here: rows before the resume point that are not stored (older
        # than the stored history, or in a gap beyond the backfill) are not ingested, and say so.
        resumed_file = isinstance(source, (FreqtradeSource, FileSource)) and not explicit_since and start is not None
        df = _fetch(source, kind, symbol, timeframe if kind in ("candles", "open_interest") else None,
                    None if resumed_file else start, until_ts)
        # Funding settlements are stored snapped to their interval (the validator's rule): compare them so.
        snap = step if kind == "funding" else None
        skipped = _not_ingested(engine, spec, key, kind, df, start, snap) if resumed_file else []
        if resumed_file:
            df = df[~(df["ts"] < start)].reset_index(drop=True)
        if df.empty and spec.bars and step is not None:
            expected = None if start is None else int((end - start) / step)  # bars that could have closed
            if expected is None or (explicit_since and expected >= 1) or (_live(source) and expected >= 2):
                raise BadRequest(f"{source.name} returned no {kind} for {symbol} from {_iso(start)} to {_iso(end)}",
                                 check="empty")
        ratio = max_bar_ratio if max_bar_ratio is not None else get_settings().max_bar_ratio
        before = _closes_before(engine, source, symbol, timeframe, start, step) if kind == "candles" else []
        validated = _validate(kind, df, step_tf, now_ts, fallback, ratio, before)
    except DataError as exc:
        check = getattr(exc, "check", "data_error")
        finding = Finding(kind[:16], check, "error", fallback, None,
                          {"message": str(exc)[:2000], "error": type(exc).__name__, "timeframe": timeframe,
                           "since": _iso(parse_utc(since)) if _readable(since) else repr(since),
                           "until": _iso(parse_utc(until)) if _readable(until) else repr(until)})
        # symbol_label: the finding must be storable even when the symbol is what was wrong (a NUL byte).
        record_findings(engine, getattr(source, "name", "?"), symbol_label(symbol), dq_tf, [finding], now=now_ts)
        raise

    clean = validated.clean
    defects = validated.defects
    # A defective batch may add rows but must not rewrite what is stored.
    stored = (store.upsert(engine, spec.table, clean.assign(**key), conflict="nothing" if defects else "update")
              if len(clean) else 0)

    findings = list(validated.findings) + skipped
    if spec.bars and step is not None:
        lo = (start - step) if start is not None else None
        series = _stored_ts(engine, spec, key, lo, until_ts)
        findings += find_gaps(series, step, kind)
        if _live(source) and until_ts is None and len(series):
            findings += stale_finding(series.iloc[-1], step, kind, now=now_ts)
    recorded = record_findings(engine, source.name, symbol, dq_tf, findings, now=now_ts)
    # Per-day coverage is judged by check_stored over whole days, not by a collection window.
    resolved = resolve_findings(engine, source.name, symbol, dq_tf, kind, window_start=start, window_end=until_ts,
                                still_open=findings, now=now_ts, skip_checks=("coverage",))
    summary = {
        "source": source.name, "kind": kind, "symbol": symbol, "timeframe": dq_tf or "",
        "window": {"since": _iso(start), "until": _iso(until_ts)},
        "fetched": int(len(df)), "stored": int(stored), "rejected": int(len(validated.rejected)),
        "withheld": int(validated.withheld),
        "first": _iso(validated.clean["ts"].min()) if len(validated.clean) else None,
        "last": _iso(validated.clean["ts"].max()) if len(validated.clean) else None,
        "findings": dict(Counter(f.check for f in findings)), "recorded": recorded, "resolved": resolved,
        "not_ingested": sum(int(f.details["rows"]) for f in skipped),
    }
    if defects:
        rows: Counter[str] = Counter()
        for f in defects:
            rows[f.check] += int(f.details.get("rows", 1))
        what = ", ".join(f"{c}: {n}" for c, n in rows.items())
        raise BadBatch(f"{source.name} {kind} {symbol}: bad input (rows per check: {what}); "
                       f"{summary['rejected']} rejected, {summary['stored']} stored, details in data_quality_logs",
                       summary)
    return summary


def _not_ingested(engine: sa.Engine, spec: _Kind, key: dict[str, str], kind: str, df: pd.DataFrame,
                  start: pd.Timestamp, snap: pd.Timedelta | None = None) -> list[Finding]:
    """A finding for the rows of a file dated before ``start`` (where the collection resumes) that are not
    stored: they are left out, and a row left out without a word was how 5 bars of a file vanished."""
    before = df["ts"][df["ts"] < start]
    if snap is not None:
        before = before.dt.round(snap)
    if before.empty:
        return []
    missing = before[~before.isin(_stored_ts(engine, spec, key, before.min(), start))]
    if missing.empty:
        return []
    return [Finding(kind[:16], "not_ingested", "warning", missing.min(), missing.max(), {
        "rows": int(len(missing)),
        "message": f"{len(missing)} rows dated before {start.isoformat()}, where this collection resumed after the "
                   f"stored {kind}, are not stored and were not ingested (older than the stored history, or in a gap "
                   f"beyond the backfill); collect with an explicit since to load them",
        "examples": [t.isoformat() for t in missing.head(5)]})]


def _closes_before(engine: sa.Engine, source: MarketSource, symbol: str, timeframe: str | None,
                   start: pd.Timestamp | None, step: pd.Timedelta | None) -> list[float]:
    """The stored closes of the bars just before ``start``: what a new batch's first bars are judged by."""
    if start is None or step is None or timeframe is None:
        return []
    frame = store.read_candles(engine, source.name, symbol, timeframe, start=start - step * (4 * JUMP_WINDOW),
                               end=start)
    return [float(c) for c in frame["close"].tail(JUMP_WINDOW)]


def _live(source: MarketSource) -> bool:
    # Sources written before `live` existed follow no clock: treat them like files.
    return bool(getattr(source, "live", False))


def _readable(value: Any) -> bool:
    try:
        parse_utc(value)
        return True
    except DataError:
        return False


def _step_timeframe(source: MarketSource, kind: str, symbol: str, timeframe: str | None) -> str | None:
    if kind in ("candles", "open_interest"):
        if timeframe is None:
            raise BadRequest(f"{kind} need a timeframe", check="invalid_timeframe")
        timeframe_delta(timeframe)
        return timeframe
    if kind == "funding":
        of_source = getattr(source, "funding_interval", None)
        interval = timeframe or (of_source(symbol) if callable(of_source) else "8h")
        timeframe_delta(interval)
        return interval
    return None


def _resume(engine: sa.Engine, spec: _Kind, source: MarketSource, kind: str, symbol: str, key: dict[str, str],
            dq_tf: str | None, since: pd.Timestamp | None, step: pd.Timedelta | None, now: pd.Timestamp,
            lookback_bars: int, backfill_bars: int) -> tuple[pd.Timestamp | None, bool]:
    """Where to start: the caller's ``since``, else after the last stored row or at the oldest open gap."""
    last = store.last_timestamp(engine, spec.table.name, **key)
    last = parse_utc(last)
    if since is not None:
        return since, last is not None
    if last is None:
        if not _live(source):
            return None, False
        return (now - step * lookback_bars if step is not None else now - _EVENT_LOOKBACK), False
    if step is None:
        return last, True  # events: re-read the last instant, the upsert makes the overlap harmless
    start = last + step
    horizon = last - step * backfill_bars
    gaps = [parse_utc(g[0]) for g in open_findings(engine, source.name, symbol, dq_tf, kind, "gap")]
    gaps = [g for g in gaps if g >= horizon]
    if gaps:
        start = min(start, min(gaps) - step)
    return start, True


INPUTS = ("candles", "funding")  # what a freqtrade data directory holds (it has no open-interest files)


def ingest_freqtrade(engine: sa.Engine, path: str | Path, *, symbols: list[str] | None = None, timeframe: str = "5m",
                     exchange: str = "freqtrade", now: Any = None) -> dict[str, Any]:
    """Load a freqtrade directory's candles (``timeframe``) and funding files into the Brain (idempotent).

    Candles and funding are independent inputs: each one present for a pair is ingested (a folder of
    funding files alone stores funding), and ``skipped`` names an input a pair lacks (no funding is
    expected of a spot pair).  One bad pair does not stop the others.  ``failed`` holds the inputs that
    could not be ingested at all (and a requested pair with no file); an input with bad rows stores its
    good ones, its row counts them in ``rejected`` with the reason in ``errors`` (and data_quality_logs).
    ``symbols`` are the pairs whose candles were ingested.
    """
    source = FreqtradeSource(path, name=exchange)
    present = {"candles": set(source.symbols(timeframe)), "funding": set(source.funding_symbols())}
    wanted = list(symbols) if symbols else sorted(set().union(*present.values()))
    out: dict[str, Any] = {"source": exchange, "path": str(path), "timeframe": timeframe, "symbols": [],
                           "candles": {}, "funding": {}, "skipped": {}, "failed": {}, "stored": 0, "rejected": 0}
    for symbol in wanted:
        if not any(symbol in pairs for pairs in present.values()):
            out["failed"][f"candles:{symbol}"] = f"no {timeframe} candle or funding-rate file for {symbol} under {path}"
            continue
        for kind in INPUTS:
            if symbol not in present[kind]:
                if kind == "candles" or ":" in symbol:  # a spot pair has no funding to skip
                    what = f"{timeframe} candle" if kind == "candles" else "funding-rate"
                    out["skipped"][f"{kind}:{symbol}"] = f"no {what} file for {symbol} under {path}"
                continue
            error = None
            try:
                s = collect(engine, source, kind, symbol, timeframe=timeframe if kind == "candles" else None, now=now)
            except BadBatch as exc:
                s, error = exc.summary, str(exc)
            except DataError as exc:
                out["failed"][f"{kind}:{symbol}"] = str(exc)
                continue
            out[kind][symbol] = {k: s.get(k, 0) for k in ("fetched", "stored", "rejected", "not_ingested", "first",
                                                           "last", "findings")}
            if error:
                out[kind][symbol]["error"] = error
            out["stored"] += s["stored"]
            out["rejected"] += s["rejected"]
            if kind == "candles":
                out["symbols"].append(symbol)
    return out


def source_for(settings: Any) -> MarketSource:
    """The source the collect tasks use for ``settings.exchange``: the freqtrade sample directory,
    the synthetic market (seeded by ``settings.seed``) or a ccxt exchange id."""
    exchange = settings.exchange
    if exchange == "freqtrade":
        return FreqtradeSource(settings.sample_dir, name="freqtrade")
    if exchange == "synthetic":
        return SyntheticSource(settings.seed)
    return CcxtSource(exchange)


def check_stored(engine: sa.Engine, exchange: str, symbols: list[str], timeframe: str, *, now: Any = None,
                 min_coverage: float = 0.95) -> dict[str, Any]:
    """Re-check the stored candles of ``symbols``: gaps, and days whose coverage is below ``min_coverage``,
    recorded as findings (and resolved once the stored series no longer shows them)."""
    now_ts = parse_utc(now) if now is not None else pd.Timestamp(timekeeping.now())
    out: dict[str, Any] = {"exchange": exchange, "timeframe": timeframe, "symbols": {}}
    for symbol in symbols:
        candles = store.read_candles(engine, exchange, symbol, timeframe)
        if candles.empty:
            out["symbols"][symbol] = {"rows": 0, "status": "no data"}
            continue
        candles = candles.assign(ts=pd.to_datetime(candles["ts"], utc=True))
        cov = coverage(candles, timeframe)
        findings = find_gaps(candles["ts"], timeframe, "candles") + coverage_findings(cov, min_coverage)
        record_findings(engine, exchange, symbol, timeframe, findings, now=now_ts)
        resolved = resolve_findings(engine, exchange, symbol, timeframe, "candles", window_start=None,
                                    window_end=None, still_open=findings, now=now_ts, checks=("gap", "coverage"))
        gaps = [f for f in findings if f.check == "gap"]
        out["symbols"][symbol] = {
            "rows": int(len(candles)), "first": _iso(candles["ts"].min()), "last": _iso(candles["ts"].max()),
            "gaps": len(gaps), "missing_bars": int(sum(g.details["missing"] for g in gaps)),
            "min_day_coverage": float(cov["ratio"].min()), "mean_day_coverage": float(cov["ratio"].mean()),
            "days_below": len(findings) - len(gaps), "resolved": resolved}
    return out


def coverage_findings(cov: pd.DataFrame, min_coverage: float) -> list[Finding]:
    """One 'coverage' finding per day whose ratio of bars present is below ``min_coverage``."""
    day = pd.Timedelta(days=1)
    return [Finding("candles", "coverage", "info", row.day, row.day + day - pd.Timedelta(1, "us"),
                    {"message": f"{row.present} of {row.expected} bars", "expected": int(row.expected),
                     "present": int(row.present), "ratio": float(row.ratio)})
            for row in cov.itertuples() if row.ratio < min_coverage]
