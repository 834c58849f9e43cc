"""Embedded mode: no broker configured, yet the same canvases run on a real Celery worker.

The command starts a worker process of its own on Kombu's filesystem transport (message files in
`BRAIN_HOME/broker`, written under a temporary name and renamed into place: `brainfs://`) with the
SQLAlchemy result backend on a local SQLite file, sends the canvas, waits while checking that the
worker is alive, and stops the worker.  Crash recovery is weaker than with Redis: a worker killed
mid-task loses that task (the filesystem transport does not re-deliver unacknowledged messages), so
embedded mode is at-most-once on a crash; the command then fails in one line, cancels the attempt's
unfinished symbols and deletes its messages, so nothing is left pending or replayed later.
Production runs Redis.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from kombu.transport import TRANSPORT_ALIASES, filesystem

from brain_tasks.settings import Settings

TRANSPORT_ALIAS = "brainfs"

CRASH_WARNING = ("embedded mode (no BRAIN_BROKER_URL): tasks run on a local worker process over a "
                 "filesystem broker; a worker killed mid-task loses that task (at-most-once). "
                 "Set BRAIN_BROKER_URL=redis://... for crash recovery.")


class AtomicChannel(filesystem.Channel):
    """Kombu's filesystem channel, except that a message becomes visible only once it is complete.

    Kombu creates the message file under its final name and then writes it; a consumer listing the
    folder in between reads an empty or partial file, and the worker died of that ("Unrecoverable
    error: JSONDecodeError").  Here the message is written under a name no consumer matches (a
    leading dot) and renamed into place, which is atomic on one filesystem.
    """

    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        name = f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as f:
                f.write(json.dumps(payload).encode())
            os.replace(partial, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class AtomicTransport(filesystem.Transport):
    Channel = AtomicChannel


def register_transport() -> str:
    """Make `brainfs://` name the atomic filesystem transport (celeryconfig's embedded branch)."""
    TRANSPORT_ALIASES[TRANSPORT_ALIAS] = f"{__name__}:AtomicTransport"
    return f"{TRANSPORT_ALIAS}://"


def _mentions(path: Path, needles: Iterable[bytes]) -> bool:
    try:
        raw = path.read_bytes()
        message = json.loads(raw)
        body = message.get("body", "")
        if message.get("properties", {}).get("body_encoding") == "base64":
            raw += base64.b64decode(body)
    except (OSError, ValueError, TypeError):
        return False
    return any(n in raw for n in needles)


def purge_attempts(settings: Settings, attempt_ids: Iterable[str]) -> int:
    """Delete the queued messages of these attempts (chord polling included); returns how many."""
    needles = [a.encode() for a in attempt_ids]
    if not needles or not settings.broker_folder.exists():
        return 0
    removed = 0
    for path in settings.broker_folder.glob("*.msg"):
        if _mentions(path, needles):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def finish_attempts(settings: Settings, attempt_ids: Iterable[str], reason: str) -> None:
    """On an embedded command's way out: its unfinished symbols end `cancelled` with `reason`, and no
    message of its attempts is left for the next command's worker to replay."""
    from brain_tasks.brain import runs
    from brain_tasks.brain.db import make_engine

    attempt_ids = list(attempt_ids)
    engine = make_engine(settings.database_url)
    purge_attempts(settings, attempt_ids)
    for attempt in attempt_ids:
        if runs.attempt_state(engine, attempt) in runs.OPEN:
            runs.cancel_attempt(engine, attempt, reason)


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
