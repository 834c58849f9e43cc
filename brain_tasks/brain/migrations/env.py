"""Alembic environment of the Brain schema.

Driven programmatically by `brain_tasks.brain.migrate`, which passes an open connection in
``config.attributes["connection"]``; no alembic.ini or URL string is read here.
"""

from __future__ import annotations

from alembic import context

import sqlalchemy as sa

from brain_tasks.brain.tables import Base, UTCDateTime

target_metadata = Base.metadata


def _render_item(type_: str, obj: object, autogen_context) -> str | bool:  # noqa: ANN001
    # Generated revisions name plain database types, so they never import the models module
    # (a later change there must not rewrite history).
    if type_ != "type":
        return False
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, sa.JSON) and "postgresql" in getattr(obj, "_variant_mapping", {}):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return "sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')"
    return False


def _run(connection) -> None:  # noqa: ANN001 - alembic passes a SQLAlchemy Connection
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
        process_revision_directives=context.config.attributes.get("process_revision_directives"),
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through brain_tasks.brain.migrate (or `brain-tasks db upgrade`)")
_run(connection)
