"""Fan-out benchmark: N symbols x M model types on K worker processes vs a sequential in-process loop.

Both sides do the same work — `train_symbol` for every (symbol, model type) on the real sample,
each into a fresh PostgreSQL database — and the parallel side runs it through Redis on one
`celery worker -c K`.  Prints the speedup (sequential wall / parallel wall) and the efficiency =
sum of per-task compute seconds / (K x parallel wall seconds).

    python bench/fanout.py [--symbols 10] [--models lightgbm,xgboost] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests import servers  # noqa: E402
from tests.workers import brain_env, worker  # noqa: E402

AS_OF = "2018-01-30"


def _prepare(url: str, symbols: list[str]) -> None:
    from brain_tasks.brain.db import make_engine
    from brain_tasks.brain.migrate import upgrade
    from brain_tasks.collect import ingest_freqtrade

    upgrade(url)
    ingest_freqtrade(make_engine(url), REPO / "sample" / "freqtrade-testdata", symbols=symbols, timeframe="5m",
                     exchange="freqtrade")


def sequential(url: str, work: list[tuple[str, str]]) -> tuple[float, float]:
    """Wall seconds and summed task seconds of an in-process loop over the work."""
    from brain_tasks import jobs
    from brain_tasks.brain.db import make_engine
    from brain_tasks.runs import as_of_date
    from brain_tasks.settings import from_environ

    settings = from_environ({"BRAIN_DATABASE_URL": url})
    engine = make_engine(url)
    jobs.train_config(settings)  # import the ML stack before timing, as a warm worker has
    import brain_tasks.ml.pipeline  # noqa: F401

    start = time.perf_counter()
    for symbol, model in work:
        jobs.train_symbol(engine, settings, symbol, model, as_of_date(AS_OF))
    wall = time.perf_counter() - start
    return wall, wall


def parallel(url: str, broker: str, work: list[tuple[str, str]], k: int, home: Path) -> tuple[float, float]:
    """Wall seconds of the fan-out on K processes, and the sum of the tasks' own compute seconds."""
    from celery import Celery, group

    env = brain_env(url, broker, home)
    app = Celery(broker=broker, backend=broker)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
    with worker(env, name="bench", queues="train,collect,analysis", concurrency=k, log_dir=home):
        # Warm every pool process (imports of LightGBM / XGBoost happen at child start-up).
        group(app.signature("brain_tasks.ping", args=[i], queue="collect") for i in range(4 * k)) \
            .apply_async().get(timeout=300)
        start = time.perf_counter()
        results = group(app.signature("brain_tasks.train_symbol", args=[s, m, AS_OF], queue="train")
                        for s, m in work).apply_async().get(timeout=3600)
        wall = time.perf_counter() - start
    failed = [r for r in results if r.get("status") != "succeeded"]
    if failed:
        raise SystemExit(f"tasks failed: {json.dumps(failed)[:2000]}")
    return wall, sum(float(r["seconds"]) for r in results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--models", default="lightgbm,xgboost")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    pairs = sorted(f.name.split("-")[0].replace("_", "/") for f in
                   (REPO / "sample" / "freqtrade-testdata").glob("*_BTC-5m.feather"))[: args.symbols]
    models = [m for m in args.models.split(",") if m]
    work = [(s, m) for s in pairs for m in models]
    with servers.postgres_server() as pg, servers.redis_server() as redis, \
            tempfile.TemporaryDirectory() as tmp:
        seq_url, par_url = servers.create_database(pg), servers.create_database(pg)
        _prepare(seq_url, pairs)
        _prepare(par_url, pairs)
        seq_wall, _ = sequential(seq_url, work)
        par_wall, compute = parallel(par_url, redis, work, args.workers, Path(tmp))
    print(f"work: {len(pairs)} symbols x {len(models)} model types = {len(work)} train_symbol tasks, "
          f"{args.workers} worker processes, {os.cpu_count()} cores")
    print(f"sequential in-process loop: {seq_wall:8.2f} s")
    print(f"celery fan-out (redis+pg):  {par_wall:8.2f} s   (sum of task compute {compute:.2f} s)")
    print(f"speedup:    {seq_wall / par_wall:.2f}x")
    print(f"efficiency: {compute / (args.workers * par_wall):.3f}  "
          f"(= sum of per-task compute seconds / (K x wall seconds))")


if __name__ == "__main__":
    main()
