"""Snapshots of every Brain table, for the tests' "same work, same rows" comparisons (run twice,
after a crash, across a restart).  Test helpers live here, not in the storage module."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from brain_tasks.brain.tables import Base
from brain_tasks.brain.store import read_table

WALL_CLOCK_COLUMNS = frozenset({"created_at", "updated_at", "started_at", "finished_at", "first_seen",
                                "last_seen", "resolved_at", "progress_at", "deadline"})


def wall_clock_columns() -> dict[str, list[str]]:
    """{table: its wall-clock columns}, the `ignore_columns` of a "same work, same rows" comparison."""
    return {t.name: [c.name for c in t.columns if c.name in WALL_CLOCK_COLUMNS]
            for t in Base.metadata.sorted_tables}


def snapshot(bind: Any, ignore_columns: Mapping[str, Iterable[str]] | None = None) -> dict[str, pd.DataFrame]:
    """Every Brain table as a frame sorted by its primary key, minus `ignore_columns[table]`.

    Ignore what legitimately differs between two runs (wall-clock times such as created_at).
    """
    ignore = {name: set(cols) for name, cols in (ignore_columns or {}).items()}
    unknown = set(ignore) - set(Base.metadata.tables)
    if unknown:
        raise KeyError(f"ignore_columns names unknown tables {sorted(unknown)}")
    out = {}
    with bind.connect() as conn:
        for t in Base.metadata.sorted_tables:
            frame = read_table(conn, t)
            out[t.name] = frame.drop(columns=[c for c in ignore.get(t.name, ()) if c in frame.columns])
    return out


def assert_same_database(a: Mapping[str, pd.DataFrame], b: Mapping[str, pd.DataFrame]) -> None:
    """Raise AssertionError naming the first table whose rows differ between two snapshots."""
    if set(a) != set(b):
        raise AssertionError(f"different tables: {sorted(set(a) ^ set(b))}")
    for name in sorted(a):
        left, right = a[name].reset_index(drop=True), b[name].reset_index(drop=True)
        if len(left) != len(right):
            raise AssertionError(f"{name}: {len(left)} rows != {len(right)} rows")
        try:
            pd.testing.assert_frame_equal(left, right, check_exact=True)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


