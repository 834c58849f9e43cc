"""Column-wise reads from PostgreSQL: the rows packed into one binary value server-side, parsed by numpy.

Building one Python row per result row (the driver's tuples, then a list per column) was most of the
time spent reading a symbol's market data.  Binary ``COPY ... TO STDOUT`` does not help from Python:
the server sends one CopyData message per row and psycopg hands each to Python (measured here: a
105k-candle COPY took as long as the row read).  So the server packs every row into a fixed-width
binary record and concatenates them in order into one bytea (``string_agg(... ORDER BY ...)``),
which numpy views as a structured array — one value over the wire, no Python object per row:

- timestamps are ``timestamptz_send``: PostgreSQL's own binary form, int64 microseconds since
  2000-01-01 UTC;
- double precision columns are ``float8send`` (big-endian IEEE 754, bit for bit), NULL sent as NaN,
  which is what the row reader made of NULL too;
- integer columns are ``int8send`` plus a NULL flag (``boolsend``) when nullable;
- short text columns (``String(n)``, NOT NULL) are their UTF-8 bytes padded with NUL bytes to
  ``4 * n`` (the most UTF-8 needs for n characters): PostgreSQL text never holds a NUL byte, so
  stripping them is exact, and every record keeps one width.

Anything else (JSON, bytes, dates, unbounded or nullable text, nullable timestamps) is not attempted:
`packed_select` returns None and the caller reads rows.  One read is one bytea, so it is limited to
PostgreSQL's 1 GB per value: about 22M candles of one symbol, far beyond a training window.

The statement is parameterised the ordinary way (server-side parameters; identifiers through
``psycopg.sql.Identifier``): no value is ever pasted into SQL text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain.tables import UTCDateTime

# PostgreSQL's binary timestamps count microseconds from 2000-01-01 UTC.
_PG_EPOCH_US = 946_684_800_000_000
# UTF-8 needs at most this many bytes per character.
_UTF8_MAX = 4


@dataclass(frozen=True)
class _Field:
    """One selected column: its packed SQL expression (bytea of `width` bytes) and its numpy format."""

    name: str
    kind: str  # datetime | float | int | str
    sql: Any  # a psycopg Composable
    width: int
    fmt: str
    nullable_int: bool = False  # followed by a one-byte NULL flag


def _field(column: sa.Column[Any]) -> _Field | None:
    from psycopg import sql

    ident = sql.Identifier(column.name)
    t = column.type
    if isinstance(t, UTCDateTime):  # timestamptz
        return None if column.nullable else _Field(column.name, "datetime", sql.SQL("timestamptz_send({})").format(
            ident), 8, ">i8")
    if isinstance(t, sa.Float):
        value = sql.SQL("COALESCE({}, 'NaN')").format(ident) if column.nullable else ident
        return _Field(column.name, "float", sql.SQL("float8send({}::float8)").format(value), 8, ">f8")
    if isinstance(t, sa.Integer) and not isinstance(t, sa.Boolean):
        if column.nullable:
            expr = sql.SQL("int8send(COALESCE({0}, 0)::int8) || boolsend({0} IS NULL)").format(ident)
            return _Field(column.name, "int", expr, 9, ">i8", nullable_int=True)
        return _Field(column.name, "int", sql.SQL("int8send({}::int8)").format(ident), 8, ">i8")
    if isinstance(t, sa.String) and not isinstance(t, (sa.Text, sa.JSON)) and t.length and not column.nullable:
        width = _UTF8_MAX * t.length
        expr = sql.SQL("substring(convert_to({}, 'UTF8') || {} from 1 for {})").format(
            ident, sql.Literal(bytes(width)), sql.Literal(width))
        return _Field(column.name, "str", expr, width, f"S{width}")
    return None


def packed_select(conn: sa.Connection, table: sa.Table, names: Sequence[str], equal: Mapping[str, Any],
                  any_of: Mapping[str, Sequence[Any]], start: Any, end: Any,
                  order_by: Sequence[str]) -> pd.DataFrame | None:
    """`names` of the rows of `table` where each `equal` column equals its value, each `any_of` column
    is one of its values and ``start <= ts < end`` (None: unbounded), sorted by `order_by`, as the row
    reader returns them; None when a column's type has no fixed-width form here."""
    packed = packed_query(table, names, equal, any_of, start, end, order_by)
    if packed is None:
        return None
    query, params, fields, dtype = packed
    data = _fetch_one_value(conn, query, params, table.name)
    data = b"" if data is None else data
    if len(data) % dtype.itemsize:
        raise ValueError(f"{table.name}: {len(data)} packed bytes are not whole {dtype.itemsize}-byte records")
    return _frame(np.frombuffer(data, dtype=dtype), fields, names)


