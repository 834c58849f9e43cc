"""Embedded mode: no broker configured, yet the same canvases run on a real Celery worker.

The command starts a worker process of its own on Kombu's filesystem transport (message files in
`BRAIN_HOME/broker`, written under a temporary name and renamed into place: `brainfs://`) with result
files in `BRAIN_HOME/results` (chords joined by counting, as on Redis), sends the canvas while the
worker starts, waits while checking that the worker is alive and came up, and stops the worker.
Crash recovery is weaker than with Redis: a worker killed mid-task loses that task and the messages
it had reserved (the filesystem transport does not re-deliver unacknowledged messages), so embedded
mode is at-most-once on a crash; the command then fails in one line, cancels the attempt's
unfinished symbols and deletes its messages, so nothing is left pending or replayed later.
Production runs Redis.  Costs (bench/embedded.py): a few seconds per command to start the worker
(its pool processes import the ML stack) and about one to stop it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from queue import Empty
from typing import Any

from celery.backends.filesystem import FilesystemBackend
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import loads

from brain_tasks.settings import Settings

TRANSPORT_ALIAS = "brainfs"
DRAIN_SLICE = 0.1  # seconds
PARTIAL_GRACE = 30.0  # seconds a message file may stay unparseable (its producer still writing it)
logger = logging.getLogger(__name__)

CRASH_WARNING = ("embedded mode (no BRAIN_BROKER_URL): tasks run on a local worker process over a "
                 "filesystem broker; a worker killed mid-task loses that task (at-most-once). "
                 "Set BRAIN_BROKER_URL=redis://... for crash recovery.")


class AtomicChannel(filesystem.Channel):
    """Kombu's filesystem channel, except that a message becomes visible only once it is complete.

    Kombu creates the message file under its final name and then writes it; a consumer listing the
    folder in between reads an empty or partial file, and the worker died of that ("Unrecoverable
    error: JSONDecodeError").  Here the message is written under a name no consumer matches (a
    leading dot) and renamed into place, which is atomic on one filesystem; and a consumer leaves a
    message file that does not parse yet (another producer's, written in place) for its next poll.
    """

    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as f:
                f.write(json.dumps(payload).encode())
            os.replace(partial, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


    def _get(self, queue: str) -> dict:
        """The oldest complete message of `queue`, taken by deleting its file (only one consumer's
        delete succeeds).  Kombu's own `_get` moves the file away and parses it, and a producer on
        Kombu's plain `filesystem://` (an Engine that only knows the broker folder) writes its file in
        place: read mid-write, the worker died of the JSONDecodeError.  A file that does not parse yet
        is left for the next poll; one still unreadable after `PARTIAL_GRACE` is renamed aside."""
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            path = os.path.join(self.data_folder_in, name)
            try:
                with open(path, "rb") as f:
                    message = loads(f.read())
            except FileNotFoundError:  # another consumer took it
                continue
            except ValueError:
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - os.stat(path).st_mtime > PARTIAL_GRACE:
                        os.replace(path, os.path.join(self.data_folder_in, f".{name}.unreadable"))
                        logger.error("unreadable message file %s set aside", path)
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            return message
        raise Empty()


class AtomicTransport(filesystem.Transport):
    Channel = AtomicChannel

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """Kombu's drain, in slices of a tenth of a second between which a shutdown request ends it.

        Celery's loop for polling transports checks its shutdown flags only between two drains of
        2 s (and drains once more after seeing them): a worker stopped while idle spent 2-4 s here.
        Any other caller sees Kombu's semantics: events, or a timeout once `timeout` has passed.
        """
        from celery.worker import state

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            step = DRAIN_SLICE if remaining is None else max(0.0, min(remaining, DRAIN_SLICE))
            try:
                return super().drain_events(connection, timeout=step)
            except TimeoutError:  # socket.timeout, what Celery's loop expects
                # As state.maybe_shutdown reads them: a warm stop sets should_stop to 0 (EX_OK).
                stopping = any(flag is not None and flag is not False
                               for flag in (state.should_stop, state.should_terminate))
                if stopping or (deadline is not None and time.monotonic() >= deadline):
                    raise


def register_transport() -> str:
    """Make `brainfs://` name the atomic filesystem transport (celeryconfig's embedded branch)."""
    TRANSPORT_ALIASES[TRANSPORT_ALIAS] = f"{__name__}:AtomicTransport"
    return f"{TRANSPORT_ALIAS}://"


class ResultBackend(FilesystemBackend):
    """Celery's file result backend (a file per key under `BRAIN_HOME/results`), with two additions.

    - A key is written under a temporary name and renamed into place, so a reader never sees half a
      result (Celery writes the final file in place).
    - `incr` under a lock: with it Celery joins a chord by counting its finished parts, as on Redis.
      Without it (the SQLAlchemy backend this replaces) every chord was joined by a `chord_unlock`
      task polling all header results once a second for the whole run: a symbol's compare step
      waited up to a second for its models, and the run's summary up to a second after the last
      symbol, while each poll held a worker slot.  It also wrote every task state to SQLite with an
      fsync; these results only live while a command runs, the Brain's tables are the record.
    """

    implements_incr = True

    def set(self, key: bytes, value: Any) -> None:
        final = self._filename(key)
        partial = self.sep.join((self.path, b".partial-" + uuid.uuid4().hex.encode()))
        with self.open(partial, "wb") as f:
            f.write(value if isinstance(value, bytes) else str(value).encode())
        os.replace(partial, final)

    def delete(self, key: bytes) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.unlink(self._filename(key))

    def incr(self, key: bytes) -> int:
        with open(self.sep.join((self.path, b".incr.lock")), "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            value = int(self.get(key) or 0) + 1
            self.set(key, str(value).encode())
            return value


def result_backend_url(settings: Settings) -> str:
    """The embedded result backend for celeryconfig: the derived `file://` folder with this module's
    backend (chords joined by counting); an explicit BRAIN_RESULT_BACKEND as it is."""
    url = settings.effective_result_backend
    if settings.result_backend or not url.startswith("file://"):
        return url
    Path(url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)  # Celery checks it at start
    return f"{__name__}:ResultBackend+{url}"


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
    """The folders of the filesystem broker (Kombu does not create them) and of the result files."""
    home = settings.broker_folder.parent
    for folder in (settings.broker_folder, *(home / f for f in ("processed", "control", "results"))):
        folder.mkdir(parents=True, exist_ok=True)


def worker_command(name: str, queues: str = "collect,train,analysis", concurrency: int = 1,
                   *extra: str) -> list[str]:
    """The `celery worker` command line of this app (gossip and mingle off: workers share nothing)."""
    return [sys.executable, "-m", "celery", "-A", "brain_tasks.app", "worker", "-Q", queues,
            "-c", str(concurrency), "-n", f"{name}@%h", "-l", "INFO", "--without-gossip", "--without-mingle",
            *extra]


class EmbeddedWorker:
    """The command's worker process, and whether it answered the message sent when it started.

    The command does not wait for that answer before sending its run: messages wait in the folder
    while the worker imports the ML stack (2-6 s), so the command's own work overlaps the start.
    `check` (called while the command waits) is what notices a worker that died or never came up.
    """

    def __init__(self, proc: subprocess.Popen, log_path: Path, probe: Any, ready_timeout: float) -> None:
        self.proc, self.log_path, self._probe = proc, log_path, probe
        self._deadline = time.monotonic() + ready_timeout
        self._ready_timeout = ready_timeout
        self.answered = False

    def check(self) -> None:
        """Raise WorkerDied when the process exited, TimeoutError when it has not answered in time."""
        if self.proc.poll() is not None:
            raise WorkerDied(self.proc.returncode, self.log_path)
        if not self.answered:
            self.answered = self._probe.ready()
            if not self.answered and time.monotonic() > self._deadline:
                raise TimeoutError(f"the embedded worker did not answer within {self._ready_timeout:.0f} s; "
                                   f"see {self.log_path}")

    def wait_ready(self, poll: float = 0.05) -> None:
        """Block until the worker answered (for benchmarks and tests: commands only `check`)."""
        while not self.answered:
            self.check()
            time.sleep(poll)


class WorkerDied(RuntimeError):
    def __init__(self, returncode: int, log_path: Path) -> None:
        super().__init__(f"the embedded worker exited with code {returncode}; see {log_path}")
        self.returncode = returncode


@contextlib.contextmanager
def embedded_worker(settings: Settings, *, log_path: Path | None = None,
                    ready_timeout: float = 180.0) -> Iterator[EmbeddedWorker]:
    """A real `celery worker` process consuming every queue, for the duration of the block."""
    from brain_tasks.app import app

    prepare_folders(settings)
    with contextlib.suppress(OSError):
        app.backend.cleanup()  # result files older than result_expires
    log_path = log_path or settings.home / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = worker_command(f"embedded-{os.getpid()}", "collect,train,analysis", settings.concurrency,
                         "--without-heartbeat")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    worker = EmbeddedWorker(proc, log_path, app.send_task("brain_tasks.ping", args=["ready"]), ready_timeout)
    try:
        yield worker
    finally:
        stop(worker)


def stop(worker: EmbeddedWorker, timeout: float = 60.0) -> None:
    """Warm shutdown: the pool finishes the tasks at hand and the consumer takes no more.

    Celery stops the consumer first (messages taken but not started go back to the folder), then the
    pool.  Once the pool processes have exited no task runs or can start, and the results were
    stored by the pool processes themselves; what is left is billiard joining its idle threads, which
    sleep in steps of 0.8-1 s (2-3 s measured), so the process is killed then.  The shortcut needs a
    worker that came up (its pool seen) and Linux's /proc; otherwise it is waited for.
    """
    proc = worker.proc
    if proc.poll() is not None:
        return
    proc.terminate()
    deadline = time.monotonic() + timeout
    shortcut = worker.answered and Path(f"/proc/{proc.pid}/task").exists()
    while proc.poll() is None and time.monotonic() < deadline:
        if shortcut and not _pool_processes(proc.pid):
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _pool_processes(pid: int) -> list[int]:
    """The live spawned pool processes of worker `pid` (not billiard's semaphore tracker)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    alive = []
    for child in children:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if state != "Z" and b"spawn_main" in cmdline:
            alive.append(int(child))
    return alive
