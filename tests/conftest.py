"""Shared fixtures: real throwaway PostgreSQL and Redis servers, and fresh databases per test.

- `pg_url` (session): a PostgreSQL 15 server's `brain` database, e.g. ``postgresql+psycopg://postgres@127.0.0.1:PORT/brain``.
- `redis_url` (session): ``redis://127.0.0.1:PORT/0`` of a redis-server without persistence.
- `sqlite_url` (function): an SQLite file in `tmp_path`.
- `db_url` (function, parametrised over sqlite and postgres): a fresh, empty, un-migrated database.
- `brain_db_url` (function, same parameters): the same, migrated to head.

A missing server binary fails the test with the reason; nothing is skipped silently.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import servers


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with servers.postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with servers.redis_server() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path) -> Iterator[str]:  # noqa: ANN001 - pytest's own fixture
    url = f"sqlite:///{tmp_path / 'brain.db'}"
    yield url
    _forget_engine(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # noqa: ANN001
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'brain.db'}"
        yield url
        _forget_engine(url)
        return
    server_url = request.getfixturevalue("pg_url")
    url = servers.create_database(server_url)
    yield url
    _forget_engine(url)
    servers.drop_database(url)


@pytest.fixture
def brain_db_url(db_url: str) -> str:
    from brain_tasks.brain.migrate import upgrade

    upgrade(db_url)
    return db_url


def _forget_engine(url: str) -> None:
    from brain_tasks.brain.db import dispose_engine

    dispose_engine(url)
