"""Helpers of the fault tests: a run sent by an "Engine" process, "same rows as an undisturbed run",
beat's reconcile loop stood in for (`reconciling`), and copies of one call released at once (`at_once`).

A fault test runs the same retrain twice, once undisturbed and once under a fault, on two fresh
databases, and then requires every Brain table to hold the same rows (wall-clock columns aside).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from brain_tasks.brain.db import dispose_engine, make_engine
from brain_tasks.brain.migrate import upgrade
from tests import servers
from tests.workers import REPO, wait_for
from tests import snapshots

AS_OF = "2018-01-30"

ENGINE = """
import json
from celery import Celery
app = Celery(broker={broker!r}, backend={broker!r})
app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
result = app.send_task("brain_tasks.daily_retrain", queue="analysis",
                       kwargs={{"symbols": {symbols!r}, "models": {models!r}, "as_of": {as_of!r}}})
print(json.dumps(result.get(timeout={timeout!r})))
"""


# Beat's stand-in: reconcile_runs every BRAIN_RECONCILE_INTERVAL seconds, surviving the broker's absence.
RECONCILER = """
import time
from brain_tasks.settings import get_settings
from brain_tasks.tasks import reconcile_runs
while True:
    try:
        print(reconcile_runs.apply().get(), flush=True)
    except Exception as exc:
        print("reconcile failed:", repr(exc), flush=True)
    time.sleep(get_settings().reconcile_interval)
"""


@contextlib.contextmanager
def reconciling(env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`RECONCILER` running in its own process with `env` (output to `log`) while the block runs."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", RECONCILER], env=dict(env), cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def fresh_brain(server_url: str) -> str:
    """A new database on `server_url`'s server, migrated to head."""
    url = servers.create_database(server_url)
    upgrade(url)
    dispose_engine(url)
    return url


def redis_db(redis_url: str, n: int) -> str:
    return re.sub(r"/\d+$", f"/{n}", redis_url)


def start_retrain(broker: str, symbols: list[str], models: list[str], env: Mapping[str, str],
                  timeout: float = 900) -> subprocess.Popen:
    """An Engine process that enqueues the daily retrain and prints its summary (see `summary_of`)."""
    code = ENGINE.format(broker=broker, symbols=symbols, models=models, as_of=AS_OF, timeout=timeout)
    return subprocess.Popen([sys.executable, "-c", code], env=dict(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def summary_of(proc: subprocess.Popen, timeout: float = 900) -> dict:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"engine process failed ({proc.returncode}):\n{out}\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def when_logged(log: Path, pattern: str, timeout: float = 300) -> None:
    """Wait until the worker log shows `pattern` (a regular expression)."""
    regex = re.compile(pattern)
    wait_for(lambda: log.exists() and regex.search(log.read_text(errors="replace")), timeout, interval=0.02,
             what=f"{pattern!r} in {log.name}")


def snapshot(url: str) -> dict:
    """Every Brain table of `url`, wall-clock columns left out."""
    return snapshots.snapshot(make_engine(url), snapshots.wall_clock_columns())


def assert_same_rows(reference_url: str, url: str) -> None:
    """Every Brain table of `url` holds the rows of `reference_url` (wall-clock columns aside; runs
    compared by their latest attempt, without attempt ids: each enqueue is an attempt of its own)."""
    from tests.test_jobs import _comparable

    snapshots.assert_same_database(_comparable(snapshots.snapshot(make_engine(reference_url))),
                               _comparable(snapshots.snapshot(make_engine(url))))


def during(proc: subprocess.Popen, faults: list[tuple[Path, str, Callable[[], None]]]) -> None:
    """For each (log, pattern, fault): wait for the pattern, then inject the fault; the run goes on."""
    for log, pattern, fault in faults:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {pattern!r} was logged: the fault came too late")
        when_logged(log, pattern)
        fault()


def at_once(fn: Callable[[], Any], copies: int = 2) -> list[Any]:
    """Run `copies` calls of `fn` in threads released together by a barrier; return what each returned
    or raised (an exception is returned, not raised, so the caller sees every copy)."""
    barrier = threading.Barrier(copies)
    out: list[Any] = [None] * copies

    def one(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn()
        except Exception as exc:  # noqa: BLE001 - the test reports it
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(copies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out
