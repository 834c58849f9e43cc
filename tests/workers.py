"""Real Celery worker processes for tests, benchmarks and end-to-end runs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Mapping

from brain_tasks.embedded import worker_command

REPO = Path(__file__).resolve().parent.parent


def brain_env(database_url: str, broker_url: str | None, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker / engine process: inherited, minus any BRAIN_* of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAIN_")}
    env.update({"BRAIN_DATABASE_URL": database_url, "BRAIN_HOME": str(home),
                "BRAIN_SAMPLE_DIR": str(REPO / "sample" / "freqtrade-testdata"), "PYTHONPATH": str(REPO)})
    if broker_url:
        env["BRAIN_BROKER_URL"] = broker_url
    env.update(extra)
    return env


@contextlib.contextmanager
def worker(env: Mapping[str, str], *, name: str = "w1", queues: str = "collect,train,analysis",
           concurrency: int = 1, log_dir: Path) -> Iterator[subprocess.Popen]:
    """A `celery worker` process; stopped (TERM, then KILL) when the block exits."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{name}.log", "ab")
    cmd = worker_command(name, queues, concurrency)
    # A session of its own, so a test can kill the whole process group (main process + pool children).
    proc = subprocess.Popen(cmd, env=dict(env), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                            start_new_session=True)
    try:
        log_path = log_dir / f"{name}.log"
        deadline = time.monotonic() + 120
        while b" ready." not in log_path.read_bytes():
            if proc.poll() is not None:
                raise AssertionError(f"worker {name} exited ({proc.returncode}):\n"
                                     + log_path.read_text(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {name} not ready after 120 s")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def run_python(code: str, env: Mapping[str, str], timeout: float = 600) -> str:
    """Run `code` in a separate Python process (an "Engine") and return its stdout."""
    proc = subprocess.run([sys.executable, "-c", code], env=dict(env), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise AssertionError(f"engine process failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
