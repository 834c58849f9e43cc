"""The throwaway servers and per-test databases really are what the fixtures promise."""

from __future__ import annotations

import sqlalchemy as sa

from brain_tasks.brain.db import make_engine


def test_pg_url_is_a_real_postgres_15(pg_url: str) -> None:
    with make_engine(pg_url).connect() as conn:
        version = conn.execute(sa.text("SHOW server_version_num")).scalar_one()
        fsync = conn.execute(sa.text("SHOW fsync")).scalar_one()
    assert 150000 <= int(version) < 160000
    assert fsync == "off"


def test_redis_url_answers_and_never_evicts(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    assert client.set("brain-test", "1") and client.get("brain-test") == b"1"
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert client.config_get("appendonly")["appendonly"] == "no"
    assert client.config_get("save")["save"] == ""  # no RDB snapshots either


def test_db_url_is_fresh_and_empty(db_url: str) -> None:
    engine = make_engine(db_url)
    assert sa.inspect(engine).get_table_names() == []
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE marker (x integer)"))
    assert sa.inspect(engine).get_table_names() == ["marker"]


def test_db_url_does_not_leak_between_tests(db_url: str) -> None:
    # Runs after the test above in each backend; the marker table must not be visible.
    assert "marker" not in sa.inspect(make_engine(db_url)).get_table_names()


def test_postgres_databases_are_distinct(pg_url: str) -> None:
    from tests.servers import create_database, drop_database

    a, b = create_database(pg_url), create_database(pg_url)
    assert a != b
    drop_database(a)
    drop_database(b)
    with make_engine(pg_url).connect() as conn:
        names = set(conn.execute(sa.text("SELECT datname FROM pg_database")).scalars())
    assert sa.engine.make_url(a).database not in names


def test_postgres_listens_on_loopback_only(pg_url: str) -> None:
    with make_engine(pg_url).connect() as conn:
        assert conn.execute(sa.text("SHOW listen_addresses")).scalar_one() == "127.0.0.1"
