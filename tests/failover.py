"""Helpers of the failover tests (tests/test_failover_redis.py, tests/test_failover_pg.py): one workload
(a retrain fan-out, then the nightly) sent by an Engine process that waits on each with `BrainClient.wait`,
beats that drive `reconcile_runs`, and the figures a failover costs.

Both tests compare their Brain with one undisturbed run of the same workload (`reference_url`, computed
once per session on the session's plain servers) through `tests.chaos.assert_same_rows`.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from brain_tasks.brain import runs
from brain_tasks.brain.db import make_engine
from tests import chaos
from tests.workers import REPO, SYNTHETIC_AS_OF, SYNTHETIC_FANOUT, brain_env, synthetic_symbols, wait_for, worker

SYMBOLS = synthetic_symbols(2, prefix="FO")
AS_OF = SYNTHETIC_AS_OF
# Small, fast work (two synthetic symbols, hourly bars, the baseline model, no sizer) and short limits, so
# that whatever a failover loses is re-driven by reconcile_runs within seconds: a step's deadline is its
# hard limit plus the stall timeout.  Beat's bar-close entry is pushed a day away so that no beat sends
# work of its own into the compared Brain.
ENV = {**SYNTHETIC_FANOUT, "BRAIN_VISIBILITY_TIMEOUT": "30", "BRAIN_TRAIN_TIME_LIMIT": "25",
       "BRAIN_TRAIN_SOFT_TIME_LIMIT": "20", "BRAIN_TASK_TIME_LIMIT": "25", "BRAIN_STALL_TIMEOUT": "5",
       "BRAIN_RECONCILE_INTERVAL": "2", "BRAIN_CONCURRENCY": "2", "BRAIN_BEAT_LOCK_TIMEOUT": "10",
       "BRAIN_SIGNALS_EVERY": "86400"}

# The Engine: the retrain, waited for; then (once `go` exists) the nightly, waited for.  For each it
# appends a JSON line to `done`: what ran, its final state and the wall-clock time `wait` returned.
ENGINE = """
import json, pathlib, time
from brain_tasks.client import BrainClient
client = BrainClient()

def record(run, handle, status):
    with open({done!r}, "a") as f:
        f.write(json.dumps({{"run": run, "run_id": handle.run_id, "attempt_id": handle.attempt_id,
                            "state": status["state"], "finished": time.time()}}) + "\\n")

handle = client.retrain({symbols!r}, models=["baseline"], as_of={as_of!r})
record("retrain", handle, client.wait(handle, timeout=300, poll=0.2))
while not pathlib.Path({go!r}).exists():
    time.sleep(0.05)
