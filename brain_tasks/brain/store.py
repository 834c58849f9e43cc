"""The Brain's write path (idempotent bulk upserts) and its reads (frames ready for training).

Writing the same rows twice changes nothing: a conflict on the primary key (every table's natural
key) updates only the columns whose value differs, so a re-run neither duplicates a row nor
rewrites an identical one.

On PostgreSQL a bulk batch is sent with binary COPY into a temporary table and merged into the
target by one ``MERGE`` statement.  Measured here on 1M candles, ``MERGE`` (a hash join) took half
the time of ``INSERT ... SELECT ... ON CONFLICT`` (per-row speculative insertion); when a
concurrent writer inserts one of the same keys first, ``MERGE`` raises a unique violation and the
batch falls back to ``INSERT ... ON CONFLICT`` from the same temporary table, which is safe under
concurrency.  Small batches, and SQLite, use ``INSERT ... ON CONFLICT`` with executemany.

The market reads (candles, funding, open interest, liquidations, sentiment) are column-wise on
PostgreSQL: the server packs the rows into one binary value that numpy parses (`columnar`), 3-5x
faster than building a Python row per result row, which SQLite and the general `read_table` still do.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from brain_tasks.brain.columnar import packed_select
from brain_tasks.brain.db import driver_errors
from brain_tasks.brain.tables import Base, UTCDateTime
from brain_tasks.errors import DataError
from brain_tasks.timekeeping import to_utc

log = logging.getLogger(__name__)

Bind = sa.Engine | sa.Connection
TableLike = str | sa.Table
RowsLike = pd.DataFrame | Sequence[Mapping[str, Any]]

# Below this many rows a temporary table costs more than it saves (measured here: about even at
# 30 rows, COPY 1.4x faster at 100 and 10x at 1000).
COPY_MIN_ROWS = 50
# Memory for MERGE's hash join of a bulk batch (SET LOCAL: this transaction only).
MERGE_WORK_MEM = "256MB"

__all__ = [
    "COPY_MIN_ROWS", "connection", "jsonable", "copy_rows", "get_table", "last_timestamp", "list_symbols",
    "prepare_rows", "read_candles", "read_funding", "read_liquidations", "read_open_interest", "read_sentiment",
    "read_series", "read_table", "stored_timestamps", "to_utc", "upsert",
]


# --- tables and values ----------------------------------------------------------------------------

def get_table(table: TableLike) -> sa.Table:
    """The Brain table called `table` (or `table` itself when already a Table)."""
    if isinstance(table, sa.Table):
        return table
    try:
        return Base.metadata.tables[table]
    except KeyError:
        raise KeyError(f"no Brain table {table!r}; known: {sorted(Base.metadata.tables)}") from None


def jsonable(value: Any) -> Any:
    """A JSON-ready copy: numpy scalars and arrays become Python, NaN and infinities become null.

    NaN is not JSON (PostgreSQL's jsonb rejects it), and null is what "undefined" means there.
    """
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return [jsonable(v) for v in list(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dt.datetime, pd.Timestamp)):
        return to_utc(value).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _kind(column: sa.Column[Any]) -> str:
    t = column.type
    if isinstance(t, (UTCDateTime, sa.DateTime)):
        return "datetime"
    if isinstance(t, sa.Date):
        return "date"
    if isinstance(t, sa.Boolean):
        return "bool"
    if isinstance(t, sa.Integer):
        return "int"
    if isinstance(t, (sa.Float, sa.Numeric)):
        return "float"
    if isinstance(t, sa.JSON):
        return "json"
    if isinstance(t, sa.LargeBinary):
        return "bytes"
    if isinstance(t, sa.String):
        return "str"
    raise TypeError(f"{column.table.name}.{column.name}: unsupported column type {t!r}")


def _objects(values: np.ndarray, missing: np.ndarray) -> list[Any]:
    if not missing.any():
        return values.tolist()
    out = values.astype(object)
    out[missing] = None
    return out.tolist()


def _column_values(column: sa.Column[Any], series: pd.Series) -> list[Any]:
    """`series` as the Python values the database driver expects for `column` (None for missing)."""
    name = f"{column.table.name}.{column.name}"
    kind = _kind(column)
    missing = series.isna().to_numpy()
    if missing.any() and not column.nullable:
        raise DataError(f"{name}: {int(missing.sum())} missing value(s) in a NOT NULL column")
    if missing.all():
        return [None] * len(series)
    dtype = series.dtype
    if kind == "float":
        return _objects(series.to_numpy(dtype="float64", na_value=np.nan), missing)
    if kind == "datetime":
        if isinstance(dtype, pd.DatetimeTZDtype):
            values = series.dt.tz_convert("UTC").dt.to_pydatetime().to_numpy()
            return _objects(values, missing)
        if pd.api.types.is_datetime64_dtype(dtype):
            raise DataError(f"{name}: naive datetimes; Brain timestamps must be timezone-aware UTC")
        return [None if m else to_utc(v, name) for v, m in zip(series.tolist(), missing)]
    if kind == "date":
        return [None if m else _to_date(v, name) for v, m in zip(series.tolist(), missing)]
    if kind == "int":
        if pd.api.types.is_float_dtype(dtype):
            floats = series.to_numpy(dtype="float64", na_value=np.nan)
            present = floats[~missing]
            if not np.array_equal(present, np.round(present)):
                raise DataError(f"{name}: non-integral value in an integer column")
            return _objects(floats.astype("int64", copy=False) if not missing.any()
                            else np.where(missing, 0, floats).astype("int64"), missing)
        if pd.api.types.is_integer_dtype(dtype) and not missing.any():
            return series.to_numpy().tolist()
        return [None if m else int(v) for v, m in zip(series.tolist(), missing)]
    if kind == "bool":
        if pd.api.types.is_bool_dtype(dtype) and not missing.any():
            return series.to_numpy().tolist()
        return [None if m else bool(v) for v, m in zip(series.tolist(), missing)]
    if kind == "json":
        return [None if m else jsonable(v) for v, m in zip(series.tolist(), missing)]
    if kind == "bytes":
        return [None if m else _to_bytes(v, name) for v, m in zip(series.tolist(), missing)]
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype) and not missing.any():
        return series.tolist()  # a pandas str column holds only str
    return [None if m else (v if isinstance(v, str) else str(v)) for v, m in zip(series.tolist(), missing)]


def _to_date(value: Any, what: str) -> dt.date:
    if isinstance(value, (dt.datetime, pd.Timestamp)):
        # An aware time names a UTC day; a naive one at midnight is how pandas stores dates.
        return to_utc(value, what).date() if value.tzinfo is not None else value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value).date()
    if isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    raise DataError(f"{what}: {value!r} is not a date")


def _to_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise DataError(f"{what}: {type(value).__name__} is not bytes")


# --- upsert --------------------------------------------------------------------------------------

def _frame(rows: RowsLike) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows
    records = list(rows)
    if records and not isinstance(records[0], Mapping):
        raise TypeError("rows must be a DataFrame or a sequence of mappings")
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()


def prepare_rows(table: sa.Table, frame: pd.DataFrame) -> tuple[list[sa.Column[Any]], list[list[Any]], set[str]]:
    """Validated columns, their values (keys unique, last occurrence wins) and the defaulted columns."""
    unknown = [c for c in frame.columns if c not in table.c]
    if unknown:
        raise DataError(f"{table.name}: unknown column(s) {unknown}")
    keys = [c.name for c in table.primary_key.columns]
    missing_keys = [k for k in keys if k not in frame.columns]
    if missing_keys:
        raise DataError(f"{table.name}: key column(s) {missing_keys} missing")
    if frame.columns.has_duplicates:
        raise DataError(f"{table.name}: duplicate column names")
    frame = frame.copy(deep=False)  # filling defaults must not add columns to the caller's frame
    defaulted = set()
    for col in table.columns:
        if col.name in frame.columns:
            continue
        default = col.default
        if default is not None and default.is_scalar:
            frame[col.name] = default.arg  # type: ignore[union-attr]
            defaulted.add(col.name)
        elif not col.nullable and col.server_default is None:
            raise DataError(f"{table.name}: required column {col.name!r} missing")
    if frame.duplicated(subset=keys, keep="last").any():
        frame = frame.drop_duplicates(subset=keys, keep="last")
    columns = [table.c[name] for name in frame.columns]
    return columns, [_column_values(col, frame[col.name]) for col in columns], defaulted


def upsert(bind: Bind, table: TableLike, rows: RowsLike, *, update_columns: Sequence[str] | None = None,
           conflict: str = "update") -> int:
    """Insert `rows` into `table`, or on a key conflict update them; return rows inserted or changed.

    conflict='update' updates the non-key columns given (or only `update_columns`) and only where a
    value differs, so rows identical to the stored ones are neither rewritten nor counted;
    conflict='nothing' keeps the stored row.  Duplicate keys within `rows` keep the last one.
    Columns absent from `rows` are not touched on conflict (on insert they get their default or
    NULL).  Timestamps must be timezone-aware; NaN / None / NaT become NULL (an error in a NOT NULL column);
    JSON values may hold numpy scalars (NaN there becomes null).  `bind` is an Engine (one
    transaction per call) or a Connection (the caller's transaction).
    """
    if conflict not in ("update", "nothing"):
        raise ValueError(f"conflict must be 'update' or 'nothing', not {conflict!r}")
    t = get_table(table)
    frame = _frame(rows)
    if frame.empty:
        return 0
    columns, values, defaulted = prepare_rows(t, frame)
    n = len(values[0])
    keys = [c.name for c in t.primary_key.columns]
    # A column the caller left out keeps its stored value on conflict (its default is for inserts).
    given = [c.name for c in columns if c.name not in keys and c.name not in defaulted]
    if update_columns is not None:
        bad = [c for c in update_columns if c not in given]
        if bad:
            raise DataError(f"{t.name}: update_columns {bad} are not non-key columns of these rows")
        given = [c for c in given if c in update_columns]
    updates = given if conflict == "update" else []
    with _transaction(bind) as conn:
        if conn.dialect.name == "postgresql" and n >= COPY_MIN_ROWS:
            return _copy_merge(conn, t, [c.name for c in columns], values, keys, updates)
        return _insert_on_conflict(conn, t, [c.name for c in columns], values, keys, updates)


@contextmanager
def _transaction(bind: Bind) -> Iterator[sa.Connection]:
    if isinstance(bind, sa.Connection):
        yield bind
    else:
        with bind.begin() as conn:
            yield conn


def _insert_on_conflict(conn: sa.Connection, table: sa.Table, names: list[str], values: list[list[Any]],
                        keys: list[str], updates: list[str]) -> int:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt: Any = pg_dialect.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite_dialect.insert(table)
    else:
        raise TypeError(f"upsert supports PostgreSQL and SQLite, not {dialect!r}")
    if updates:
        excluded = stmt.excluded
        stored = [table.c[c] for c in updates]
        new = [excluded[c] for c in updates]
        if dialect == "postgresql":
            differs = sa.tuple_(*stored).is_distinct_from(sa.tuple_(*new))
        else:
            # SQLite has no row-value IS DISTINCT FROM; per column IS NOT is the same test.
            differs = sa.or_(*(s.is_distinct_from(x) for s, x in zip(stored, new)))
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: excluded[c] for c in updates},
                                          where=differs)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    params = [dict(zip(names, row)) for row in zip(*values)]
    # RETURNING yields exactly the inserted or changed rows; executemany's rowcount is not
    # summed by every driver.
    stmt = stmt.returning(table.c[keys[0]])
    return len(conn.execute(stmt, params).all())


def _copy_merge(conn: sa.Connection, table: sa.Table, names: list[str], values: list[list[Any]],
                keys: list[str], updates: list[str]) -> int:
    from psycopg import errors as pg_errors
    from psycopg import sql

    target = sql.Identifier(*(p for p in (table.schema, table.name) if p))
    tmp = sql.Identifier(f"brain_upsert_{uuid.uuid4().hex[:12]}")
    cols = sql.SQL(", ").join(map(sql.Identifier, names))

    def col_list(prefix: str, cs: Sequence[str]) -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(prefix), sql.Identifier(c))
                                  for c in cs)

    with driver_errors(conn, f"upsert into {table.name}") as raw, raw.cursor() as cur:
        cur.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(MERGE_WORK_MEM)))
        # A temporary table is never WAL-logged; LIKE keeps the target's types and NOT NULLs.
        cur.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(tmp, target))
        _copy_into(cur, tmp, names, values)

        on = sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(sql.Identifier(k)) for k in keys)
        insert = sql.SQL("WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})").format(cols, col_list("s", names))
        if updates:
            update = sql.SQL("WHEN MATCHED AND ({}) IS DISTINCT FROM ({}) THEN UPDATE SET {} ").format(
                col_list("t", updates), col_list("s", updates),
                sql.SQL(", ").join(sql.SQL("{0} = s.{0}").format(sql.Identifier(c)) for c in updates))
        else:
            update = sql.SQL("")
        merge = sql.SQL("MERGE INTO {} AS t USING {} AS s ON {} {}{}").format(target, tmp, on, update, insert)
        cur.execute("SAVEPOINT brain_upsert")
        try:
            cur.execute(merge)
            count = cur.rowcount
            cur.execute("RELEASE SAVEPOINT brain_upsert")
        except pg_errors.UniqueViolation:
            # A concurrent writer inserted one of these keys after MERGE looked: ON CONFLICT is safe.
            cur.execute("ROLLBACK TO SAVEPOINT brain_upsert")
            log.info("upsert into %s raced a concurrent insert; retrying with ON CONFLICT", table.name)
            if updates:
                action = sql.SQL("DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})").format(
                    sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in updates),
                    col_list("t", updates), col_list("excluded", updates))
            else:
                action = sql.SQL("DO NOTHING")
            cur.execute(sql.SQL("INSERT INTO {} AS t ({}) SELECT {} FROM {} ON CONFLICT ({}) {}").format(
                target, cols, cols, tmp, sql.SQL(", ").join(map(sql.Identifier, keys)), action))
            count = cur.rowcount
        cur.execute(sql.SQL("DROP TABLE {}").format(tmp))
    return max(count, 0)


def _copy_into(cur: Any, target: Any, names: list[str], values: list[list[Any]]) -> None:
    """Binary COPY of the columns `values` into `target` (a psycopg sql.Identifier)."""
    from psycopg import sql

    # The binary format needs each column's exact type: ask the server rather than map types here.
    cur.execute(sql.SQL("SELECT a.atttypid::int FROM pg_attribute a WHERE a.attrelid = {}::regclass "
                        "AND a.attname = ANY(%s) ORDER BY array_position(%s, a.attname::text)").format(
                            sql.Literal(target.as_string(cur.connection))), (names, names))
    oids = [r[0] for r in cur.fetchall()]
    cols = sql.SQL(", ").join(map(sql.Identifier, names))
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, cols)) as copy:
        copy.set_types(oids)
        for row in zip(*values):
            copy.write_row(row)


def copy_rows(bind: Bind, table: TableLike, rows: RowsLike) -> int:
    """Plain binary COPY of `rows` into `table` on PostgreSQL (no conflict handling); return rows sent.

    For loading an empty table, and the baseline of bench/ingest.py: `upsert` converts values the
    same way, so the two differ only in what the server does.
    """
    from psycopg import sql

    t = get_table(table)
    frame = _frame(rows)
    if frame.empty:
        return 0
    columns, values, _ = prepare_rows(t, frame)
    with _transaction(bind) as conn:
        if conn.dialect.name != "postgresql":
            raise TypeError(f"copy_rows needs PostgreSQL, not {conn.dialect.name!r}")
        with driver_errors(conn, f"copy into {t.name}") as raw, raw.cursor() as cur:
            _copy_into(cur, sql.Identifier(*(p for p in (t.schema, t.name) if p)), [c.name for c in columns],
                       values)
    return len(values[0])


# --- reads ---------------------------------------------------------------------------------------

def _select_item(column: sa.Column[Any], dialect: str) -> Any:
    # Timestamps travel as integers / text and are parsed by pandas in one vectorised pass: one
    # Python datetime per row (driver, then UTCDateTime) cost about 10 us each.
    if _kind(column) == "datetime":
        if dialect == "postgresql":
            return sa.cast(sa.extract("epoch", column) * 1_000_000, sa.BigInteger).label(column.name)
        if dialect == "sqlite":
            return sa.type_coerce(column, sa.String()).label(column.name)  # naive UTC text
    return column


def _timestamps(values: list[Any], dialect: str) -> pd.Series:
    if dialect == "postgresql":
        parsed = pd.to_datetime(pd.array(values, dtype="Int64"), unit="us", utc=True)
    else:
        parsed = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
    return pd.Series(parsed).astype("datetime64[us, UTC]")


def _frame_from(rows: Sequence[Any], table: sa.Table, names: Sequence[str], dialect: str) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for i, name in enumerate(names):
        values = [r[i] for r in rows]
        kind = _kind(table.c[name])
        if kind == "datetime":
            data[name] = _timestamps(values, dialect)
        elif kind == "float":
            data[name] = np.array(values, dtype="float64")  # None -> NaN
        elif kind == "int" and None not in values:
            data[name] = np.array(values, dtype="int64")
        elif kind == "bool" and None not in values:
            data[name] = np.array(values, dtype=bool)
        else:
            data[name] = pd.Series(values, dtype=object) if kind in ("json", "bytes", "date") else values
    return pd.DataFrame(data, columns=list(names))


def _select(bind: Bind, table: sa.Table, names: Sequence[str], conditions: Iterable[Any],
            order_by: Sequence[str]) -> pd.DataFrame:
    """Rows of `table` as a frame, one Python row per result row: the general read (any column type)."""
    with connection(bind) as conn:
        dialect = conn.dialect.name
        stmt = (sa.select(*(_select_item(table.c[n], dialect) for n in names)).where(*conditions)
                .order_by(*(table.c[o] for o in order_by)))
        return _frame_from(conn.execute(stmt).all(), table, names, dialect)


@contextmanager
def connection(bind: Bind) -> Iterator[sa.Connection]:
    """`bind` itself when it is a connection (a caller's reads then share its connection and transaction),
    else a connection of the engine `bind`, closed on exit."""
    if isinstance(bind, sa.Connection):
        yield bind
    else:
        with bind.connect() as conn:
            yield conn


def read_series(bind: Bind, table_name: str, names: Sequence[str], keys: Mapping[str, Any],
                start: Any, end: Any, order_by: Sequence[str] = ("ts",),
                any_of: Mapping[str, Sequence[Any]] | None = None) -> pd.DataFrame:
    """`names` of the rows under `keys` (column -> value; `any_of`: column -> allowed values) with
    start <= ts < end, sorted by `order_by`: column-wise on PostgreSQL, row by row elsewhere."""
    t = get_table(table_name)
    start = None if start is None else to_utc(start, "start")
    end = None if end is None else to_utc(end, "end")
    with connection(bind) as conn:
        if conn.dialect.name == "postgresql":
            frame = packed_select(conn, t, names, keys, any_of or {}, start, end, order_by)
            if frame is not None:
                return frame
        return _series_rows(conn, t, names, keys, start, end, order_by, any_of)


def _series_rows(bind: Bind, t: sa.Table, names: Sequence[str], keys: Mapping[str, Any], start: Any, end: Any,
                 order_by: Sequence[str], any_of: Mapping[str, Sequence[Any]] | None = None) -> pd.DataFrame:
    """The row-by-row read of `read_series` (SQLite; and the baseline bench/profile_symbol.py times)."""
    conditions = [t.c[k] == v for k, v in keys.items()]
    conditions += [t.c[k].in_(list(v)) for k, v in (any_of or {}).items()]
    if start is not None:
        conditions.append(t.c.ts >= to_utc(start, "start"))
    if end is not None:
        conditions.append(t.c.ts < to_utc(end, "end"))
    return _select(bind, t, names, conditions, order_by)


def read_candles(bind: Bind, exchange: str, symbol: str, timeframe: str, start: Any = None,
                 end: Any = None) -> pd.DataFrame:
    """Candles with `start <= ts < end`: ts (UTC), open, high, low, close, volume, sorted by ts."""
    return read_series(bind, "candles", ("ts", "open", "high", "low", "close", "volume"),
                       {"exchange": exchange, "symbol": symbol, "timeframe": timeframe}, start, end)


def read_funding(bind: Bind, exchange: str, symbol: str, start: Any = None, end: Any = None) -> pd.DataFrame:
    """Funding rates with `start <= ts < end`: ts, rate, mark_price, sorted by ts."""
    return read_series(bind, "funding_rates", ("ts", "rate", "mark_price"),
                       {"exchange": exchange, "symbol": symbol}, start, end)


def read_open_interest(bind: Bind, exchange: str, symbol: str, start: Any = None,
                       end: Any = None) -> pd.DataFrame:
    """Open interest with `start <= ts < end`: ts, open_interest, open_interest_value, sorted by ts."""
    return read_series(bind, "open_interest", ("ts", "open_interest", "open_interest_value"),
                       {"exchange": exchange, "symbol": symbol}, start, end)


def read_liquidations(bind: Bind, exchange: str, symbol: str, start: Any = None,
                      end: Any = None) -> pd.DataFrame:
    """Liquidations with `start <= ts < end`: ts, side, price, amount, value, sorted by ts then id."""
    return read_series(bind, "liquidations", ("ts", "side", "price", "amount", "value"),
                       {"exchange": exchange, "symbol": symbol}, start, end, order_by=("ts", "liq_id"))


def read_table(bind: Bind, table: TableLike, where: Mapping[str, Any] | None = None,
               order_by: str | Sequence[str] | None = None) -> pd.DataFrame:
    """All columns of `table` where each column equals its value (a list or tuple means IN).

    Sorted by `order_by`, by default the primary key.
    """
    t = get_table(table)
    conditions = []
    for name, value in (where or {}).items():
        if name not in t.c:
            raise KeyError(f"{t.name} has no column {name!r}")
        col = t.c[name]
        if isinstance(value, (list, tuple, set, frozenset)):
            conditions.append(col.in_(list(value)))
        elif value is None:
            conditions.append(col.is_(None))
        else:
            conditions.append(col == value)
    if order_by is None:
        order = [c.name for c in t.primary_key.columns]
    else:
        order = [order_by] if isinstance(order_by, str) else list(order_by)
    return _select(bind, t, [c.name for c in t.columns], conditions, order)


def stored_timestamps(bind: Bind, table: TableLike, key: Mapping[str, Any], start: Any = None,
                      end: Any = None) -> pd.Series:
    """The `ts` values stored under `key` (column -> value) with start <= ts < end, sorted, as UTC."""
    t = get_table(table)
    stmt = sa.select(t.c.ts).where(*(t.c[c] == v for c, v in key.items()))
    if start is not None:
        stmt = stmt.where(t.c.ts >= to_utc(start, "start"))
    if end is not None:
        stmt = stmt.where(t.c.ts < to_utc(end, "end"))
    with connection(bind) as conn:
        values = [r[0] for r in conn.execute(stmt.order_by(t.c.ts))]
    return pd.Series(pd.to_datetime(values, utc=True), dtype="datetime64[ns, UTC]")


def last_timestamp(bind: Bind, table: TableLike, column: str = "ts", **key_values: Any) -> dt.datetime | None:
    """The latest `column` (default ts) of `table`'s rows matching `key_values`, or None if none."""
    t = get_table(table)
    stmt = sa.select(sa.func.max(t.c[column])).where(*(t.c[k] == v for k, v in key_values.items()))
    with connection(bind) as conn:
        value = conn.execute(stmt).scalar_one()
    if value is None:
        return None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def list_symbols(bind: Bind, exchange: str | None = None, timeframe: str | None = None) -> list[str]:
    """The symbols that have candles (on `exchange`, in `timeframe` when given), sorted."""
    t = get_table("candles")
    stmt = sa.select(t.c.symbol).distinct().order_by(t.c.symbol)
    if exchange is not None:
        stmt = stmt.where(t.c.exchange == exchange)
    if timeframe is not None:
        stmt = stmt.where(t.c.timeframe == timeframe)
    with connection(bind) as conn:
        return list(conn.execute(stmt).scalars())


# --- whole-database comparison (for "run twice, compare the database" tests) ---------------------

# When a row was written, not what it says: the only columns allowed to differ between two runs of
# the same work.
# --- sentiment -------------------------------------------------------------------------------------

def read_sentiment(bind: Bind, symbol: str, start: Any = None, end: Any = None,
                   sources: Sequence[str] | None = None) -> pd.DataFrame:
    """Hourly sentiment rows of `symbol` from every source (or only `sources`) with `start <= ts < end`:
    ts, source, score, magnitude, n_items, sorted by ts then source."""
    return read_series(bind, "sentiment_scores", ("ts", "source", "score", "magnitude", "n_items"),
                       {"symbol": symbol}, start, end, order_by=("ts", "source"),
                       any_of=None if sources is None else {"source": list(sources)})
