"""Ingest benchmark: idempotent upsert of N candles into PostgreSQL vs a plain COPY of the same rows.

Three timed phases on one server, each in its own transaction:
  copy      plain binary COPY into an empty table shaped like `candles` (same primary key)
  upsert 1  `store.upsert` into the empty `candles` table (every row inserted)
  upsert 2  `store.upsert` of the same rows again (nothing changes)
Rows/s are over the whole call, DataFrame in, committed rows out; the ratios are rates relative to COPY.
Done-when targets: upsert 1 >= 0.5 x COPY, upsert 2 >= 0.33 x COPY.

    python bench/ingest.py [--rows 1000000] [--symbols 10] [--url postgresql+psycopg://...] [--repeat 1] [--check]

History depth (``--history-depth``): the training read at scale.  `--symbols` x `--days` of 5m
candles (default 200 x 365, about 21M rows) are ingested one symbol at a time through `store.upsert`
(COPY into a temporary table + MERGE, the path collection takes; ``--load copy`` sends the bulk with
a plain COPY instead), and so are ~1M rows (the same history for `--base-symbols` symbols) in a
second schema.  For a few symbols of each it prints the time of `store.read_candles` of the whole
history (what training reads), first and warm, through the column path and the row path, the
plan of the read (EXPLAIN: the primary key's index scan) and the ratio 21M / 1M (goal <= 1.5).

    python bench/ingest.py --history-depth [--symbols 200] [--days 365] [--base-symbols 10] [--load upsert]

Without --url a throwaway PostgreSQL 15 is started (tests.servers).  With --url the tables are
created in a new schema that is dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sqlalchemy as sa  # noqa: E402

TARGETS = {"upsert 1": 0.5, "upsert 2": 0.33}


def make_candles(rows: int, symbols: int, seed: int = 7) -> pd.DataFrame:
    """`rows` 5-minute candles spread over `symbols` symbols: a seeded random walk, realistic floats."""
    rng = np.random.default_rng(seed)
    per = -(-rows // symbols)
    ts = pd.date_range("2020-01-01", periods=per, freq="5min", tz="UTC")
    frames = []
    for i in range(symbols):
        close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, per)))
        spread = np.abs(rng.normal(0, 0.001, per)) * close
        frames.append(pd.DataFrame({
            "exchange": "binance", "symbol": f"SYM{i:03d}/USDT", "timeframe": "5m", "ts": ts,
            "open": np.roll(close, 1), "high": close + spread, "low": close - spread, "close": close,
            "volume": rng.lognormal(5, 1, per)}))
    return pd.concat(frames, ignore_index=True).iloc[:rows]


def _timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    count = fn()
    return time.perf_counter() - start, count


def _checkpoint(engine: sa.Engine) -> None:
    # Flush the previous phase's dirty pages so its checkpoint does not land in the next timing.
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("CHECKPOINT")
    except sa.exc.DBAPIError:
        pass  # not a superuser on a given --url: timings just get noisier


def run(url: str, rows: int, symbols: int, repeat: int) -> tuple[dict[str, list[float]], float]:
    from brain_tasks.brain import store
    from brain_tasks.brain.db import make_engine
    from brain_tasks.brain.tables import Candle

    engine = make_engine(url)
    frame = make_candles(rows, symbols)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    meta = sa.MetaData(schema=schema)
    target = Candle.__table__.to_metadata(meta)
    plain = sa.Table("candles_plain", meta, *(sa.Column(c.name, c.type, primary_key=c.primary_key,
                                                         nullable=c.nullable) for c in target.columns))
    with engine.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    rates: dict[str, list[float]] = {"copy": [], "upsert 1": [], "upsert 2": []}
    try:
        meta.create_all(engine)
        for _ in range(repeat):
            with engine.begin() as conn:
                conn.exec_driver_sql(f'TRUNCATE "{schema}".candles_plain, "{schema}".candles')
            for phase, fn in (("copy", lambda: store.copy_rows(engine, plain, frame)),
                              ("upsert 1", lambda: store.upsert(engine, target, frame)),
                              ("upsert 2", lambda: store.upsert(engine, target, frame))):
                _checkpoint(engine)
                seconds, count = _timed(fn)
                expected = 0 if phase == "upsert 2" else rows
                if count != expected:
                    raise SystemExit(f"{phase}: {count} rows written, expected {expected}")
                rates[phase].append(rows / seconds)
                print(f"  {phase:9s} {seconds:7.2f} s  {rows / seconds:12,.0f} rows/s", flush=True)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True))
    # What every phase pays on the client before the server sees a byte (shown for transparency).
    convert_s, _ = _timed(lambda: len(store.prepare_rows(target, frame)[1]))
    return rates, convert_s


# --- history depth -------------------------------------------------------------------------------

BARS_PER_DAY = 288  # 5m


def symbol_candles(index: int, bars: int, seed: int = 7) -> pd.DataFrame:
    """One symbol's `bars` 5m candles from 2020-01-01 (the same random walk as `make_candles`)."""
    rng = np.random.default_rng([seed, index])
    ts = pd.date_range("2020-01-01", periods=bars, freq="5min", tz="UTC")
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, bars)))
    spread = np.abs(rng.normal(0, 0.001, bars)) * close
    return pd.DataFrame({"exchange": "binance", "symbol": f"SYM{index:03d}/USDT", "timeframe": "5m", "ts": ts,
                         "open": np.roll(close, 1), "high": close + spread, "low": close - spread, "close": close,
                         "volume": rng.lognormal(5, 1, bars)})