handle = client.nightly(as_of={as_of!r}, symbols={symbols!r})
record("nightly", handle, client.wait(handle, timeout=300, poll=0.2))
"""

SENDING_RECONCILE = re.compile(rb"Sending due task reconcile-runs")


@dataclass
class Engine:
    """The Engine process, the file that lets it go on to the nightly and the file it records runs in."""

    proc: subprocess.Popen
    go: Path
    done: Path

    def release_nightly(self) -> None:
        self.go.touch()

    def finished(self) -> dict[str, dict]:
        """The runs whose `wait` returned so far."""
        if self.proc.poll() not in (None, 0):
            out, err = self.proc.communicate()
            raise AssertionError(f"engine process failed ({self.proc.returncode}):\n{out}\n{err[-3000:]}")
        lines = self.done.read_text().splitlines() if self.done.exists() else []
        return {r["run"]: r for r in map(json.loads, lines)}

    def wait_for(self, run: str, timeout: float = 300) -> dict:
        wait_for(lambda: run in self.finished(), timeout, interval=0.1, what=f"the Engine's wait on the {run}")
        return self.finished()[run]


def start_engine(env: Mapping[str, str], tmp: Path) -> Engine:
    go, done = tmp / "go-nightly", tmp / "engine-runs.jsonl"
    code = ENGINE.format(symbols=SYMBOLS, as_of=AS_OF, go=str(go), done=str(done))
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    return Engine(proc, go, done)


@dataclass
class Supervised:
    """A worker kept running as a process manager keeps it (compose's `restart: unless-stopped`):
    `restarts` holds the time of each restart after the worker exited by itself."""

    restarts: list[float] = field(default_factory=list)


@contextlib.contextmanager
def supervised_worker(env: Mapping[str, str], *, name: str, concurrency: int, log_dir: Path) -> Iterator[Supervised]:
    """`tests.workers.worker`, started again whenever it exits (stopped for good when the block exits).

    Why: Celery 5.7's worker can exit after a Sentinel failover ("Unrecoverable error: AttributeError:
    'NoneType' object has no attribute 'hostname'", raised in kombu's SentinelChannel while it closes the
    lost connection and restores the messages it held, seen twice in about 38 failovers on this loaded
    machine); in production the process manager restarts it, and so does this."""
    state = Supervised()
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        current = [stack.enter_context(worker(env, name=name, concurrency=concurrency, log_dir=log_dir))]

        def watch() -> None:
            while not stop.wait(0.5):
                if current[0].poll() is not None:
                    state.restarts.append(time.time())
                    current[0] = stack.enter_context(worker(env, name=name, concurrency=concurrency,
                                                            log_dir=log_dir))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            yield state
        finally:
            stop.set()
            watcher.join()


def beat(env: Mapping[str, str], log: Path) -> subprocess.Popen:
    """A `celery beat` (RedBeat, the app's own configuration) logging to `log`."""
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "brain_tasks.app", "beat", "-l", "info",
                             "-s", str(log) + ".schedule"], env=dict(env), cwd=REPO, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """Kill a process started in a session of its own (a beat) with its children."""
    import contextlib
    import os
    import signal

    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def reconcile_sends(logs: list[Path]) -> list[int]:
    """How many times each beat's log says it sent reconcile-runs."""
    return [len(SENDING_RECONCILE.findall(log.read_bytes())) if log.exists() else 0 for log in logs]


def one_beat_schedules(logs: list[Path], interval: float, window: float = 8.0) -> list[int]:
    """Sends of reconcile-runs per beat over `window` seconds from now: exactly one beat sends, about
    once per `interval` (not twice as often: no double schedule; not never: no lost beat)."""
    before = reconcile_sends(logs)
    time.sleep(window)
    sent = [after - b for after, b in zip(reconcile_sends(logs), before)]
    expected = window / interval
    assert sum(1 for n in sent if n) == 1, f"reconcile-runs sent by {sent} beats in {window:.0f} s: want one"
    assert expected - 2 <= sum(sent) <= expected + 1, f"reconcile-runs sent {sum(sent)} times in {window:.0f} s"
    return sent


def redrives(url: str, run_id: str, attempt_id: str) -> int:
    """Re-drives reconcile_runs made for the attempt (the manual ones would be a new attempt)."""
    status = runs.run_status(make_engine(url), run_id, attempt_id)
    return sum(s["redrives"] for s in status["symbols"].values())


_REFERENCE: dict[str, str] = {}


def reference_url(pg_url: str, redis_url: str, tmp: Path) -> str:
    """The Brain of the workload run once without a fault (computed once per session server)."""
    if pg_url not in _REFERENCE:
        url, broker = chaos.fresh_brain(pg_url), chaos.redis_db(redis_url, 13)
        env = brain_env(url, broker, tmp, **ENV)
        with worker(env, name="reference", concurrency=2, log_dir=tmp):
            engine = start_engine(env, tmp)
            engine.release_nightly()
            done = {run: engine.wait_for(run) for run in ("retrain", "nightly")}
        assert [done[r]["state"] for r in ("retrain", "nightly")] == ["succeeded", "succeeded"], done
        _REFERENCE[pg_url] = url
    return _REFERENCE[pg_url]


def figures(name: str, rows: list[dict]) -> str:
    """The measured recovery, one line per fault, as the test prints it (docs/ha.md quotes it)."""
    lines = [f"{name}: " + ", ".join(f"{k} {v}" for k, v in row.items()) for row in rows]
    text = "\n".join(lines)
    print(text)
    return text


def wait_until(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    wait_for(predicate, timeout, interval=0.05, what=what)
