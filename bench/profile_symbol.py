"""Per-symbol read profile: one real-sized symbol in PostgreSQL, the chain's reads, row path vs column path.

The symbol is bench/train.py's: 105,000 seeded synthetic 5m bars (about a year) with funding, open
interest and liquidations, written through `store.upsert` into a throwaway PostgreSQL 15 (or a new
database on --url's server).  It prints

- each reader (`read_candles`, `read_funding`, ...) and one `load_market`, through the row path
  (one Python row per result row: the reader before the column path) and through the column path
  (rows packed into one bytea server-side, parsed by numpy), with a check that both return the same frames;
- `load_market` x the number of calls one symbol's chain makes (one per model type in
  `train_symbol` and one in rollback's rebuild: 4 by default; importance rebuilds only a version
  stored without importance);
- what a cache of `load_market` would have to ask before serving a hit (row count, newest bar and a
  checksum of the rows' xmin, which an upsert that rewrites a value changes), as a share of a read;
- the whole `train_symbol` for the cheapest model (baseline) through each path, each in a fresh
  database, with the seconds it spent in `load_market`.

    python bench/profile_symbol.py [--bars 105000] [--repeat 3] [--models 3] [--url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd  # noqa: E402

from tests import servers  # noqa: E402

SYMBOL = "BENCH/USDT:USDT"
EXCHANGE = "synthetic"
SEED = 7


def market(bars: int) -> dict[str, pd.DataFrame]:
    """bench/train.py's symbol: `bars` 5m bars of the seeded synthetic market, with every extra kind."""
    from brain_tasks.market.synthetic import SyntheticSource

    start = pd.Timestamp("2024-01-01", tz="UTC")
    source = SyntheticSource(SEED, start=start, end=start + pd.Timedelta(minutes=5 * bars))
    return {"candles": source.fetch_candles(SYMBOL, "5m"), "funding_rates": source.fetch_funding(SYMBOL),
            "open_interest": source.fetch_open_interest(SYMBOL, "5m"),
            "liquidations": source.fetch_liquidations(SYMBOL)}


def store_market(url: str, data: dict[str, pd.DataFrame]) -> None:
    from brain_tasks.brain import store
    from brain_tasks.brain.db import make_engine
    from brain_tasks.brain.migrate import upgrade

    upgrade(url)
    engine = make_engine(url)
    for table, frame in data.items():
        key = {"exchange": EXCHANGE, "symbol": SYMBOL, **({"timeframe": "5m"} if table == "candles" else {})}
        store.upsert(engine, table, frame.assign(**key))


@contextlib.contextmanager
def row_path() -> Iterator[None]:
    """Reads as before the column path: one Python row per result row."""
    from brain_tasks.brain import store

    saved = store.packed_select
    store.packed_select = lambda *a, **k: None
    try:
        yield
    finally:
        store.packed_select = saved


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    for key, frame in a.items():
        if (frame is None) != (b[key] is None):
            return False
        if frame is not None:
            pd.testing.assert_frame_equal(frame, b[key], check_exact=True)
    return True


def reads(url: str, repeat: int, chain_calls: int) -> None:
    from brain_tasks.service.steps import reads, train
    from brain_tasks.brain import store
    from brain_tasks.brain.db import make_engine
    from brain_tasks.settings import from_environ

    engine = make_engine(url)
    settings = from_environ({"BRAIN_DATABASE_URL": url, "BRAIN_EXCHANGE": EXCHANGE})
    readers = {
        "read_candles": lambda: store.read_candles(engine, EXCHANGE, SYMBOL, "5m"),
        "read_funding": lambda: store.read_funding(engine, EXCHANGE, SYMBOL),
        "read_open_interest": lambda: store.read_open_interest(engine, EXCHANGE, SYMBOL),
        "read_liquidations": lambda: store.read_liquidations(engine, EXCHANGE, SYMBOL),
        "read_sentiment": lambda: store.read_sentiment(engine, SYMBOL),
        "load_market": lambda: reads.load_market(engine, settings, SYMBOL),
    }
    readers["read_candles"]()  # warm the connection pool and the server's cache
    print(f"\nreads, median of {repeat} (seconds)")
    print(f"{'reader':<20} {'rows':>8} {'row path':>9} {'columns':>9} {'speedup':>8}  same")
    totals = {}
    for name, fn in readers.items():
        with row_path():
            old_s, old = _best(fn, repeat)
        new_s, new = _best(fn, repeat)
        same = _same(old, new) if isinstance(old, dict) else _same({"x": old}, {"x": new})
        rows = sum(len(v) for v in old.values() if v is not None) if isinstance(old, dict) else len(old)
        print(f"{name:<20} {rows:>8} {old_s:>9.3f} {new_s:>9.3f} {old_s / new_s:>7.1f}x  {same}")
        totals[name] = (old_s, new_s)
    old_s, new_s = totals["load_market"]
    print(f"{f'load_market x {chain_calls}':<20} {'':>8} {old_s * chain_calls:>9.3f} {new_s * chain_calls:>9.3f}"
          f" {old_s / new_s:>7.1f}x  (the calls of one symbol's chain)")
    check_s, _ = _best(lambda: fingerprint(engine), repeat)
    print(f"a cache's validation query (count, max(ts), checksum of xmin over the same rows): {check_s:.3f} s "
          f"= {check_s / new_s:.0%} of a column-path load_market: the floor of a cache hit")


