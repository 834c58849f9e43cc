"""Ingest benchmark: idempotent upsert of N candles into PostgreSQL vs a plain COPY of the same rows.

Three timed phases on one server, each in its own transaction:
  copy      plain binary COPY into an empty table shaped like `candles` (same primary key)
  upsert 1  `store.upsert` into the empty `candles` table (every row inserted)
  upsert 2  `store.upsert` of the same rows again (nothing changes)
Rows/s are over the whole call, DataFrame in, committed rows out; the ratios are rates relative to COPY.
Done-when targets: upsert 1 >= 0.5 x COPY, upsert 2 >= 0.33 x COPY.

    python bench/ingest.py [--rows 1000000] [--symbols 10] [--url postgresql+psycopg://...] [--repeat 1] [--check]

Without --url a throwaway PostgreSQL 15 is started (tests.servers).  With --url the tables are
created in a new schema that is dropped at the end.
"""

from __future__ import annotations

import argparse
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
    from brain_tasks.brain.models import Candle

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
    convert_s, _ = _timed(lambda: len(store._prepare(target, frame)[1]))
    return rates, convert_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--url", help="PostgreSQL URL (default: start a throwaway server)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the median rate is reported")
    parser.add_argument("--check", action="store_true", help="exit 1 when a ratio misses its target")
    args = parser.parse_args(argv)

    from brain_tasks.brain.db import redact_url

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