def _ingest(engine: sa.Engine, target: sa.Table, symbols: int, bars: int, load: str) -> float:
    """Write every symbol's history, one symbol per call; return seconds (data generation excluded)."""
    from brain_tasks.brain import store

    spent, started = 0.0, time.perf_counter()
    for i in range(symbols):
        frame = symbol_candles(i, bars)
        t0 = time.perf_counter()
        count = store.upsert(engine, target, frame) if load == "upsert" else store.copy_rows(engine, target, frame)
        spent += time.perf_counter() - t0
        if count != bars:
            raise SystemExit(f"symbol {i}: {count} rows written, expected {bars}")
        if (i + 1) % 20 == 0 or i + 1 == symbols:
            eta = (time.perf_counter() - started) / (i + 1) * (symbols - i - 1)
            print(f"  {target.schema}: {i + 1}/{symbols} symbols, {(i + 1) * bars:,} rows, "
                  f"{(i + 1) * bars / spent:,.0f} rows/s, about {eta / 60:.1f} min to go", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'VACUUM ANALYZE "{target.schema}".candles')
    return spent


def _timed_read(engine: sa.Engine, schema: str, symbol: str, path: str = "columns") -> float:
    """Seconds of `store.read_candles` of `symbol`'s whole history; path: columns | rows | no-jit."""
    from brain_tasks.brain import store

    with engine.connect() as conn:
        conn.exec_driver_sql(f'SET search_path TO "{schema}"')
        if path == "no-jit":
            conn.exec_driver_sql("SET jit = off")
        saved = store.packed_select
        if path == "rows":
            store.packed_select = lambda *a, **k: None
        try:
            t0 = time.perf_counter()
            frame = store.read_candles(conn, "binance", symbol, "5m")
            seconds = time.perf_counter() - t0
        finally:
            store.packed_select = saved
            conn.rollback()
            conn.exec_driver_sql("RESET ALL")
    if frame.empty:
        raise SystemExit(f"{schema}: no candles read for {symbol}")
    return seconds


def _read_times(engine: sa.Engine, schemas: dict[str, str], picks: dict[str, list[str]],
                repeat: int) -> dict[str, dict[str, float]]:
    """Median seconds per read of each size: the first read of each picked symbol, then `repeat` rounds
    that alternate between the sizes (so both see the same load on a shared machine)."""
    samples: dict[str, dict[str, list[float]]] = {k: {"first": [], "warm": [], "no-jit": [], "rows": []}
                                                  for k in schemas}
    for key, schema in schemas.items():
        samples[key]["first"] = [_timed_read(engine, schema, s) for s in picks[key]]
    for _ in range(repeat):
        for key, schema in schemas.items():
            for symbol in picks[key]:
                for path, label in (("columns", "warm"), ("no-jit", "no-jit"), ("rows", "rows")):
                    samples[key][label].append(_timed_read(engine, schema, symbol, path))
    return {k: {label: statistics.median(v) for label, v in by.items()} for k, by in samples.items()}


def _plan(engine: sa.Engine, schema: str, symbol: str) -> str:
    """EXPLAIN ANALYZE of the statement `store.read_candles` sends for one symbol's whole history."""
    from psycopg import sql

    from brain_tasks.brain import columnar, store

    query, params, _fields, _dtype = columnar.packed_query(
        store.get_table("candles"), ("ts", "open", "high", "low", "close", "volume"),
        {"exchange": "binance", "symbol": symbol, "timeframe": "5m"}, {}, None, None, ("ts",))
    with engine.connect() as conn:
        conn.exec_driver_sql(f'SET search_path TO "{schema}"')
        with conn.connection.driver_connection.cursor() as cur:
            cur.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS) {}").format(query), params)
            plan = [row[0] for row in cur.fetchall()]
        conn.rollback()
    return "\n".join(f"    {line}" for line in plan)


def _size(engine: sa.Engine, schema: str) -> str:
    with engine.connect() as conn:
        heap, index = conn.exec_driver_sql(
            "SELECT pg_relation_size(%(t)s::regclass), pg_indexes_size(%(t)s::regclass)",
            {"t": f'"{schema}".candles'}).one()
    return f"table {heap / 2**30:.2f} GiB, index {index / 2**30:.2f} GiB"


