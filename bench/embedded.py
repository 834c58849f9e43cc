"""Embedded mode vs Redis mode: the same `brain-tasks retrain` of N synthetic symbols, only the broker differs.

Both modes write the Brain to the same kind of database (a fresh SQLite file each, or with
`--database postgres` a fresh database each on one throwaway PostgreSQL), train the cheapest model
(`baseline`) with the sizer off, on 2 worker processes.  Redis mode: a `celery worker` already
running and warm, Redis as broker and result backend, the command run with `--wait`.  Embedded mode:
the command starts and stops its own worker (filesystem broker, SQLite result backend).

Prints per mode: the wall time of a 1-symbol command and of the N-symbol command, the run itself
(the worker log's `daily_retrain` received -> `summarize_run` succeeded), the embedded worker's
fixed costs (start until it answers, stop while idle), and the ratios.

    python bench/embedded.py [--symbols 50] [--database sqlite|postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import servers
from tests.workers import brain_env, worker

AS_OF = "2024-02-29"  # the synthetic market spans 2024-01-01 .. 2024-03-01
CLI = [sys.executable, "-m", "brain_tasks.cli"]
LOG_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/[^\]]+\] "
                    r"Task (?:brain_tasks|celery)\.(\w+)\[[^\]]+\] (\w+)(?: in ([\d.e-]+)s)?")

PROBE = """
import time
t0 = time.monotonic()
from brain_tasks.service.embedded import embedded_worker
from brain_tasks.settings import get_settings
with embedded_worker(get_settings(), ready_timeout=300) as worker:
    t1 = time.monotonic()
    if hasattr(worker, "wait_ready"):  # before round 8 the block was entered once the worker answered
        worker.wait_ready()
    t2 = time.monotonic()
print(t1 - t0, t2 - t0, time.monotonic() - t2)
"""


def _env(url: str, broker: str | None, home: Path) -> dict[str, str]:
    return brain_env(url, broker, home, BRAIN_EXCHANGE="synthetic", BRAIN_MODELS="baseline",
                     BRAIN_SIZER_TIMESTEPS="0", BRAIN_CONCURRENCY="2", OMP_NUM_THREADS="1")


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, env=env, cwd=cwd, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[2:])} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def _retrain(symbols: list[str], env: dict[str, str], cwd: Path) -> float:
    return _timed([*CLI, "retrain", "--symbols", ",".join(symbols), "--models", "baseline", "--as-of", AS_OF,
                   "--wait"], env, cwd)


def _runs(log: Path) -> list[tuple[float, float]]:
    """Per retrain in the worker log: seconds from `daily_retrain` received to `summarize_run` done,
    and the sum of the run's task seconds (what the tasks cost, whatever the orchestration)."""
    out, start, busy = [], None, 0.0
    for line in log.read_text(errors="replace").splitlines():
        m = LOG_TS.match(line)
        if not m:
            continue
        ts = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
        if m.group(2) == "daily_retrain" and m.group(3) == "received":
            start, busy = ts, 0.0
        elif m.group(3) == "succeeded":
            busy += float(m.group(4))
            if m.group(2) == "summarize_run" and start is not None:
                out.append(((ts - start).total_seconds(), busy))
    return out


@contextlib.contextmanager
def _database(kind: str, pg: str | None, tmp: Path, name: str) -> Iterator[str]:
    url = servers.create_database(pg) if kind == "postgres" else f"sqlite:///{tmp / f'{name}.db'}"
    yield url


def measure(mode: str, url: str, redis: str, tmp: Path, symbols: list[str]) -> dict[str, float]:
    home = tmp / mode
    home.mkdir(parents=True)
    env = _env(url, redis if mode == "redis" else None, home / ".brain")
    _timed([*CLI, "db", "upgrade"], env, home)
    out: dict[str, float] = {}
    if mode == "redis":
        with worker(env, name="bench", concurrency=2, log_dir=home):
            from celery import Celery, group

            app = Celery(broker=redis, backend=redis)
            app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
            group(app.signature("brain_tasks.ping", args=[i], queue="collect") for i in range(8)) \
                .apply_async().get(timeout=300)  # both pool processes up and warm, as in production
            out["one"] = _retrain(["ONE/USDT"], env, home)
            out["many"] = _retrain(symbols, env, home)
        log = home / "bench.log"
    else:
        start, answered, stop = (float(x) for x in subprocess.run(
            [sys.executable, "-c", PROBE], env=env, cwd=home, capture_output=True, text=True, check=True,
            timeout=600).stdout.split())
        out.update(probe_enter=start, probe_answered=answered, probe_stop=stop)
        out["one"] = _retrain(["ONE/USDT"], env, home)
        out["many"] = _retrain(symbols, env, home)
        log = home / ".brain" / "worker.log"
    (out["run_one"], out["busy_one"]), (out["run_many"], out["busy_many"]) = _runs(log)[-2:]
    out["efficiency"] = out["busy_many"] / (2 * out["run_many"])
    out["load"] = os.getloadavg()[1]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symbols", type=int, default=50)
    p.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--repeat", type=int, default=1,
                   help="measure both modes this many times, alternating which goes first; print the minimum "
                        "of each figure (the machine's other load only ever adds time)")
    args = p.parse_args()
    symbols = [f"S{i:03d}/USDT" for i in range(args.symbols)]
    results: dict[str, list[dict[str, float]]] = {"redis": [], "embedded": []}
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(servers.redis_server())
        pg = stack.enter_context(servers.postgres_server()) if args.database == "postgres" else None
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-embedded-")))
        for i in range(args.repeat):
            for mode in ("redis", "embedded") if i % 2 == 0 else ("embedded", "redis"):
                with _database(args.database, pg, tmp, f"{mode}{i}") as url:
                    results[mode].append(measure(mode, url, redis, tmp / f"{i}", symbols))
                    print(f"# {mode} {i}: " + " ".join(f"{k}={v:.2f}" for k, v in results[mode][-1].items()),
                          flush=True)
    r, e = ({k: min(m[k] for m in results[mode]) for k in results[mode][0]} for mode in ("redis", "embedded"))
    r["efficiency"], e["efficiency"] = (max(m["efficiency"] for m in results[mode]) for mode in ("redis", "embedded"))
    print(f"retrain of {args.symbols} synthetic symbols, model baseline, sizer off, 2 worker processes, "
          f"{os.cpu_count()} cores; Brain on {args.database} in both modes; best of {args.repeat}")
    print(f"{'':34}{'redis':>10}{'embedded':>10}{'ratio':>8}")
    n = args.symbols
    for key, label in (("one", "1-symbol command wall (s)"), ("many", f"{n}-symbol command wall (s)"),
                       ("run_one", "1-symbol run in the worker (s)"), ("run_many", f"{n}-symbol run in the worker (s)"),
                       ("busy_many", f"{n}-symbol sum of task seconds"),
                       ("efficiency", "  efficiency (sum / (2 x run))"), ("load", "  load average (5 min) after")):
        print(f"{label:34}{r[key]:10.2f}{e[key]:10.2f}{e[key] / r[key]:8.2f}")
    print(f"fixed cost per embedded command (1-symbol wall, embedded - redis): {e['one'] - r['one']:.2f} s")
    print(f"embedded worker: start until it can take the run {e['probe_enter']:.2f} s, until it answers "
          f"{e['probe_answered']:.2f} s; stop while idle {e['probe_stop']:.2f} s")


if __name__ == "__main__":
    main()
