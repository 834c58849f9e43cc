"""Replay benchmark: N synthetic symbols x K daily steps x M model types on a 2-process worker, Redis +
PostgreSQL, enqueued as Engine code does it (`BrainClient.replay`) and waited for through its attempt.

The work: the synthetic market stored as 5m candles (`--days` of history, the last K days replayed;
48 by default: on a shorter history a training costs a tenth of a second and the decisions' fixed cost
per step dominates, which no real replay sees),
the model types of `--models`; phase 1 trains N x K x M versions (`replay_train`), phase 2 walks each
symbol (`replay_walk`), one `replay_pool` ends it.  Then the very same replay is enqueued again.

Printed:
- wall of the first run and of the re-run, and the re-run's share of the first (goal <= 10%): the
  re-run trains nothing (the trainings find their versions) and rewrites identical rows;
- compute: the sum of the tasks' runtimes as the worker logs them ("Task ... succeeded in Xs": in the
  pool process, the task's own database work included), and the CPU seconds of the pool processes, the
  worker's main process, PostgreSQL and Redis;
- efficiency = CPU / (processes x wall) (goal >= 0.9): the pool's CPU alone, and with the database's
  and broker's CPU (the part of the tasks' work their servers do on the same cores); and by runtime;
- the decision phase's share of the training: the walks' runtime over the trainings' runtime (goal
  <= 10%), and the same from CPU seconds measured by the tasks: the walks' `cpu_s` over the `cpu_s` of
  every training that trained (each walk sums the outcomes its model types' chains delivered), as the
  replay's result returns them (`replay_pool`'s `walks`: timings stay out of the Brain's rows);
- runtime by task name.

    python bench/replay.py [--symbols 10] [--steps 5] [--models baseline,lightgbm] [--days 48] [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from bench.fanout import SUCCEEDED, CpuSnapshot, _pids  # noqa: E402 - the same log parsing and /proc CPU reading
from tests import servers  # noqa: E402
from tests.workers import brain_env, worker  # noqa: E402

START = dt.date(2024, 1, 1)


def _store(url: str, symbols: list[str], days: int, seed: int = 11) -> None:
    from brain_tasks.brain import store
    from brain_tasks.brain.db import make_engine
    from brain_tasks.market.synthetic import SyntheticSource

    src = SyntheticSource(seed, start=START.isoformat(), end=(START + dt.timedelta(days=days)).isoformat())
    engine = make_engine(url)
    for s in symbols:
        store.upsert(engine, "candles", src.fetch_candles(s, "5m").assign(exchange="freqtrade", symbol=s,
                                                                          timeframe="5m"))


def _runtimes(text: bytes) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for _stamp, _process, name, seconds in SUCCEEDED.findall(text):
        task = name.decode().removeprefix("brain_tasks.")
        if task != "ping":
            out[task].append(float(seconds))
    return out


def run(n: int, k: int, models: list[str], days: int, workers: int) -> None:
    symbols = [f"RPL{i:03d}/USDT" for i in range(n)]
    end = START + dt.timedelta(days=days - 2)
    start = end - dt.timedelta(days=k - 1)
    with servers.postgres_server() as pg, servers.redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        # This process enqueues like Engine code: the app reads the broker from the environment.
        os.environ["BRAIN_BROKER_URL"] = redis_url
        from celery import group

        from brain_tasks.app import app
        from brain_tasks.brain.migrate import upgrade
        from brain_tasks.client import BrainClient
        from brain_tasks.settings import from_environ

        url = servers.create_database(pg)
        upgrade(url)
        _store(url, symbols, days)
        home = Path(tmp)
        env = brain_env(url, redis_url, home, BRAIN_CONCURRENCY=str(workers))
        client = BrainClient(from_environ(env), app=app)
        log = home / "replay.log"
        with worker(env, name="replay", queues="collect,train,analysis", concurrency=workers, log_dir=home) as proc:
            group(app.signature("brain_tasks.ping", args=[i], queue="collect") for i in range(4 * workers)) \
                .apply_async().get(timeout=300)
            redis_pid, postmaster = _pids(redis_url, pg)
            walls, texts, cpus, handles, loads, pooled = [], [], [], [], [], []
            for _ in range(2):
                offset = log.stat().st_size
                cpu0 = CpuSnapshot.take(proc.pid, redis_pid, postmaster)
                t0 = time.perf_counter()
                handle = client.replay(symbols, models, start, end)
                status = client.wait(handle, timeout=6 * 3600, poll=0.2)
                walls.append(time.perf_counter() - t0)
                loads.append(os.getloadavg()[0])
                cpus.append(CpuSnapshot.take(proc.pid, redis_pid, postmaster).minus(cpu0))
                # The enqueued task was replaced by the fan-out; its id now carries replay_pool's result.
                pooled.append(app.AsyncResult(handle.attempt_id).get(timeout=300))
                time.sleep(0.5)
                texts.append(log.read_bytes()[offset:])
                handles.append(handle)
                assert status["state"] == "succeeded", status
    walk_cpu, train_cpu, n_trained, reused = [0.0, 0.0], [0.0, 0.0], [0, 0], [0, 0]
    for i, result in enumerate(pooled):
        for info in (result.get("walks") or {}).values():
            walk_cpu[i] += float(info.get("cpu_s") or 0.0)
            train_cpu[i] += float(info.get("train_cpu_s") or 0.0)
            n_trained[i] += int(info.get("n_trained") or 0)
            reused[i] += bool(info.get("reused"))
    first, again = _runtimes(texts[0]), _runtimes(texts[1])
    compute = sum(sum(v) for v in first.values())
    train_rt = sum(first.get("replay_train", []))
    walk_rt = sum(first.get("replay_walk", []))
    print(f"replay: {n} symbols x {k} steps x {len(models)} types ({', '.join(models)}) = {n * k * len(models)} "
          f"trainings, {workers} worker processes, 5m bars, {days} days stored")
    print(f"  first run wall        {walls[0]:8.1f} s")
    print(f"  re-run wall           {walls[1]:8.1f} s   = {walls[1] / walls[0]:.1%} of the first (goal <= 10%); "
          f"its {len(again.get('replay_train', []))} training tasks found their versions in "
          f"{sum(again.get('replay_train', [])):.1f} s")
    cpu = cpus[0]
    pool, job = cpu["pool"], cpu["pool"] + cpu["worker_main"] + cpu["postgres"] + cpu["redis"]
    print(f"  task runtime (sum)    {compute:8.1f} s   pool processes' CPU {pool:.1f} s, worker main {cpu['worker_main']:.1f} s, "
          f"PostgreSQL {cpu['postgres']:.1f} s, Redis {cpu['redis']:.1f} s; machine load average {loads[0]:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"  efficiency (CPU)      {pool / (workers * walls[0]):8.2f}     = pool CPU / ({workers} x wall) (goal >= 0.9); "
          f"with the database's and broker's share of the work {job / (workers * walls[0]):.2f}; "
          f"by runtime {compute / (workers * walls[0]):.2f} (runtime includes waiting for a core)")
    print(f"  decision phase (CPU)  {walk_cpu[0]:8.1f} s   = {walk_cpu[0] / max(train_cpu[0], 1e-9):.1%} of the trainings' "
          f"{train_cpu[0]:.1f} s CPU over {n_trained[0]} trainings (goal <= 10%); by runtime {walk_rt:.1f} s = {walk_rt / train_rt:.1%} of {train_rt:.1f} s")
    print(f"  re-run: {reused[1]} of {n} walks found their results, {n_trained[1]} trainings trained; "
          f"its walks' CPU {walk_cpu[1]:.2f} s")
    print("  runtime by task (first run):")
    for name, values in sorted(first.items(), key=lambda kv: -sum(kv[1])):
        print(f"    {name:<16} {len(values):5d} tasks {sum(values):8.1f} s  mean {sum(values) / len(values):.3f} s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--models", default="baseline,lightgbm")
    p.add_argument("--days", type=int, default=48, help="days of 5m history stored (the replay ends 2 days before)")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    if a.days - 2 - a.steps < 4:
        p.error("keep at least 4 days of history before the first step (--days >= --steps + 6)")
    run(a.symbols, a.steps, [m for m in a.models.split(",") if m], a.days, a.workers)


if __name__ == "__main__":
    main()
