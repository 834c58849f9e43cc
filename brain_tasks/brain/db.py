"""Engines for the Brain database: one per URL per process, tuned per backend."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool, StaticPool

# URL handling is configuration (brain_tasks.settings); re-exported here for the callers that import it
# from the storage package.
from brain_tasks.settings import normalize_database_url, redact_url

SQLITE_BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 5
POOL_TIMEOUT_S = 120
# Sorted keys: SQLite compares JSON as text, so the same dict must always serialise the same way.
_json_dumps = functools.partial(json.dumps, sort_keys=True)

_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()
# SQLSTATEs after which a connection is not used again: the server it reaches no longer takes the Brain's
# writes (25006: a standby, or a primary an operator made read-only before a switchover) or is going away
# (57P01-57P03: shut down, crashed, starting up / in recovery).  Treated as a disconnect, SQLAlchemy
# discards this connection and every other one in the pool, so the next checkout connects again and a
# multi-host URL finds the host that takes writes now.  Class 08 is a broken connection.
_STALE_SERVER_STATES = frozenset({"25006", "57P01", "57P02", "57P03"})

def _stale_server(exc: BaseException | None) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return state in _STALE_SERVER_STATES or state.startswith("08")


def make_engine(url: str) -> sa.Engine:
    """The process-wide engine for `url` (created on first use).

    SQLite gets WAL, a busy timeout, foreign keys and real transactions (so migrations are
    transactional); PostgreSQL gets pre-ping so a restarted server costs one retry, not an error.
    """
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create(url)
            _engines[url] = engine
        return engine


def dispose_engine(url: str) -> None:
    """Close the pooled connections of `url`'s engine and forget it (e.g. before dropping a database)."""
    with _lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


def _create(url: str) -> sa.Engine:
    from brain_tasks.errors import DatabaseUnavailableError

    try:
        parsed = make_url(normalize_database_url(url))
    except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise DatabaseUnavailableError(f"cannot parse the database URL {redact_url(url)}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        raise DatabaseUnavailableError(f"{redact_url(url)}: SQLAlchemy names PostgreSQL 'postgresql'; use "
                                       "postgresql+psycopg://user:password@host:port/dbname")
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    try:
        if backend == "postgresql":
            engine = sa.create_engine(parsed, pool_pre_ping=True, json_serializer=_json_dumps, **_postgres_pool())
            event.listen(engine, "handle_error", _discard_stale_connections)
            return engine
        return sa.create_engine(parsed, pool_pre_ping=True, json_serializer=_json_dumps)
    except (sa.exc.NoSuchModuleError, ImportError) as exc:
        raise DatabaseUnavailableError(f"{redact_url(url)}: no driver for this URL ({exc})") from None


def _discard_stale_connections(context: sa.engine.ExceptionContext) -> BaseException | None:
    """A statement failed on a server that no longer takes writes or is going away: discard the pool
    (`is_disconnect`) and raise an OperationalError, which the task policy retries, instead of e.g. the
    InternalError of a read-only transaction, which it would record as a bug."""
    orig = context.original_exception
    if not _stale_server(orig):
        return None
    context.is_disconnect = True
    if isinstance(context.sqlalchemy_exception, sa.exc.OperationalError):
        return None
    return sa.exc.OperationalError(context.statement, context.parameters, orig, connection_invalidated=True)


def _postgres_pool() -> dict[str, Any]:
    """Connection arguments and a bounded pool: a process holds at most `BRAIN_DB_POOL_SIZE` connections,
    so N worker processes hold at most N times that (PostgreSQL's default limit is 100 in all)."""
    from brain_tasks.settings import get_settings

    size = get_settings().db_pool_size
    # A server that does not answer is named within seconds instead of hanging on the OS timeout; the
    # application name tells, in pg_stat_activity, which host and process holds a connection.
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S,
                    "application_name": f"brain-tasks {socket.gethostname()}:{os.getpid()}"[:63]}
    if size <= 0:
        # Behind PgBouncer: nothing is kept between uses, PgBouncer's pool bounds the server side, and no
        # statement is prepared server-side (psycopg prepares a query run 5 times on one connection; in
        # transaction mode the next transaction may run on a server connection that never saw it).
        return {"poolclass": NullPool, "connect_args": {**connect_args, "prepare_threshold": None}}
    # No overflow: a checkout beyond the bound waits for a connection instead of opening another.
    return {"pool_size": size, "max_overflow": 0, "pool_timeout": POOL_TIMEOUT_S, "connect_args": connect_args}