def fingerprint(engine: Any) -> list[Any]:
    """What a cache of `load_market` would have to ask before serving a hit: every row's version
    (xmin changes when an upsert rewrites a value), the count (deletes) and the newest bar."""
    import sqlalchemy as sa

    parts = []
    for table, extra in (("candles", "AND timeframe = '5m'"), ("funding_rates", ""), ("open_interest", ""),
                         ("liquidations", "")):
        parts.append(f"SELECT count(*), max(ts), sum(hashtext(xmin::text)::bigint) FROM {table} "
                     f"WHERE exchange = :ex AND symbol = :sym {extra}")
    parts.append("SELECT count(*), max(ts), sum(hashtext(xmin::text)::bigint) FROM sentiment_scores "
                 "WHERE symbol = :sym")
    with engine.connect() as conn:
        return conn.execute(sa.text(" UNION ALL ".join(parts)), {"ex": EXCHANGE, "sym": SYMBOL}).all()


def train(server: str, data: dict[str, pd.DataFrame], model: str) -> None:
    from brain_tasks.service.steps import reads, train
    from brain_tasks.brain.db import make_engine

    print(f"\ntrain_symbol({model}) in a fresh database per path (seconds)")
    print(f"{'path':<10} {'train_symbol':>12} {'load_market':>12} {'share':>6}")
    as_of = (data["candles"]["ts"].iloc[-1]).date()
    # The first training of a process imports the ML stack: a warm-up run keeps that out of both timings.
    for label, ctx in (("warm-up", contextlib.nullcontext), ("row path", row_path), ("columns", contextlib.nullcontext)):
        url = servers.create_database(server)
        try:
            store_market(url, data)
            from brain_tasks.settings import from_environ

            settings = from_environ({"BRAIN_DATABASE_URL": url, "BRAIN_EXCHANGE": EXCHANGE,
                                     "BRAIN_MAX_DATA_AGE": str(10 * 86400)})
            spent = []
            original = train.load_market  # what the training step calls

            def timed(*a: Any, original: Any = original, spent: list[float] = spent, **k: Any) -> Any:
                start = time.perf_counter()
                try:
                    return original(*a, **k)
                finally:
                    spent.append(time.perf_counter() - start)

            train.load_market = timed
            try:
                with ctx():
                    start = time.perf_counter()
                    out = train.train_symbol(make_engine(url), settings, SYMBOL, model, as_of)
                    wall = time.perf_counter() - start
            finally:
                train.load_market = original
            if not out.ok:
                raise SystemExit(f"train_symbol failed: {out}")
            if label != "warm-up":
                print(f"{label:<10} {wall:>12.2f} {sum(spent):>12.3f} {sum(spent) / wall:>6.1%}")
        finally:
            from brain_tasks.brain.db import dispose_engine

            dispose_engine(url)
            servers.drop_database(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=105_000)
    parser.add_argument("--repeat", type=int, default=3, help="timings per reader; the median is printed")
    parser.add_argument("--models", type=int, default=3, help="model types per chain (one load_market each)")
    parser.add_argument("--train-model", default="baseline", help="the model type of the train_symbol timing")
    parser.add_argument("--no-train", action="store_true", help="skip the train_symbol timing")
    parser.add_argument("--url", help="PostgreSQL server URL (default: start a throwaway server)")
    args = parser.parse_args(argv)

    data = market(args.bars)
    sizes = ", ".join(f"{k} {len(v):,}" for k, v in data.items())
    print(f"one symbol: {sizes} rows; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with contextlib.ExitStack() as stack:
        server = args.url or stack.enter_context(servers.postgres_server())
        url = servers.create_database(server)
        try:
            start = time.perf_counter()
            store_market(url, data)
            print(f"stored through store.upsert in {time.perf_counter() - start:.1f} s")
            # 3 train_symbol + rollback's rebuild; + importance's rebuild for a version stored without it.
            reads(url, args.repeat, args.models + 1)
        finally:
            from brain_tasks.brain.db import dispose_engine

            dispose_engine(url)
            servers.drop_database(url)
        if not args.no_train:
            train(server, data, args.train_model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
