"""Fan-out benchmark: the daily retrain of N synthetic symbols on K worker processes, Redis + PostgreSQL.

Per N (`--symbols N`, or each of `--scaling 10,100,1000`, the default): a fresh Brain database, a real
`celery worker -c K` on every queue, and the run enqueued as Engine code does it
(`BrainClient.retrain`), then waited for through its result.  The work: the synthetic market
(exchange "synthetic"), 60 days of hourly bars per symbol, the `baseline` model only, the position
sizer off (`BRAIN_SIZER_TIMESTEPS=0`): seven tasks per symbol (collect, train, compare, importance,
rollback, select, sizer) plus the fan-out and its summary.  The run must end with every symbol
succeeded and every symbol's rows in the Brain tables (`tests.workers.check_fanout`), or the
benchmark fails.

Printed per N:
- wall: seconds from the enqueue to the run's summary result;
- compute: the sum of the tasks' runtimes as the worker logs them ("Task ... succeeded in Xs": measured
  in the pool process from the task's start to the end of its post-processing, i.e. including its
  own database work, storing its result and sending the chain's next message);
- efficiency = compute / (K x wall) (goal >= 0.9); orchestration overhead per symbol =
  (K x wall - compute) / N: what the pool processes did not spend inside a task;
- Redis peak memory (INFO used_memory), subscribed channels and largest client output buffer, and
  PostgreSQL peak connections of the Brain database (in all and per worker process), polled every
  0.1 s during the run;
- the pool processes' idle time from the worker log: before their first task, between tasks (the
  per-task hand-over: result to the main process, ack, next message) and after their last one;
- CPU seconds by process during the run (pool processes, the worker's main process, redis-server,
  PostgreSQL, this process) and the machine's busy cores: runtimes are wall time, so on a shared
  machine they include waiting for a core, and CPU seconds tell orchestration from other load;
- runtime by task name (which step dominates), beside each step's own work called in process without
  Celery for `--profile` symbols (wall and CPU per call).
Then the scaling: least-squares fits of wall and of the run's own CPU seconds against N (slope in
seconds per symbol, R^2) and the per-symbol figure of the largest N over the second largest (1.0 =
linear).  On a machine shared with other work, the CPU line is the one that does not move with it.

`--sample` keeps the earlier comparison: `train_symbol` for every (symbol, model type) of the real
sample, sequentially in-process against the same work fanned out over K processes (speedup).

    python bench/fanout.py [--scaling 10,100,1000 | --symbols 1000] [--workers 2]
    python bench/fanout.py --sample [--symbols 10] [--models lightgbm,xgboost] [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests import servers
from tests.workers import SYNTHETIC_AS_OF, SYNTHETIC_FANOUT, brain_env, check_fanout, synthetic_symbols, worker

SAMPLE_AS_OF = "2018-01-30"
POLL_S = 0.1
# celery/app/trace.py LOG_SUCCESS: "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s"
SUCCEEDED = re.compile(rb"^\[([0-9-]+ [0-9:,]+): INFO/(\w+-\d+)\] Task (brain_tasks\.\w+)\[[0-9a-f-]+\] "
                       rb"succeeded in ([0-9.e+-]+)s", re.MULTILINE)
RETRIED = re.compile(rb"Task (brain_tasks\.\w+)\[[0-9a-f-]+\] retry")
RAISED = re.compile(rb"Task (brain_tasks\.\w+)\[[0-9a-f-]+\] raised")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- process CPU from /proc ----------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU seconds, CPU seconds of its reaped children) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    ppid, utime, stime, cutime, cstime = int(fields[1]), *(int(f) for f in fields[11:15])
    return ppid, (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def _tree(root: int) -> list[int]:
    """`root` and its live descendants."""
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            parents[st[0]].append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def _cpu(root: int, *, children: bool = True) -> float:
    """CPU seconds of a process tree: its live members plus what it reaped (exited backends)."""
    total = 0.0
    for pid in _tree(root) if children else [root]:
        st = _stat(pid)
        if st is not None:
            total += st[1] + (st[2] if pid == root else 0.0)
    return total


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / CLK_TCK, sum(ticks) / CLK_TCK


@dataclass
class CpuSnapshot:
    pool: float
    worker_main: float
    redis: float
    postgres: float
    bench: float
    machine_busy: float
    machine_total: float

    @classmethod
    def take(cls, worker_pid: int, redis_pid: int, postmaster_pid: int) -> CpuSnapshot:
        pool = sum(_cpu(p, children=False) for p in _tree(worker_pid) if p != worker_pid)
        busy, total = _machine_busy()
        t = os.times()
        return cls(pool=pool, worker_main=_cpu(worker_pid, children=False), redis=_cpu(redis_pid),
                   postgres=_cpu(postmaster_pid), bench=t.user + t.system, machine_busy=busy, machine_total=total)

    def minus(self, before: CpuSnapshot) -> dict[str, float]:
        return {k: getattr(self, k) - getattr(before, k) for k in self.__dataclass_fields__}


# --- polling Redis and PostgreSQL during a run ---------------------------------------------------

class Monitor(threading.Thread):
    """Polls Redis' used memory and the Brain database's connections; keeps the peaks."""

    def __init__(self, redis_url: str, database_url: str) -> None:
        super().__init__(daemon=True)
        self.redis_url, self.database_url = redis_url, database_url
        self.redis_peak = 0
        self.pg_peak = 0
        self.pg_peak_process = 0
        self.redis_channels = 0
        self.redis_obuf = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psycopg
        import redis
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url)
        r = redis.Redis.from_url(self.redis_url)
        with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname="postgres",
                             autocommit=True) as conn:
            while not self._stop_event.is_set():
                self.redis_peak = max(self.redis_peak, int(r.info("memory")["used_memory"]))
                # Result channels subscribed (a chord's header results) and the largest client output
                # buffer: a subscriber that does not read them makes Redis hold what was published.
                info = r.info("clients") | r.info("stats")
                self.redis_channels = max(self.redis_channels, int(info.get("pubsub_channels", 0)))
                self.redis_obuf = max(self.redis_obuf, int(info.get("client_recent_max_output_buffer", 0)))
                # This poller's own connection is to another database, so it is not counted.  Worker
                # processes name themselves in application_name ("brain-tasks host:pid").
                per_process = [int(n) for _app, n in conn.execute(
                    "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s AND "
                    "backend_type = 'client backend' GROUP BY application_name", (url.database,))]
                self.pg_peak = max(self.pg_peak, sum(per_process))
                self.pg_peak_process = max([self.pg_peak_process, *per_process])
                self.samples += 1
                self._stop_event.wait(POLL_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


# --- one synthetic fan-out -----------------------------------------------------------------------

@dataclass
class Fanout:
    n: int
    k: int
    wall: float
    runtimes: dict[str, list[float]]
    retried: int
    raised: int
    redis_peak: int
    pg_peak: int
    pg_peak_process: int
    redis_channels: int
    redis_channels_left: int
    redis_obuf: int
    cpu: dict[str, float]
    rows: dict[str, int]
    load: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))
    idle: dict[str, float] = field(default_factory=dict)

    @property
    def compute(self) -> float:
        return sum(sum(v) for v in self.runtimes.values())

    @property
    def tasks(self) -> int:
        return sum(len(v) for v in self.runtimes.values())

    @property
    def efficiency(self) -> float:
        return self.compute / (self.k * self.wall)

    @property
    def overhead_per_symbol(self) -> float:
        return (self.k * self.wall - self.compute) / self.n


def _pids(redis_url: str, pg_url: str) -> tuple[int, int]:
    """(redis-server pid, PostgreSQL postmaster pid) of the throwaway servers."""
    import redis
    from sqlalchemy.engine import make_url

    redis_pid = int(redis.Redis.from_url(redis_url).info("server")["process_id"])
    data, _tmp = servers._PG_SERVERS[make_url(pg_url).port]
    postmaster = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    return redis_pid, postmaster


def run_synthetic(pg: str, redis_url: str, n: int, k: int, tmp: Path) -> Fanout:
    """One fan-out of `n` synthetic symbols on a `k`-process worker; checked, then measured."""
    import redis

    from brain_tasks.app import app
    from brain_tasks.brain.db import dispose_engine
    from brain_tasks.brain.migrate import upgrade
    from brain_tasks.client import BrainClient
    from brain_tasks.service.steps.collect import source_for
    from brain_tasks.settings import from_environ

    url = servers.create_database(pg)
    upgrade(url)
    redis.Redis.from_url(redis_url).flushall()
    home = tmp / f"n{n}"
    env = brain_env(url, redis_url, home, **SYNTHETIC_FANOUT, BRAIN_CONCURRENCY=str(k))
    settings = from_environ(env)
    symbols = synthetic_symbols(n)
    client = BrainClient(settings, app=app)
    log = home / "fanout.log"
    redis_pid, postmaster = _pids(redis_url, pg)
    with worker(env, name="fanout", queues="collect,train,analysis", concurrency=k, log_dir=home) as proc:
        # Every pool process answers once before the clock starts (spawned children import the ML stack).
        from celery import group

        group(app.signature("brain_tasks.ping", args=[i], queue="collect") for i in range(4 * k)) \
            .apply_async().get(timeout=300)
        offset = log.stat().st_size
        monitor = Monitor(redis_url, url)
        monitor.start()
        load = os.getloadavg()
        before = CpuSnapshot.take(proc.pid, redis_pid, postmaster)
        start, started_at = time.perf_counter(), time.time()
        handle = client.retrain(symbols, models=["baseline"], as_of=SYNTHETIC_AS_OF)
        dispose_engine(url)  # this process's connection: only the workers' are counted from here on
        summary = app.AsyncResult(handle.task_id).get(timeout=3 * 3600)
        wall = time.perf_counter() - start
        ended_at = time.time()
        cpu = CpuSnapshot.take(proc.pid, redis_pid, postmaster).minus(before)
        time.sleep(0.5)  # the summary's own subscription (this process) is released once it is read
        channels_left = int(redis.Redis.from_url(redis_url).info("stats")["pubsub_channels"])
        monitor.stop()
        load_after = os.getloadavg()
        time.sleep(0.5)  # the last lines of the log
        text = log.read_bytes()[offset:]
    status = client.run_status(handle.run_id, handle.attempt_id)
    assert summary.get("state") == status["state"], f"summary {summary.get('state')} vs rows {status['state']}"
    candles = len(source_for(settings).fetch_candles(symbols[0], settings.timeframe))
    rows = check_fanout(url, status, symbols, candles)
    runtimes: dict[str, list[float]] = defaultdict(list)
    ends: dict[str, list[tuple[float, float]]] = defaultdict(list)  # pool process -> (end, runtime)
    for stamp, process, name, seconds in SUCCEEDED.findall(text):
        task = name.decode().removeprefix("brain_tasks.")
        if task != "ping":
            runtimes[task].append(float(seconds))
            end = dt.datetime.strptime(stamp.decode(), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            ends[process.decode()].append((end, float(seconds)))
    dispose_engine(url)
    servers.drop_database(url)
    return Fanout(n=n, k=k, wall=wall, runtimes=dict(runtimes), retried=len(RETRIED.findall(text)),
                  raised=len(RAISED.findall(text)), redis_peak=monitor.redis_peak, pg_peak=monitor.pg_peak,
                  pg_peak_process=monitor.pg_peak_process,
                  redis_channels=monitor.redis_channels, redis_channels_left=channels_left,
                  redis_obuf=monitor.redis_obuf, cpu=cpu, rows=rows,
                  load=tuple(round(max(a, b), 2) for a, b in zip(load, load_after)),
                  idle=_idle(ends, started_at, ended_at))


def _idle(ends: dict[str, list[tuple[float, float]]], started_at: float, ended_at: float) -> dict[str, float]:
    """Where a pool process was not inside a task: before its first task (the enqueue and the fan-out),
    between two tasks (ack, fetch, hand-over: the per-task orchestration latency), after its last
    task (waiting for the other process, the summary's delivery).  Seconds summed over processes;
    log stamps are in milliseconds."""
    import numpy as np

    gaps, head, tail = [], 0.0, 0.0
    for runs_ in ends.values():
        runs_.sort()
        head += max(runs_[0][0] - runs_[0][1] - started_at, 0.0)
        tail += max(ended_at - runs_[-1][0], 0.0)
        gaps += [max(b_end - b_run - a_end, 0.0) for (a_end, _), (b_end, b_run) in itertools.pairwise(runs_)]
    g = np.array(gaps or [0.0])
    return {"head": head, "tail": tail, "between": float(g.sum()), "n": len(gaps),
            "median_ms": 1000 * float(np.median(g)), "p90_ms": 1000 * float(np.percentile(g, 90)),
            "processes": len(ends)}


IMPORTANCE_IN_TRAINING = "importance inside train_symbol"


def profile_steps(pg: str, n: int) -> dict[str, tuple[float, float]]:
    """Each chain step's work called in this process (no Celery, no bookkeeping) for `n` symbols:
    {step: (mean wall ms, mean CPU ms)}, to hold the worker's runtimes against."""
    from brain_tasks.brain.db import dispose_engine, make_engine
    from brain_tasks.service.chain import ChainState
    from brain_tasks.service.steps import choose, compare, explain, promote, reads, sizer, train
    from brain_tasks.brain.migrate import upgrade
    from brain_tasks.service.steps.collect import collect, source_for
    from brain_tasks.intake import as_of_date
    from brain_tasks.settings import from_environ

    url = servers.create_database(pg)
    upgrade(url)
    settings = from_environ({"BRAIN_DATABASE_URL": url, **SYNTHETIC_FANOUT})
    engine, day, source = make_engine(url), as_of_date(SYNTHETIC_AS_OF), source_for(settings)
    reads.train_config(settings)
    import brain_tasks.ml.pipeline  # noqa: F401  (imported before timing, as a worker's children have it)

    steps = {
        "collect_candles": lambda sym, prev: collect(engine, source, "candles", sym, timeframe=settings.timeframe),
        "train_symbol": lambda sym, prev: ChainState.start(sym, day).with_model(
            train.train_symbol(engine, settings, sym, "baseline", day)),
        "compare_models": lambda sym, prev: compare.compare_models(engine, settings, prev),
        "compute_importance": lambda sym, prev: explain.compute_importance(engine, settings, prev),
        "check_rollback": lambda sym, prev: promote.check_rollback(engine, settings, prev),
        "select_model": lambda sym, prev: choose.select_model(engine, settings, prev),
        "train_sizer": lambda sym, prev: sizer.train_sizer(engine, settings, prev),
    }
    spent: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for symbol in synthetic_symbols(n, prefix="PRF"):
        prev: Any = None
        for name, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            out = step(symbol, prev)
            spent[name].append((time.perf_counter() - wall, time.process_time() - cpu))
            trained = out.models.get("baseline") if name == "train_symbol" else None
            if trained is not None and trained.importance_cpu_s is not None:
                # Importance is computed inside training (out of sample, per fold): its CPU beside the rest.
                spent[IMPORTANCE_IN_TRAINING].append((trained.importance_cpu_s,
                                                      trained.cpu_s - trained.importance_cpu_s))
            prev = out if name != "collect_candles" else None
    dispose_engine(url)
    servers.drop_database(url)
    return {k: (1000 * sum(w for w, _ in v) / len(v), 1000 * sum(c for _, c in v) / len(v)) for k, v in spent.items()}


def report(results: list[Fanout], steps: dict[str, tuple[float, float]] | None = None) -> None:
    k = results[0].k
    print(f"\nsynthetic fan-out: {SYNTHETIC_FANOUT}, as of {SYNTHETIC_AS_OF}, {k} worker processes, "
          f"{os.cpu_count()} cores")
    print("\n| N | tasks | wall s | compute s | efficiency | overhead s/symbol | wall s/symbol | Redis peak MiB "
          "| PG peak conns (all / one process) | retried / raised |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.n} | {r.tasks} | {r.wall:.1f} | {r.compute:.1f} | {r.efficiency:.3f} | "
              f"{r.overhead_per_symbol:.3f} | {r.wall / r.n:.3f} | {r.redis_peak / 2**20:.1f} | "
              f"{r.pg_peak} / {r.pg_peak_process} | {r.retried} / {r.raised} |")
    print("\nRedis: subscribed channels at the peak / left after the run, largest client output buffer KiB: "
          + ", ".join(f"N={r.n}: {r.redis_channels} / {r.redis_channels_left}, {r.redis_obuf / 1024:.0f}"
                      for r in results))
    print("\nCPU seconds during the run, by process (machine busy = every process on the machine, others included)")
    print("\n| N | pool processes | worker main | redis-server | PostgreSQL | this process | machine busy "
          "(cores) | load avg 1/5/15 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        c = r.cpu
        print(f"| {r.n} | {c['pool']:.1f} | {c['worker_main']:.1f} | {c['redis']:.1f} | {c['postgres']:.1f} | "
              f"{c['bench']:.1f} | {c['machine_busy']:.1f} ({c['machine_busy'] / r.wall:.2f}) | "
              f"{'/'.join(f'{x:.1f}' for x in r.load)} |")
    print("\nidle time of the pool processes (K x wall - compute), seconds summed over processes: before their "
          "first task (enqueue, fan-out), between tasks (ack, fetch, hand-over) and after their last one")
    print("\n| N | before first | between tasks | gaps | median gap ms | p90 gap ms | after last |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        i = r.idle
        print(f"| {r.n} | {i['head']:.1f} | {i['between']:.1f} | {i['n']} | {i['median_ms']:.1f} | {i['p90_ms']:.1f} "
              f"| {i['tail']:.1f} |")
    big = results[-1]
    print(f"\nruntime by task (N = {big.n}): where the pool processes' time goes")
    steps = steps or {}
    print("(in process: the step's own work called without Celery for a few symbols, wall and CPU per call)")
    print("\n| task | count | total s | share | mean ms | max ms | in process: wall ms | in process: CPU ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, times in sorted(big.runtimes.items(), key=lambda kv: -sum(kv[1])):
        own = steps.get(name)
        print(f"| {name} | {len(times)} | {sum(times):.1f} | {sum(times) / big.compute:.1%} | "
              f"{1000 * sum(times) / len(times):.1f} | {1000 * max(times):.1f} | "
              + (f"{own[0]:.1f} | {own[1]:.1f} |" if own else " |  |"))
    if IMPORTANCE_IN_TRAINING in steps:
        imp, rest = steps[IMPORTANCE_IN_TRAINING]
        print(f"\nimportance (out of sample, inside train_symbol, in process): {imp:.1f} CPU ms per symbol against "
              f"{rest:.1f} ms for the rest of the task: {imp / rest:.2f} x (goal <= 0.5)")
    print(f"\nrows in the Brain (N = {big.n}): " + ", ".join(f"{t} {n}" for t, n in sorted(big.rows.items())))
    if len(results) >= 2:
        a, b = results[-2], results[-1]
        ns = [r.n for r in results]
        print("\nscaling (least squares over N = " + ", ".join(map(str, ns)) + "; ratio = per-symbol figure at "
              f"N={b.n} / N={a.n}, 1.0 = linear)")
        for what, ys in (("wall s", [r.wall for r in results]),
                         # CPU of the run's own processes does not depend on what else the machine runs.
                         ("CPU s of the run (pool, worker main, Redis, PostgreSQL)", [_own_cpu(r) for r in results])):
            slope, intercept, r2 = _fit(ns, ys)
            ratio = (ys[-1] / b.n) / (ys[-2] / a.n)
            print(f"- {what}: {intercept:.2f} + {slope:.4f} x N  (R^2 = {r2:.4f}); ratio {ratio:.2f}")


def _own_cpu(r: Fanout) -> float:
    return r.cpu["pool"] + r.cpu["worker_main"] + r.cpu["redis"] + r.cpu["postgres"]


def _fit(xs: list[int], ys: list[float]) -> tuple[float, float, float]:
    """(slope, intercept, R^2) of the least-squares line through the points."""
    import numpy as np

    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    r2 = 1 - float(((y - intercept - slope * x) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return float(slope), float(intercept), r2


# --- the earlier comparison on the real sample ---------------------------------------------------

def _prepare_sample(url: str, symbols: list[str]) -> None:
    from brain_tasks.brain.db import make_engine
    from brain_tasks.brain.migrate import upgrade
    from brain_tasks.service.steps.collect import ingest_freqtrade

    upgrade(url)
    ingest_freqtrade(make_engine(url), REPO / "sample" / "freqtrade-testdata", symbols=symbols, timeframe="5m",
                     exchange="freqtrade")


def sequential(url: str, work: list[tuple[str, str]]) -> float:
    """Wall seconds of an in-process loop over the work."""
    from brain_tasks.brain.db import make_engine
    from brain_tasks.intake import as_of_date
    from brain_tasks.service.steps import reads, train
    from brain_tasks.settings import from_environ

    settings = from_environ({"BRAIN_DATABASE_URL": url})
    engine = make_engine(url)
    reads.train_config(settings)  # import the ML stack before timing, as a warm worker has
    import brain_tasks.ml.pipeline  # noqa: F401

    start = time.perf_counter()
    for symbol, model in work:
        train.train_symbol(engine, settings, symbol, model, as_of_date(SAMPLE_AS_OF))
    return time.perf_counter() - start


def parallel(url: str, broker: str, work: list[tuple[str, str]], k: int, home: Path) -> tuple[float, float]:
    """Wall seconds of the work as a group on K processes, and the sum of the tasks' own compute seconds."""
    from celery import Celery, group

    env = brain_env(url, broker, home)
    app = Celery(broker=broker, backend=broker)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
    with worker(env, name="bench", queues="train,collect,analysis", concurrency=k, log_dir=home):
        group(app.signature("brain_tasks.ping", args=[i], queue="collect") for i in range(4 * k)) \
            .apply_async().get(timeout=300)
        start = time.perf_counter()
        results = group(app.signature("brain_tasks.train_symbol", args=[s, m, SAMPLE_AS_OF], queue="train")
                        for s, m in work).apply_async().get(timeout=3600)
        wall = time.perf_counter() - start
    failed = [r for r in results if r.get("status") != "succeeded"]
    if failed:
        raise SystemExit(f"tasks failed: {json.dumps(failed)[:2000]}")
    return wall, sum(float(r["seconds"]) for r in results)


def sample(n_symbols: int, models: list[str], k: int) -> None:
    pairs = sorted(f.name.split("-")[0].replace("_", "/") for f in
                   (REPO / "sample" / "freqtrade-testdata").glob("*_BTC-5m.feather"))[:n_symbols]
    work = [(s, m) for s in pairs for m in models]
    with servers.postgres_server() as pg, servers.redis_server() as redis_url, \
            tempfile.TemporaryDirectory() as tmp:
        seq_url, par_url = servers.create_database(pg), servers.create_database(pg)
        _prepare_sample(seq_url, pairs)
        _prepare_sample(par_url, pairs)
        seq_wall = sequential(seq_url, work)
        par_wall, compute = parallel(par_url, redis_url, work, k, Path(tmp))
    print(f"work: {len(pairs)} symbols x {len(models)} model types = {len(work)} train_symbol tasks, "
          f"{k} worker processes, {os.cpu_count()} cores")
    print(f"sequential in-process loop: {seq_wall:8.2f} s")
    print(f"celery fan-out (redis+pg):  {par_wall:8.2f} s   (sum of task compute {compute:.2f} s)")
    print(f"speedup:    {seq_wall / par_wall:.2f}x")
    print(f"efficiency: {compute / (k * par_wall):.3f}  (= sum of per-task compute seconds / (K x wall seconds))")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symbols", type=int, default=None, help="one fan-out of this many symbols")
    p.add_argument("--scaling", default=None, help="comma-separated N, one fan-out each (default 10,100,1000)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="worker processes (default: cores)")
    p.add_argument("--profile", type=int, default=20, help="symbols of the in-process step profile (0: none)")
    p.add_argument("--sample", action="store_true", help="the real sample: sequential loop vs K processes")
    p.add_argument("--models", default="lightgbm,xgboost", help="model types of --sample")
    args = p.parse_args(argv)
    if args.sample:
        sample(args.symbols or 10, [m for m in args.models.split(",") if m], args.workers)
        return
    if args.symbols is not None and args.scaling is not None:
        p.error("--symbols and --scaling are exclusive")
    ns = [args.symbols] if args.symbols is not None else sorted(int(x) for x in (args.scaling or "10,100,1000")
                                                                .split(",") if x)
    results = []
    with servers.postgres_server() as pg, servers.redis_server() as redis_url, \
            tempfile.TemporaryDirectory() as tmp:
        # The bench process enqueues like Engine code: the app reads the broker from the environment.
        os.environ["BRAIN_BROKER_URL"] = redis_url
        steps = profile_steps(pg, args.profile) if args.profile else None
        for n in ns:
            results.append(run_synthetic(pg, redis_url, n, args.workers, Path(tmp)))
            r = results[-1]
            print(f"N={n}: wall {r.wall:.1f} s, compute {r.compute:.1f} s, efficiency {r.efficiency:.3f}", flush=True)
    report(results, steps)


if __name__ == "__main__":
    main()