def _fetch_one_value(conn: sa.Connection, query: Any, params: list[Any], what: str) -> Any:
    """The statement's one value, read in binary on the driver's own cursor (the bytea as it is)."""
    from brain_tasks.brain.db import driver_errors

    with driver_errors(conn, f"packed read of {what}") as driver, driver.cursor(binary=True) as cur:
        cur.execute(query, params)
        return cur.fetchone()[0]


def packed_query(table: sa.Table, names: Sequence[str], equal: Mapping[str, Any],
                 any_of: Mapping[str, Sequence[Any]], start: Any, end: Any,
                 order_by: Sequence[str]) -> tuple[Any, list[Any], list[_Field], np.dtype] | None:
    """The statement of `packed_select` (a psycopg Composed), its parameters, fields and record
    layout; None when a column has no fixed-width form.  (bench/ingest.py EXPLAINs it.)"""
    from psycopg import sql

    fields = [_field(table.c[n]) for n in names]
    if any(f is None for f in fields):
        return None
    layout: list[tuple[str, str]] = []
    for i, f in enumerate(fields):
        layout.append((f"v{i}", f.fmt))
        if f.nullable_int:
            layout.append((f"null{i}", "?"))
    where: list[Any] = []
    params: list[Any] = []
    for name, value in equal.items():
        where.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
        params.append(value)
    for name, values in any_of.items():
        where.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(name)))
        params.append(list(values))
    if start is not None:
        where.append(sql.SQL("ts >= %s"))
        params.append(start)
    if end is not None:
        where.append(sql.SQL("ts < %s"))
        params.append(end)
    query = sql.SQL("SELECT string_agg({}, ''::bytea ORDER BY {}) FROM {} WHERE {}").format(
        sql.SQL(" || ").join(f.sql for f in fields), sql.SQL(", ").join(map(sql.Identifier, order_by)),
        sql.Identifier(*(p for p in (table.schema, table.name) if p)),
        sql.SQL(" AND ").join(where) if where else sql.SQL("TRUE"))
    dtype = np.dtype(layout)
    if dtype.itemsize != sum(f.width for f in fields):
        raise AssertionError(f"packed layout of {table.name}: {dtype.itemsize} bytes, expected "
                             f"{sum(f.width for f in fields)}")
    return query, params, fields, dtype


def _frame(records: np.ndarray, fields: Sequence[_Field], names: Sequence[str]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for i, f in enumerate(fields):
        values = records[f"v{i}"]
        if f.kind == "datetime":
            stamps = (values.astype(np.int64) + _PG_EPOCH_US).view("datetime64[us]")
            data[f.name] = pd.Series(stamps).dt.tz_localize("UTC")
        elif f.kind == "float":
            data[f.name] = values.astype(np.float64)
        elif f.kind == "int":
            ints = values.astype(np.int64)
            missing = records[f"null{i}"] if f.nullable_int else None
            if missing is not None and missing.any():
                # What pandas makes of a list of ints with None, as the row reader passes it.
                data[f.name] = np.where(missing, np.nan, ints.astype(np.float64))
            else:
                data[f.name] = ints
        else:  # str: NUL-padded UTF-8, as pandas would hold the driver's Python strings
            data[f.name] = _strings(values)
    return pd.DataFrame(data, columns=list(names))


def _strings(values: np.ndarray) -> Any:
    """NUL-padded UTF-8 records as Python strings (numpy's bytes items drop the trailing NULs)."""
    if not len(values):
        return []  # what the row reader passes for no rows
    values = np.ascontiguousarray(values)  # a field of the records: strided
    if values.view(np.uint8).max() < 0x80:  # ASCII (side, source names): numpy decodes it 4x faster
        return values.astype(f"U{values.dtype.itemsize}").astype(object)
    return np.char.decode(values, "utf-8").astype(object)
