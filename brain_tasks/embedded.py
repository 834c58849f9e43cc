"""Embedded mode: no broker configured, yet the same canvases run on a real Celery worker.

The command starts a worker process of its own on Kombu's filesystem transport (message files in
`BRAIN_HOME/broker`) with the SQLAlchemy result backend on a local SQLite file, sends the canvas,
waits, and stops the worker.  Crash recovery is weaker than with Redis: a worker killed mid-task
loses that task (the filesystem transport does not re-deliver unacknowledged messages), so embedded
mode is at-most-once on a crash.  Production runs Redis.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from brain_tasks.settings import Settings

CRASH_WARNING = ("embedded mode (no BRAIN_BROKER_URL): tasks run on a local worker process over a "
                 "filesystem broker; a worker killed mid-task loses that task (at-most-once). "
                 "Set BRAIN_BROKER_URL=redis://... for crash recovery.")


def prepare_folders(settings: Settings) -> None:
    """The folders of the filesystem broker (Kombu does not create them)."""
    for folder in (settings.broker_folder, *(settings.broker_folder.parent / f for f in ("processed", "control"))):
        folder.mkdir(parents=True, exist_ok=True)


def worker_command(name: str, queues: str = "collect,train,analysis", concurrency: int = 1,
                   *extra: str) -> list[str]:
    """The `celery worker` command line of this app (gossip and mingle off: workers share nothing)."""
    return [sys.executable, "-m", "celery", "-A", "brain_tasks.app", "worker", "-Q", queues,
            "-c", str(concurrency), "-n", f"{name}@%h", "-l", "INFO", "--without-gossip", "--without-mingle",
            *extra]


@contextlib.contextmanager
def embedded_worker(settings: Settings, *, log_path: Path | None = None,
                    ready_timeout: float = 180.0) -> Iterator[subprocess.Popen]:
    """A real `celery worker` process consuming every queue, for the duration of the block."""
    from brain_tasks.app import app

    prepare_folders(settings)
    log_path = log_path or settings.home / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = worker_command(f"embedded-{os.getpid()}", "collect,train,analysis", settings.concurrency,
                         "--without-heartbeat")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + ready_timeout
        result = app.send_task("brain_tasks.ping", args=["ready"])
        while not result.ready():
            if proc.poll() is not None:
                raise RuntimeError(f"the embedded worker exited with code {proc.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the embedded worker did not answer within {ready_timeout:.0f} s; "
                                   f"see {log_path}")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()  # warm shutdown: finish the task at hand
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