@contextlib.contextmanager
def driver_errors(conn: sa.Connection, what: str) -> Iterator[Any]:
    """Yield `conn`'s driver (psycopg) connection, for work SQLAlchemy does not wrap (COPY, binary
    reads); a driver error leaves it the way SQLAlchemy raises it: a lost server is SQLAlchemy's
    OperationalError, which the task policy retries, and a broken connection is invalidated so the
    pool does not hand it out again."""
    import psycopg

    driver = conn.connection.driver_connection
    try:
        yield driver
    except psycopg.Error as exc:
        broken = bool(driver.broken or driver.closed)
        stale = _stale_server(exc)
        if broken or stale:
            conn.invalidate()
        if stale:
            conn.engine.dispose()  # its other pooled connections reach the same server: discard them too
            raise sa.exc.OperationalError(what, None, exc, connection_invalidated=True) from None
        raise sa.exc.DBAPIError.instance(what, None, exc, psycopg.Error, connection_invalidated=broken) from None


def check_schema(url: str) -> str:
    """The Brain schema revision at `url`; a clear error (and nothing created) when the database cannot
    be reached or was never migrated."""
    from alembic.runtime.migration import MigrationContext

    from brain_tasks.errors import DatabaseUnavailableError, SchemaMissingError

    parsed = make_url(normalize_database_url(url)) if not isinstance(url, sa.URL) else url
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        from pathlib import Path

        if not Path(parsed.database).exists():  # connecting would create an empty file
            raise SchemaMissingError(f"{redact_url(url)} does not exist yet: run `brain-tasks db upgrade`")
    try:
        with make_engine(url).connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailableError(connect_error_line(url, exc)) from None
    if revision is None:
        raise SchemaMissingError(f"{redact_url(url)} has no Brain schema: run `brain-tasks db upgrade`")
    return revision


def connect_error_line(url: str | sa.URL, exc: BaseException) -> str:
    """One line naming why `url` could not be used, password redacted.  When every host of a multi-host
    URL failed (or the one host is read-only), it says that no host accepts writes, with each host's
    reason: a standby not promoted yet, a host down, or a host list that names no primary."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).strip().splitlines() if line.strip()]
    # psycopg lists one failure per host after "All failures were:" as
    # "- host: 'h', port: 'p', hostaddr: 'a': connection failed: connection to server at ... failed: REASON".
    per_host = [_HOST_FAILURE.match(line) for line in lines if line.startswith("- host:")]
    reasons = [f"{m['host']}:{m['port']} {m['reason']}" for m in per_host if m]
    if reasons or (lines and "read-only" in lines[0]):
        why = "; ".join(reasons) or lines[0].rsplit("failed: ", 1)[-1]
        return f"no host of the database {redact_url(url)} accepts writes ({why})"
    return f"cannot reach the database {redact_url(url)}: {lines[0] if lines else type(orig).__name__}"


_HOST_FAILURE = re.compile(r"- host: '(?P<host>[^']*)', port: '(?P<port>[^']*)'.*failed: (?P<reason>[^:]*)$")


def _sqlite_engine(parsed: sa.URL) -> sa.Engine:
    in_memory = parsed.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                              "json_serializer": _json_dumps}
    if in_memory:
        # Every connection to ':memory:' is a new empty database: share one.
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = sa.create_engine(parsed, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module, which otherwise never wraps DDL
        # in a transaction (SQLAlchemy's documented pysqlite recipe).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not in_memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # execution_options(sqlite_begin="IMMEDIATE") takes the write lock at BEGIN, for
        # read-then-write transactions that must not fail on a lock upgrade.
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")

    return engine
