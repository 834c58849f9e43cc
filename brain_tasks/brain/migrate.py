"""Apply the Brain's Alembic migrations, configured in code (works from an installed package, any cwd)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from brain_tasks.brain.db import dispose_engine, make_engine

SCRIPT_LOCATION = "brain_tasks.brain:migrations"
# Any fixed 64-bit number: serialises concurrent `upgrade` calls on one PostgreSQL database.
_PG_LOCK_KEY = 0x6272_6169_6E5F_7462  # "brain_tb"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic Config for the packaged migrations, bound to `connection` when given."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        # Passing the connection, not the URL, keeps passwords out of configparser (and its % rules).
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the packaged migrations have no head revision")
    return head


@contextlib.contextmanager
def _locked_transaction(url: str) -> Iterator[sa.Connection]:
    engine = make_engine(url)
    # SQLite: take the write lock up front so a concurrent upgrade waits instead of racing to
    # CREATE the same tables; PostgreSQL: an advisory lock held until commit does the same.
    with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        yield conn


def upgrade(url: str, revision: str = "head") -> None:
    """Create or migrate the Brain schema at `url` up to `revision`; a no-op when already there."""
    with _locked_transaction(url) as conn:
        command.upgrade(alembic_config(conn), revision)


def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at, or None when it was never migrated."""
    with make_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def new_revision(message: str) -> Path | None:
    """Write the next migration for what models.py changed since head; None when nothing did.

    For developers after editing models.py: the database at head is built in a throwaway SQLite
    file and compared with the models (autogenerate); review the file it writes.
    """
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    unchanged: list[bool] = []

    def skip_if_empty(_context: object, _revision: object, directives: list[Any]) -> None:
        if directives[0].upgrade_ops.is_empty():
            unchanged.append(True)
            directives.clear()

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'head.db'}"
        upgrade(url)
        try:
            with make_engine(url).begin() as conn:
                cfg = alembic_config(conn)
                cfg.attributes["process_revision_directives"] = skip_if_empty
                script = command.revision(cfg, message=message, autogenerate=True,
                                          rev_id=f"{int(head or '0') + 1:04d}")
        finally:
            dispose_engine(url)
    if unchanged or script is None or isinstance(script, list):
        return None
    return Path(script.path)
