"""Engines: secrets stay out of printed URLs and connection errors; SQLite is tuned for workers."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from brain_tasks.brain.db import dispose_engine, make_engine, redact_url
from tests.servers import free_port

SECRET = "S3cr3t-p@ss%w0rd"


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://brain:S3cr3t@db.example:5432/brain",
    "redis://:S3cr3t@localhost:6379/0",
    "postgresql+psycopg://brain@db/brain?password=S3cr3t&sslmode=require",
    "not a url://user:S3cr3t@host",
])
def test_redact_url_hides_the_password(url: str) -> None:
    shown = redact_url(url)
    assert "S3cr3t" not in shown
    assert "***" in shown


def test_redact_url_keeps_the_rest() -> None:
    assert redact_url("postgresql+psycopg://brain:pw@db:5432/brain") == "postgresql+psycopg://brain:***@db:5432/brain"
    assert redact_url("sqlite:///brain.db") == "sqlite:///brain.db"
    assert "sslmode=require" in redact_url("postgresql://u@h/d?password=x&sslmode=require")


def test_failed_connection_does_not_reveal_the_password(caplog: pytest.LogCaptureFixture) -> None:
    from urllib.parse import quote

    url = f"postgresql+psycopg://brain:{quote(SECRET, safe='')}@127.0.0.1:{free_port()}/brain"
    engine = make_engine(url)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(sa.exc.OperationalError) as info:
        with engine.connect():
            pass
    for text in (str(info.value), repr(info.value), repr(engine), str(engine.url), caplog.text):
        assert SECRET not in text and quote(SECRET, safe="") not in text
    dispose_engine(url)


def test_engines_are_cached_per_url(sqlite_url: str) -> None:
    assert make_engine(sqlite_url) is make_engine(sqlite_url)
    first = make_engine(sqlite_url)
    dispose_engine(sqlite_url)
    assert make_engine(sqlite_url) is not first


def test_sqlite_pragmas(sqlite_url: str) -> None:
    with make_engine(sqlite_url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000


def test_sqlite_ddl_is_transactional(sqlite_url: str) -> None:
    # The sqlite3 module alone would commit the CREATE TABLE behind SQLAlchemy's back.
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        conn.begin()
        conn.execute(sa.text("CREATE TABLE t (x integer)"))
        conn.rollback()
    assert sa.inspect(engine).get_table_names() == []


def test_in_memory_sqlite_is_one_database() -> None:
    url = "sqlite://"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x integer)"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 0
    dispose_engine(url)


@pytest.fixture
def pool_size(monkeypatch: pytest.MonkeyPatch):
    from brain_tasks.settings import get_settings

    def set_size(value: str) -> None:
        monkeypatch.setenv("BRAIN_DB_POOL_SIZE", value)
        get_settings.cache_clear()

    yield set_size
    monkeypatch.delenv("BRAIN_DB_POOL_SIZE", raising=False)
    get_settings.cache_clear()


@pytest.mark.postgres
def test_a_process_holds_at_most_its_pool_of_postgres_connections(pg_url: str, pool_size) -> None:
    """Threads asking for more connections than the pool wait for one; none is opened beyond it."""
    import threading

    from sqlalchemy.pool import NullPool

    from tests.servers import create_database

    url = create_database(pg_url)
    pool_size("2")
    engine = make_engine(url)
    assert engine.pool.size() == 2 and engine.pool._max_overflow == 0  # noqa: SLF001 - the bound itself
    seen, gate = [], threading.Barrier(5)

    def use() -> None:
        gate.wait()
        with engine.connect() as conn:
            seen.append(conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'brain-tasks %'")).scalar())
            conn.execute(sa.text("SELECT pg_sleep(0.1)"))

    threads = [threading.Thread(target=use) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 5 and max(seen) <= 2
    dispose_engine(url)
    pool_size("0")  # behind PgBouncer: nothing kept between uses
    assert isinstance(make_engine(url).pool, NullPool)
    dispose_engine(url)
