"""The idempotent write path on real PostgreSQL and SQLite."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from brain_tasks.brain import store
from brain_tasks.brain.db import make_engine
from brain_tasks.brain.tables import TABLE_NAMES, Base
from brain_tasks.errors import DataError
from tests.brain.rows import BASE_TS, candles, key_of, make_row

UTC = dt.timezone.utc


@pytest.fixture(params=["executemany", "copy"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both write paths: executemany with ON CONFLICT, and (PostgreSQL) COPY + MERGE."""
    monkeypatch.setattr(store, "COPY_MIN_ROWS", 1 if request.param == "copy" else 10**9)
    return request.param


def _count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(Base.metadata.tables[table])).scalar_one()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_brain_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated database per backend for the per-table tests (each empties its own table first)."""
    from brain_tasks.brain.migrate import upgrade
    from tests import servers

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('shared') / 'brain.db'}"
    else:
        url = servers.create_database(request.getfixturevalue("pg_url"))
    upgrade(url)
    return url


@pytest.mark.parametrize("table_name", TABLE_NAMES)
def test_same_batch_twice_leaves_one_row_per_key(shared_brain_db: str, path: str, table_name: str) -> None:
    engine = make_engine(shared_brain_db)
    table = Base.metadata.tables[table_name]
    with engine.begin() as conn:
        conn.execute(table.delete())
    rows = [make_row(table, i) for i in range(5)]
    # Duplicated keys within the batch: the last occurrence (changed non-key values) wins.
    batch = rows + [make_row(table, 1, variant=1), make_row(table, 3, variant=1)]
    assert store.upsert(engine, table_name, batch) == 5
    assert store.upsert(engine, table_name, batch) == 0
    assert _count(engine, table_name) == 5
    stored = store.read_table(engine, table_name)
    assert len(stored) == len(stored.drop_duplicates(subset=[c.name for c in table.primary_key.columns]))
    by_key = {key_of(table, r): r for r in stored.to_dict("records")}
    expected = make_row(table, 1, variant=1)
    got = by_key[tuple(_normal(v) for v in key_of(table, expected))]
    for name, value in expected.items():
        assert _normal(got[name]) == _normal(value), name


def _normal(value: object) -> object:
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def test_update_of_a_non_key_value_changes_that_row_only(brain_db_url: str, path: str) -> None:
    engine = make_engine(brain_db_url)
    frame = candles(50)
    assert store.upsert(engine, "candles", frame) == 50
    before = store.read_candles(engine, "binance", "BTC/USDT", "5m")
    changed = frame.copy()
    changed.loc[7, "close"] = 1234.5
    assert store.upsert(engine, "candles", changed) == 1
    after = store.read_candles(engine, "binance", "BTC/USDT", "5m")
    diff = (after.drop(columns="ts") != before.drop(columns="ts")).any(axis=1)
    assert diff.tolist() == [i == 7 for i in range(50)]
    assert after.loc[7, "close"] == 1234.5
    assert after["ts"].equals(before["ts"])


def test_update_columns_limits_the_update(brain_db_url: str, path: str) -> None:
    engine = make_engine(brain_db_url)
    store.upsert(engine, "candles", candles(3))
    changed = candles(3)
    changed["close"] = 1.0
    changed["volume"] = 2.0
    assert store.upsert(engine, "candles", changed, update_columns=["volume"]) == 3
    stored = store.read_candles(engine, "binance", "BTC/USDT", "5m")
    assert stored["volume"].tolist() == [2.0] * 3
    assert stored["close"].tolist() == candles(3)["close"].tolist()
    with pytest.raises(DataError, match="update_columns"):
        store.upsert(engine, "candles", changed, update_columns=["ts"])


def test_conflict_nothing_keeps_the_stored_row(brain_db_url: str, path: str) -> None:
    engine = make_engine(brain_db_url)
    store.upsert(engine, "candles", candles(3))
    changed = candles(4)
    changed["close"] = -1.0
    assert store.upsert(engine, "candles", changed, conflict="nothing") == 1
    closes = store.read_candles(engine, "binance", "BTC/USDT", "5m")["close"].tolist()
    assert closes[:3] == candles(3)["close"].tolist() and closes[3] == -1.0
    with pytest.raises(ValueError, match="conflict"):
        store.upsert(engine, "candles", changed, conflict="replace")


def test_naive_datetimes_are_rejected(brain_db_url: str, path: str) -> None:
    engine = make_engine(brain_db_url)
    naive = candles(3)
    naive["ts"] = naive["ts"].dt.tz_localize(None)
    with pytest.raises(DataError, match="timezone-aware"):
        store.upsert(engine, "candles", naive)
    row = make_row(Base.metadata.tables["funding_rates"], 0)
    row["ts"] = dt.datetime(2024, 1, 1)
    with pytest.raises(DataError, match="timezone-aware"):
        store.upsert(engine, "funding_rates", [row])
    with pytest.raises(DataError, match="timezone-aware"):
        store.read_candles(engine, "binance", "BTC/USDT", "5m", start=dt.datetime(2024, 1, 1))
    assert _count(engine, "candles") == 0 and _count(engine, "funding_rates") == 0


def test_other_time_zones_are_stored_as_utc(brain_db_url: str, path: str) -> None:
    engine = make_engine(brain_db_url)
    frame = candles(2)
    frame["ts"] = frame["ts"].dt.tz_convert("Asia/Tokyo")
    store.upsert(engine, "candles", frame)
    stored = store.read_candles(engine, "binance", "BTC/USDT", "5m")
    assert stored["ts"].tolist() == candles(2)["ts"].tolist()
    assert str(stored["ts"].dt.tz) == "UTC"


def test_nan_becomes_null(brain_db_url: str, path: str) -> None:
    engine = make_engine(brain_db_url)
    frame = pd.DataFrame({"exchange": "binance", "symbol": "BTC/USDT",
                          "ts": pd.date_range(BASE_TS, periods=3, freq="8h"),
                          "rate": [0.0001, -0.00025, 0.0], "mark_price": [42000.5, np.nan, None]})
    assert store.upsert(engine, "funding_rates", frame) == 3
    with engine.connect() as conn:
        nulls = conn.execute(sa.text("SELECT count(*) FROM funding_rates WHERE mark_price IS NULL")).scalar_one()
    assert nulls == 2
    stored = store.read_funding(engine, "binance", "BTC/USDT")
    assert stored["rate"].tolist() == [0.0001, -0.00025, 0.0]
    assert stored["mark_price"].isna().tolist() == [False, True, True]
    # Re-sending the NaNs is not a change: NULL IS NOT DISTINCT FROM NULL.
    assert store.upsert(engine, "funding_rates", frame) == 0
    frame.loc[0, "rate"] = np.nan
    with pytest.raises(DataError, match="NOT NULL"):
        store.upsert(engine, "funding_rates", frame)


def test_json_bytes_dates_and_numpy_scalars_round_trip(brain_db_url: str, path: str) -> None:
    engine = make_engine(brain_db_url)
    row = make_row(Base.metadata.tables["rollback_logs"], 0)
    row.update(as_of=pd.Timestamp("2024-03-05"), from_version=np.int64(3),
               stats={"b": np.float64(0.5), "a": [np.int32(1), float("nan")], "when": BASE_TS})
    assert store.upsert(engine, "rollback_logs", [row]) == 1
    stored = store.read_table(engine, "rollback_logs").iloc[0]
    assert stored["stats"] == {"a": [1, None], "b": 0.5, "when": "2024-01-01T00:00:00+00:00"}
    assert stored["as_of"] == dt.date(2024, 3, 5)
    assert stored["from_version"] == 3
    # The same dict with its keys in another order is not a change.
    row["stats"] = dict(reversed(list(row["stats"].items())))
    assert store.upsert(engine, "rollback_logs", [row]) == 0

    blob = bytes(range(256)) * 4
    art = {"sha256": "f" * 64, "artifact_format": "lightgbm-text", "data": blob, "size_bytes": len(blob),
           "created_at": BASE_TS}
    assert store.upsert(engine, "model_artifacts", [art]) == 1
    assert store.read_table(engine, "model_artifacts", where={"sha256": "f" * 64}).iloc[0]["data"] == blob


def test_bad_rows_give_clear_errors(brain_db_url: str) -> None:
    engine = make_engine(brain_db_url)
    frame = candles(2)
    with pytest.raises(DataError, match="unknown column"):
        store.upsert(engine, "candles", frame.assign(colse=1.0))
    with pytest.raises(DataError, match="key column"):
        store.upsert(engine, "candles", frame.drop(columns="ts"))
    with pytest.raises(DataError, match="required column 'volume'"):
        store.upsert(engine, "candles", frame.drop(columns="volume"))
    with pytest.raises(KeyError, match="no Brain table"):
        store.upsert(engine, "candle", frame)
    assert store.upsert(engine, "candles", frame.iloc[:0]) == 0
    assert store.upsert(engine, "candles", []) == 0


def test_missing_column_gets_its_default_and_keeps_its_stored_value(brain_db_url: str, path: str) -> None:
    engine = make_engine(brain_db_url)
    row = make_row(Base.metadata.tables["data_quality_logs"], 0)
    del row["resolved"], row["resolved_at"]
    assert store.upsert(engine, "data_quality_logs", [row]) == 1
    stored = store.read_table(engine, "data_quality_logs").iloc[0]
    assert not stored["resolved"] and pd.isna(stored["resolved_at"])
    # Re-sending the row without `resolved` must not reset a stored True to the default.
    store.upsert(engine, "data_quality_logs", [row | {"resolved": True}])
    assert store.upsert(engine, "data_quality_logs", [row]) == 0
    assert store.read_table(engine, "data_quality_logs").iloc[0]["resolved"]


def test_caller_transaction_is_respected(brain_db_url: str, path: str) -> None:
    engine = make_engine(brain_db_url)
    with engine.connect() as conn:
        with conn.begin() as tx:
            assert store.upsert(conn, "candles", candles(5)) == 5
            assert len(store.read_candles(conn, "binance", "BTC/USDT", "5m")) == 5
            tx.rollback()
    assert _count(engine, "candles") == 0


def test_bulk_batch_larger_than_the_copy_threshold(brain_db_url: str) -> None:
    engine = make_engine(brain_db_url)
    frame = candles(store.COPY_MIN_ROWS * 3)
    assert store.upsert(engine, "candles", pd.concat([frame, frame.iloc[:10]])) == len(frame)
    assert store.upsert(engine, "candles", frame) == 0
    frame.loc[frame.index[-5:], "volume"] = 0.0
    assert store.upsert(engine, "candles", frame) == 5
    assert _count(engine, "candles") == len(frame)


def test_rows_from_json_text_are_accepted(brain_db_url: str) -> None:
    # What a Celery task receives: ISO strings for times and dates.
    engine = make_engine(brain_db_url)
    row = json.loads(json.dumps(make_row(Base.metadata.tables["feature_drift"], 0), default=str))
    row["reference_start"] = "2024-01-01T00:00:00+00:00"
    assert store.upsert(engine, "feature_drift", [row]) == 1
    stored = store.read_table(engine, "feature_drift").iloc[0]
    assert stored["reference_start"] == pd.Timestamp("2024-01-01", tz="UTC")
    assert stored["as_of"] == dt.date(2024, 1, 1)


@pytest.mark.postgres
def test_merge_racing_a_concurrent_insert_falls_back_to_on_conflict(
        pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A key inserted by another transaction while MERGE runs: no error, no duplicate, last write wins."""
    import threading
    import time

    from brain_tasks.brain.db import dispose_engine
    from brain_tasks.brain.migrate import upgrade
    from tests import servers

    monkeypatch.setattr(store, "COPY_MIN_ROWS", 1)
    caplog.set_level("INFO", logger="brain_tasks.brain.store")
    url = servers.create_database(pg_url)
    upgrade(url)
    engine = make_engine(url)
    frame = candles(10)
    rival = frame.iloc[[5]].assign(close=-1.0)
    result: dict[str, object] = {}

    def writer() -> None:
        try:
            result["count"] = store.upsert(engine, "candles", frame)
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            result["error"] = exc

    with engine.connect() as rival_conn:
        rival_conn.begin()
        store.upsert(rival_conn, "candles", rival)  # uncommitted: MERGE's insert of this key must wait
        thread = threading.Thread(target=writer)
        thread.start()
        deadline = time.monotonic() + 60
        with engine.connect() as probe:
            while not probe.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'")).scalar_one():
                probe.rollback()
                assert thread.is_alive() and time.monotonic() < deadline, result
                time.sleep(0.02)
        rival_conn.commit()
    thread.join()
    assert "error" not in result, result
    assert "raced a concurrent insert" in caplog.text
    assert result["count"] == 10  # nine inserted, and the rival's row updated to this batch's value
    stored = store.read_candles(engine, "binance", "BTC/USDT", "5m")
    assert stored["close"].tolist() == frame["close"].tolist()
    dispose_engine(url)
    servers.drop_database(url)


def test_concurrent_writers_of_the_same_rows_leave_one_row_per_key(brain_db_url: str, path: str) -> None:
    import threading

    engine = make_engine(brain_db_url)
    counts: list[int] = []
    errors: list[BaseException] = []

    def write(symbol: str) -> None:
        try:
            counts.append(store.upsert(engine, "candles", candles(1500, symbol=symbol)))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in ["ETH/USDT", "LTC/USDT"] * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(counts) == [0, 0, 1500, 1500]  # each batch inserted exactly once
    assert _count(engine, "candles") == 3000