def history_depth(url: str, symbols: int, days: int, base_symbols: int, load: str, repeat: int) -> float:
    """Ingest both sizes, print the per-symbol read times; return the ratio deep / base (warm reads)."""
    from brain_tasks.brain.db import make_engine
    from brain_tasks.brain.tables import Candle

    engine = make_engine(url)
    bars = days * BARS_PER_DAY
    sizes = {"base": base_symbols, "deep": symbols}
    schemas = {k: f"bench_{k}_{uuid.uuid4().hex[:8]}" for k in sizes}
    picks: dict[str, list[str]] = {}
    try:
        for key, n in sizes.items():
            meta = sa.MetaData(schema=schemas[key])
            target = Candle.__table__.to_metadata(meta)
            with engine.begin() as conn:
                conn.execute(sa.schema.CreateSchema(schemas[key]))
            meta.create_all(engine)
            print(f"ingesting {n} symbols x {bars:,} bars = {n * bars:,} candles ({load})", flush=True)
            seconds = _ingest(engine, target, n, bars, load)
            print(f"  {n * bars:,} rows in {seconds / 60:.1f} min ({n * bars / seconds:,.0f} rows/s); "
                  f"{_size(engine, schemas[key])}", flush=True)
            picks[key] = [f"SYM{i:03d}/USDT" for i in sorted({0, n // 3, n // 2, (2 * n) // 3, n - 1})]
        for key, n in sizes.items():
            print(f"plan of one symbol's read at {n * bars:,} rows:\n{_plan(engine, schemas[key], picks[key][-1])}")
        times = _read_times(engine, schemas, picks, repeat)
    finally:
        with engine.begin() as conn:
            for schema in schemas.values():
                conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
    print(f"\nread_candles of one symbol's whole history ({bars:,} bars), median seconds "
          f"(first: each symbol's first read; warm, jit off and row path: {repeat} alternating rounds)")
    columns = ("first", "warm", "no-jit", "rows")
    print(f"{'table':>24} " + " ".join(f"{c:>8}" for c in ("first", "warm", "jit off", "row path")))
    for key, n in sizes.items():
        print(f"{f'{n * bars:,} candles':>24} " + " ".join(f"{times[key][c]:>8.3f}" for c in columns))
    ratios = {c: times["deep"][c] / times["base"][c] for c in columns}
    print(f"{'ratio':>24} " + " ".join(f"{ratios[c]:>8.2f}" for c in columns) + "   (goal: warm <= 1.5)")
    return ratios["warm"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, help="default 10; 200 with --history-depth")
    parser.add_argument("--url", help="PostgreSQL URL (default: start a throwaway server)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the median rate is reported")
    parser.add_argument("--check", action="store_true", help="exit 1 when a ratio misses its target")
    parser.add_argument("--history-depth", action="store_true",
                        help="read time of one symbol's history at --symbols x --days vs ~1M rows")
    parser.add_argument("--days", type=int, default=365, help="history depth: days of 5m bars per symbol")
    parser.add_argument("--base-symbols", type=int, default=10, help="history depth: symbols of the ~1M baseline")
    parser.add_argument("--load", choices=("upsert", "copy"), default="upsert",
                        help="history depth: write through store.upsert or a plain COPY")
    args = parser.parse_args(argv)

    from brain_tasks.brain.db import redact_url

    if args.history_depth:
        symbols = args.symbols or 200
        with contextlib.ExitStack() as stack:
            if args.url:
                url = args.url
            else:
                from tests.servers import postgres_server

                url = stack.enter_context(postgres_server())
            print(f"server: {redact_url(url)}")
            ratio = history_depth(url, symbols, args.days, args.base_symbols, args.load, max(args.repeat, 3))
        return 0 if ratio <= 1.5 or not args.check else 1
    args.symbols = args.symbols or 10

    if args.url:
        print(f"server: {redact_url(args.url)}")
        rates = run(args.url, args.rows, args.symbols, args.repeat)
    else:
        from tests.servers import postgres_server

        with postgres_server() as url:
            print(f"server: throwaway PostgreSQL 15 at {redact_url(url)}")
            rates = run(url, args.rows, args.symbols, args.repeat)

    rates, convert_s = rates
    median = {phase: statistics.median(values) for phase, values in rates.items()}
    print(f"\n{args.rows:,} candles, {args.symbols} symbols, median of {args.repeat} run(s)")
    print(f"{'phase':10s} {'rows/s':>12s} {'x COPY':>8s} {'target':>8s}")
    ok = True
    for phase, rate in median.items():
        ratio = rate / median["copy"]
        target = TARGETS.get(phase)
        met = target is None or ratio >= target
        ok &= met
        print(f"{phase:10s} {rate:12,.0f} {ratio:8.2f} {'' if target is None else f'>= {target}':>8s}"
              f"{'' if met else '  MISSED'}")
    print(f"(each phase includes {convert_s:.2f} s of DataFrame -> driver value conversion on the client)")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
