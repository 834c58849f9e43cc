"""The nightly audit's cost: seconds per served signal decided again, on PostgreSQL.

A LightGBM version is trained on the real sample (ETH/BTC, up to 2018-01-24) and made champion; then a
day of 5m bars arrives bar by bar and each is served live (recorded with its decision context), as the
bar-close task would; then `audit_symbol` decides every one of them again.  Printed: the serving and
the audit time per signal, and the audit's share of a nightly for N symbols.

    python bench/audit.py [--bars 288]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests import servers  # noqa: E402

SYMBOL = "ETH/BTC"
AS_OF = dt.date(2018, 1, 23)
CUT = pd.Timestamp("2018-01-24", tz="UTC")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=288)
    args = parser.parse_args()
    from brain_tasks.brain import registry, store
    from brain_tasks.brain.db import dispose_engine, make_engine
    from brain_tasks.brain.migrate import upgrade
    from brain_tasks.service import audit, serving
    from brain_tasks.service.steps import train
    from brain_tasks.settings import from_environ

    candles = (pd.read_feather(REPO / "sample" / "freqtrade-testdata" / "ETH_BTC-5m.feather")
               .rename(columns={"date": "ts"}).assign(exchange="freqtrade", symbol=SYMBOL, timeframe="5m"))
    with servers.postgres_server() as server:
        url = servers.create_database(server)
        upgrade(url)
        engine = make_engine(url)
        settings = from_environ({"BRAIN_DATABASE_URL": url})
        store.upsert(engine, "candles", candles[candles.ts < CUT])
        out = train.train_symbol(engine, settings, SYMBOL, "lightgbm", AS_OF)
        registry.pin_champion(engine, SYMBOL, "lightgbm", out.version, "bench")
        bars = candles[candles.ts >= CUT].ts.iloc[:args.bars]
        served = 0.0
        for ts in bars:
            store.upsert(engine, "candles", candles[candles.ts == ts])
            start = time.perf_counter()
            serving.predict(engine, settings, SYMBOL, stamp=ts.to_pydatetime() + dt.timedelta(minutes=5))
            served += time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        result = audit.audit_symbol(engine, settings, SYMBOL)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        n = result["audited"]
        print(f"{n} live signals (one 5m symbol, a day of bars), LightGBM, PostgreSQL: serving {1000 * served / n:.1f} ms "
              f"per signal; audit {1000 * wall / n:.1f} ms wall, {1000 * cpu / n:.1f} ms CPU per signal; "
              f"mismatches {result['mismatches']}")
        print(f"a nightly audit of a day of 5m signals: {wall:.1f} s per symbol, about {200 * cpu / 60:.0f} CPU "
              f"minutes for 200 symbols")
        dispose_engine(url)
        servers.drop_database(url)


if __name__ == "__main__":
    main()
