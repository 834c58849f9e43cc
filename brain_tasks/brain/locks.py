"""Claims: at most one process works on a given task identity at a time.

PostgreSQL: a transaction-level advisory lock, held by a transaction kept open on a dedicated
connection for the duration of the claim.  The server releases it when that transaction ends, which
includes the connection closing, so a worker killed with SIGKILL cannot leave a stale claim behind.
Transaction-level, not session-level, so that a PgBouncer in transaction mode can sit in front of
PostgreSQL: it keeps a client on one server connection only for a transaction, and a session lock
(and a session `lock_timeout`) would stay behind on a server connection other clients then get.
SQLite (embedded mode, one machine): an exclusive `flock` on a file under `BRAIN_HOME/locks`, which
the kernel likewise releases when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import time
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa


def _key64(name: str) -> int:
    # Advisory locks take a signed 64-bit key.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _lock_file(engine: sa.Engine, name: str) -> Path:
    """SQLite's claim files live under BRAIN_HOME/locks (never beside the database, e.g. in a
    repository), one folder per database."""
    from brain_tasks.settings import get_settings

    folder = get_settings().home.resolve() / "locks" / hashlib.sha256(str(engine.url).encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    return folder / hashlib.sha256(name.encode()).hexdigest()[:32]


def _release(conn: sa.Connection) -> None:
    """End the claim's transaction, which releases its lock.  When the connection died meanwhile the
    server has already released it (and the rollback has nothing to do)."""
    with contextlib.suppress(sa.exc.DBAPIError):
        conn.rollback()


@contextlib.contextmanager
def claim(engine: sa.Engine, name: str, *, timeout: float = 3600.0) -> Iterator[None]:
    """Hold the claim on `name` for the duration of the block (blocking until it is free)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            # The transaction begun here is the claim: no commit until the block is done.
            conn.execute(sa.text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{int(timeout * 1000)}ms"})
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _key64(name)})
            try:
                yield
            finally:
                _release(conn)
        return
    with open(_lock_file(engine, name), "w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"claim {name!r} still held after {timeout:.0f} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def try_claim(engine: sa.Engine, name: str) -> Iterator[bool]:
    """Take the claim on `name` if it is free: yields True while held, False (at once) when another
    process holds it.  For work that must run as a single instance and may simply be skipped."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _key64(name)}).scalar())
            if not got:
                _release(conn)
            try:
                yield got
            finally:
                if got:
                    _release(conn)
        return
    with open(_lock_file(engine, name), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
