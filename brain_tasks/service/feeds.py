"""News and social sentiment: feed -> items -> symbols -> scores -> hourly rows in ``sentiment_scores``.

What `brain_tasks.collect_sentiment` and ``brain-tasks ingest --source news`` run.  Only whole hours
are written: an hour's row is computed once its hour has ended, from every item of that hour the
fetch returned, so re-collecting gives the same rows.  A feed is collected incrementally by item
time: from the hour after its last stored row (the first time, ``news_lookback_hours`` back).  When a
feed's pages did not reach back that far, its oldest hour may be incomplete and is left out.

Feed-level problems are data-quality findings (``data_kind='news'``, symbol ``'*'``): ``malformed``
(not readable: nothing of it is stored), ``malformed_item`` (entries left out), ``rejected`` (HTTP 4xx),
``empty``, ``stale`` (newest item older than ``news_stale_hours``), ``truncated`` and ``future``
(items dated after the collection).  A later healthy collection resolves them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain import store
from brain_tasks.brain.findings import record_findings, resolve_findings
from brain_tasks.errors import DataError, TransientError
from brain_tasks import timekeeping
from brain_tasks.timekeeping import parse_utc
from brain_tasks.market.news import (
    DATA_KIND,
    Fetched,
    Http,
    NewsFeed,
    Tagger,
    base_asset,
    dedupe,
    make_feed,
    parse_feeds,
    parse_keywords,
    read_items_file,
)
from brain_tasks.market.quality import Finding
from brain_tasks.market.sentiment import HOUR, Scorer, VaderScorer, aggregate_hourly, score_items

ANY_SYMBOL = "*"
# Checks this module evaluates on every successful fetch, so their absence resolves an open finding.
FEED_CHECKS = ("malformed", "malformed_item", "rejected", "empty", "stale", "truncated", "future")
# An item dated this far past the collection time is a wrong clock or time zone, not news from the future.
FUTURE_TOLERANCE = pd.Timedelta(minutes=5)
LOOKBACK = pd.Timedelta(hours=72)
STALE_AFTER = pd.Timedelta(hours=24)


def _iso(ts: pd.Timestamp | None) -> str | None:
    return None if ts is None or pd.isna(ts) else ts.isoformat()


def _record_failure(engine: sa.Engine, source: str, exc: DataError, at: pd.Timestamp, now: pd.Timestamp) -> None:
    finding = Finding(DATA_KIND, getattr(exc, "check", "data_error"), "error", at, None,
                      {"message": str(exc)[:2000], "error": type(exc).__name__})
    record_findings(engine, source, ANY_SYMBOL, None, [finding], now=now)


def _complete_hours(items: pd.DataFrame, now: pd.Timestamp, since: pd.Timestamp | None) -> tuple[pd.DataFrame,
                                                                                                 list[Finding]]:
    """Items of hours that have ended and start at or after ``since``; future-dated items are reported."""
    findings = []
    future = items["ts"] > now + FUTURE_TOLERANCE
    if future.any():
        findings.append(Finding(DATA_KIND, "future", "warning", items.loc[future, "ts"].min(), None,
                                {"message": f"{int(future.sum())} items dated after the collection time {now}",
                                 "rows": int(future.sum())}))
    keep = items["ts"] < now.floor("h")
    if since is not None:
        keep &= items["ts"] >= since
    return items[keep].reset_index(drop=True), findings


def _score_and_store(engine: sa.Engine, items: pd.DataFrame, symbols: list[str], tagger: Tagger,
                     scorer: Scorer) -> tuple[pd.DataFrame, int, int]:
    """(hourly rows, rows inserted or changed, items about none of ``symbols``)."""
    tagged = tagger.tag_items(items)
    wanted = {base_asset(s) for s in symbols}
    about = tagged["assets"].map(lambda a: bool(wanted.intersection(a))).astype(bool)
    rows = aggregate_hourly(score_items(tagged.loc[about], scorer), symbols)
    stored = store.upsert(engine, "sentiment_scores", rows) if len(rows) else 0
    return rows, stored, int((~about).sum())


def collect_feed(engine: sa.Engine, feed: NewsFeed, *, symbols: list[str], tagger: Tagger, scorer: Scorer,
                 now: Any = None, lookback: pd.Timedelta = LOOKBACK,
                 stale_after: pd.Timedelta = STALE_AFTER) -> dict[str, Any]:
    """Collect one feed (an `RssFeed` / `RedditFeed`) into ``sentiment_scores``; a JSON-safe summary.

    Raises the fetch's `DataError` after recording it as a finding, and `TransientError` as it is.
    """
    now_ts = parse_utc(now) if now is not None else pd.Timestamp(timekeeping.now())
    last = store.last_timestamp(engine, "sentiment_scores", source=feed.name)
    since = parse_utc(last) + HOUR if last is not None else now_ts.floor("h") - lookback
    try:
        fetched: Fetched = feed.fetch(since)
    except DataError as exc:
        _record_failure(engine, feed.name, exc, since, now_ts)
        raise
    findings = list(fetched.findings)
    raw = fetched.items
    unique, duplicates = dedupe(raw)
    if raw.empty:
        findings.append(Finding(DATA_KIND, "empty", "warning", since, None,
                                {"message": f"{feed.name} returned no items", "pages": fetched.pages}))
    else:
        newest = raw["ts"].max()
        if now_ts - newest > stale_after:
            findings.append(Finding(DATA_KIND, "stale", "warning", newest, None,
                                    {"message": f"newest item is {now_ts - newest} old", "newest": newest.isoformat(),
                                     "lag_seconds": float((now_ts - newest).total_seconds())}))
    items, found = _complete_hours(unique, now_ts, since)
    findings += found
    if not fetched.reached_since and len(items):
        # The walk stopped inside the window: the oldest hour it shows may be missing its earlier items.
        oldest_hour = items["ts"].min().floor("h")
        findings.append(Finding(DATA_KIND, "truncated", "info", since, oldest_hour,
                                {"message": f"{feed.name} reaches back only to {items['ts'].min()}; hours from "
                                            f"{since} to {oldest_hour} (incomplete) are not stored",
                                 "pages": fetched.pages}))
        items = items[items["ts"] >= oldest_hour + HOUR].reset_index(drop=True)
    rows, stored, unattributed = _score_and_store(engine, items, symbols, tagger, scorer)
    recorded = record_findings(engine, feed.name, ANY_SYMBOL, None, findings, now=now_ts)
    resolved = resolve_findings(engine, feed.name, ANY_SYMBOL, None, DATA_KIND, window_start=None, window_end=None,
                                still_open=findings, now=now_ts, checks=FEED_CHECKS)
    return {"source": feed.name, "since": _iso(since), "pages": fetched.pages, "fetched": len(raw),
            "rejected": fetched.rejected, "items": len(items), "duplicates": duplicates,
            "unattributed": unattributed, "hours": int(rows["ts"].nunique()) if len(rows) else 0,
            "rows": len(rows), "stored": int(stored),
            "first": _iso(items["ts"].min()) if len(items) else None,
            "last": _iso(items["ts"].max()) if len(items) else None,
            "findings": dict(Counter(f.check for f in findings)), "recorded": recorded, "resolved": resolved}


def sentiment_symbols(engine: sa.Engine, settings: Any) -> list[str]:
    """The symbols sentiment is aggregated for: the configured universe, else every symbol with candles."""
    return list(settings.symbols) or store.list_symbols(engine, settings.exchange, settings.timeframe)


def collect_configured(engine: sa.Engine, settings: Any, *, feeds: list[str] | None = None, now: Any = None,
                       scorer: Scorer | None = None) -> dict[str, Any]:
    """Collect every feed of ``settings.news_feeds`` (or only those named in ``feeds``).

    One failing feed does not stop the others: its error is in ``failed`` (and, for bad data, in
    data_quality_logs).
    """
    specs = parse_feeds(settings.news_feeds)
    if feeds:
        unknown = sorted(set(feeds) - {s.name for s in specs})
        if unknown:
            raise DataError(f"unknown feed name(s) {unknown}; configured: {[s.name for s in specs]}")
        specs = [s for s in specs if s.name in feeds]
    symbols = sentiment_symbols(engine, settings)
    tagger = Tagger.for_symbols(symbols, parse_keywords(settings.sentiment_keywords))
    scorer = scorer or VaderScorer()
    out: dict[str, Any] = {"symbols": len(symbols), "feeds": {}, "failed": {}, "stored": 0}
    if not specs:
        out["message"] = "no feeds configured (BRAIN_NEWS_FEEDS)"
    for spec in specs:
        http = Http(user_agent=settings.news_user_agent, min_interval=settings.news_min_interval)
        try:
            summary = collect_feed(engine, make_feed(spec, http=http), symbols=symbols, tagger=tagger, scorer=scorer,
                                   now=now, lookback=pd.Timedelta(hours=settings.news_lookback_hours),
                                   stale_after=pd.Timedelta(hours=settings.news_stale_hours))
        except (DataError, TransientError) as exc:
            out["failed"][spec.name] = f"{type(exc).__name__}: {exc}"
            continue
        out["feeds"][spec.name] = summary
        out["stored"] += summary["stored"]
    return out


def ingest_news(engine: sa.Engine, path: str | Path, *, symbols: list[str] | None = None,
                keywords: list[str] | tuple[str, ...] = (), source: str | None = None, now: Any = None,
                scorer: Scorer | None = None) -> dict[str, Any]:
    """Score a CSV / JSON Lines file of items into ``sentiment_scores`` (idempotent).

    Items are attributed to ``symbols`` (default: every symbol with candles in the Brain) and to any
    market symbol (``BASE/QUOTE``) an item names in its ``symbols`` field.  The hours a file covers
    are recomputed from that file alone, per source.
    """
    now_ts = parse_utc(now) if now is not None else pd.Timestamp(timekeeping.now())
    name = source or Path(path).stem
    try:
        fetched = read_items_file(path, source=source)
    except DataError as exc:
        _record_failure(engine, name, exc, now_ts.floor("D"), now_ts)
        raise
    unique, duplicates = dedupe(fetched.items)
    items, found = _complete_hours(unique, now_ts, None)
    findings = fetched.findings + found
    named = sorted({s for given in items["symbols"] for s in given if "/" in s})
    universe = list(dict.fromkeys([*(symbols or store.list_symbols(engine)), *named]))
    tagger = Tagger.for_symbols(universe, parse_keywords(keywords))
    rows, stored, unattributed = _score_and_store(engine, items, universe, tagger, scorer or VaderScorer())
    recorded = record_findings(engine, name, ANY_SYMBOL, None, findings, now=now_ts)
    return {"path": str(path), "sources": sorted(items["source"].unique().tolist()) if len(items) else [],
            "fetched": len(fetched.items), "rejected": fetched.rejected, "items": len(items),
            "duplicates": duplicates, "unattributed": unattributed, "symbols": universe,
            "rows": len(rows), "stored": int(stored), "findings": dict(Counter(f.check for f in findings)),
            "recorded": recorded}
