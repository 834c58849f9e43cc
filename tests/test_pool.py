"""Pool health: after kill -9 of one pool child the worker is back at full size, and no replacement
child is killed for starting too slowly ("Timed out waiting for UP message"), even on a loaded machine."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.workers import brain_env, wait_for, worker

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CONCURRENCY = 2


@contextlib.contextmanager
def busy_cores(n: int) -> Iterator[None]:
    """`n` processes spinning on the CPU: a child's start-up is slowest on a loaded machine."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _pool_pids(app, name: str) -> list[int]:
    stats = app.control.inspect(destination=[name], timeout=5).stats() or {}
    return list(stats.get(name, {}).get("pool", {}).get("processes", []))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
        return f.read().split(")")[-1].split()[0] != "Z"


def test_a_killed_child_is_replaced_and_the_replacement_lives(tmp_path, redis_url):
    from celery import Celery

    env = brain_env(f"sqlite:///{tmp_path / 'brain.db'}", redis_url, tmp_path, BRAIN_CONCURRENCY=str(CONCURRENCY))
    app = Celery(broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
    log = tmp_path / "pool.log"
    with worker(env, name="pool", concurrency=CONCURRENCY, log_dir=tmp_path):
        name = next(iter(app.control.inspect(timeout=5).ping() or {}), None)
        assert name and name.startswith("pool@"), name
        wait_for(lambda: len(_pool_pids(app, name)) == CONCURRENCY, 60, what="the pool at full size")
        victim = _pool_pids(app, name)[0]
        with busy_cores(CONCURRENCY + 1):
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: (pids := _pool_pids(app, name)) and victim not in pids and len(pids) == CONCURRENCY
                     and all(_alive(p) for p in pids), 120, interval=0.5, what="a replacement child")
            replacement = next(p for p in _pool_pids(app, name) if p != victim)
            # The replacement is up when it has run a task: its log name is a new SpawnPoolWorker-N.
            served = re.compile(rf"SpawnPoolWorker-(?!(?:{'|'.join(map(str, range(1, CONCURRENCY + 1)))})\])\d+\] "
                                r"Task brain_tasks\.ping")
            deadline = time.monotonic() + 180
            while not served.search(log.read_text(errors="replace")):
                assert time.monotonic() < deadline, "the replacement child never ran a task"
                results = [app.send_task("brain_tasks.ping", args=[i], queue="collect") for i in range(20)]
                for r in results:
                    r.get(timeout=120)
        assert replacement in _pool_pids(app, name) and _alive(replacement)
        assert len(_pool_pids(app, name)) == CONCURRENCY
    text = log.read_text(errors="replace")
    assert "Timed out waiting for UP message" not in text
    assert text.count("exited with 'signal 9 (SIGKILL)'") == 1, "only the victim was killed"
