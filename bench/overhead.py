"""Orchestration overhead: the project's worker against a plain Celery app, on one Redis.

Both workers run `-c 2` on the same throwaway Redis (different databases) and execute a trivial task:
- throughput: N trivial tasks sent one by one, wall time until every result is back (tasks/s);
- chord: a 1000-task chord of trivial tasks whose body gathers the results (seconds).
The ratio project / plain is the overhead (goal: within 1.5x).  `--old` adds the project's worker as
it was configured before (`--max-tasks-per-child=200`); `--attribute` adds a plain app with the
project's delivery settings (late acks, prefetch 1, spawn),
to tell what those choices cost from what the project's code costs.

Each figure is the median of `--repeat` measurements against the same running worker (the machine's
other load moves single runs by 20-30%).

    python bench/overhead.py [--tasks 2000] [--chord 1000] [--repeat 3] [--old] [--attribute]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests import servers
from tests.workers import brain_env

CONCURRENCY = 2


@contextlib.contextmanager
def running(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b" ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def measure(broker: str, task: str, queue: str, n_tasks: int, n_chord: int) -> tuple[float, float]:
    """(trivial tasks per second, seconds of an `n_chord`-task chord) against the worker on `broker`."""
    from celery import Celery, chord

    app = Celery(broker=broker, backend=broker)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
    for r in [app.send_task(task, args=[i], queue=queue) for i in range(4 * CONCURRENCY)]:
        r.get(timeout=120)  # warm: children up, connections open
    start = time.perf_counter()
    results = [app.send_task(task, args=[i], queue=queue) for i in range(n_tasks)]
    for r in results:
        r.get(timeout=600)
    rate = n_tasks / (time.perf_counter() - start)
    header = [app.signature(task, args=[i]).set(queue=queue) for i in range(n_chord)]
    start = time.perf_counter()
    out = chord(header)(app.signature("celery.accumulate", kwargs={"index": 0}).set(queue=queue)).get(timeout=900)
    seconds = time.perf_counter() - start
    assert len(out) == n_chord, len(out)
    return rate, seconds


def median_of(repeat: int, *args: object) -> tuple[float, float]:
    runs = [measure(*args) for _ in range(repeat)]  # type: ignore[arg-type]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--chord", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="measurements per worker; medians are printed")
    parser.add_argument("--old", action="store_true", help="also the old configuration (recycle every 200 tasks)")
    parser.add_argument("--attribute", action="store_true", help="also a plain app with the project's settings")
    args = parser.parse_args()
    from brain_tasks.service.embedded import worker_command

    home = Path(tempfile.mkdtemp(prefix="brain-overhead-"))
    rows: dict[str, tuple[float, float]] = {}
    with servers.redis_server() as redis_url:
        base = redis_url.rsplit("/", 1)[0]
        plain_env = {**os.environ, "PLAIN_BROKER_URL": f"{base}/1", "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "celery", "-A", "bench.plain_app", "worker", "-c", str(CONCURRENCY),
               "-Q", "plain", "-l", "INFO", "--without-gossip", "--without-mingle"]
        with running(cmd, plain_env, home / "plain.log"):
            rows["plain Celery"] = median_of(args.repeat, f"{base}/1", "plain.ping", "plain", args.tasks,
                                             args.chord)
        if args.attribute:
            like_env = {**plain_env, "PLAIN_BROKER_URL": f"{base}/5", "PLAIN_LIKE_BRAIN": "1"}
            with running(cmd, like_env, home / "plain-like.log"):
                rows["plain Celery, the project's settings"] = median_of(
                    args.repeat, f"{base}/5", "plain.ping", "plain", args.tasks, args.chord)
        variants = [("brain_tasks", ())] + ([("brain_tasks, old (200 tasks/child)",
                                               ("--max-tasks-per-child=200",))] if args.old else [])
        for i, (label, extra) in enumerate(variants):
            env = brain_env(f"sqlite:///{home / 'brain.db'}", f"{base}/{2 + i}", home)
            cmd = worker_command(f"bench{i}", "collect", CONCURRENCY, *extra)
            with running(cmd, env, home / f"brain{i}.log"):
                rows[label] = median_of(args.repeat, f"{base}/{2 + i}", "brain_tasks.ping", "collect", args.tasks,
                                        args.chord)
    plain_rate, plain_chord = rows["plain Celery"]
    print(f"{args.tasks} trivial tasks and a {args.chord}-task chord, -c {CONCURRENCY}, one Redis, "
          f"median of {args.repeat}")
    print(f"{'worker':38} {'tasks/s':>9} {'chord s':>9} {'x plain (tasks)':>16} {'x plain (chord)':>16}")
    for label, (rate, chord_s) in rows.items():
        print(f"{label:38} {rate:9.0f} {chord_s:9.2f} {plain_rate / rate:16.2f} {chord_s / plain_chord:16.2f}")


if __name__ == "__main__":
    main()
