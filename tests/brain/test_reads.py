"""Reads return frames ready for training; snapshots compare whole databases."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from brain_tasks.brain import store
from brain_tasks.brain.db import make_engine
from brain_tasks.brain.tables import TABLE_NAMES, Base
from tests.brain.rows import BASE_TS, candles, make_row
from tests import snapshots


def test_read_candles_sorted_typed_and_half_open(brain_db_url: str) -> None:
    engine = make_engine(brain_db_url)
    frame = candles(10)
    store.upsert(engine, "candles", frame.iloc[::-1])  # stored out of order
    store.upsert(engine, "candles", candles(3, symbol="ETH/USDT"))
    out = store.read_candles(engine, "binance", "BTC/USDT", "5m")
    assert list(out.columns) == ["ts", "open", "high", "low", "close", "volume"]
    assert str(out["ts"].dtype).endswith(", UTC]")
    assert out["ts"].is_monotonic_increasing and len(out) == 10
    assert out["close"].dtype == "float64"
    assert out["close"].tolist() == frame["close"].tolist()
    window = store.read_candles(engine, "binance", "BTC/USDT", "5m", start=frame["ts"][2], end=frame["ts"][5])
    assert window["ts"].tolist() == frame["ts"][2:5].tolist()
    with_str = store.read_candles(engine, "binance", "BTC/USDT", "5m", start="2024-01-01T00:40:00Z")
    assert with_str["ts"].tolist() == frame["ts"][8:].tolist()
    empty = store.read_candles(engine, "binance", "NOPE", "5m")
    assert empty.empty and list(empty.columns) == list(out.columns)
    assert str(empty["ts"].dtype).endswith(", UTC]") and empty["close"].dtype == "float64"


def test_read_funding_open_interest_liquidations(brain_db_url: str) -> None:
    engine = make_engine(brain_db_url)
    ts = pd.date_range(BASE_TS, periods=4, freq="8h")
    store.upsert(engine, "funding_rates", pd.DataFrame(
        {"exchange": "bybit", "symbol": "BTC/USDT:USDT", "ts": ts, "rate": [1e-4, 2e-4, -1e-4, 0.0],
         "mark_price": [1.0, 2.0, 3.0, None]}))
    store.upsert(engine, "open_interest", pd.DataFrame(
        {"exchange": "bybit", "symbol": "BTC/USDT:USDT", "ts": ts, "open_interest": [5.0, 6.0, 7.0, 8.0]}))
    store.upsert(engine, "liquidations", pd.DataFrame(
        {"exchange": "bybit", "symbol": "BTC/USDT:USDT", "ts": [ts[1], ts[0], ts[0]], "liq_id": ["c", "b", "a"],
         "side": ["long", "short", "long"], "price": [10.0, 11.0, 12.0], "amount": [1.0, 2.0, 3.0]}))
    funding = store.read_funding(engine, "bybit", "BTC/USDT:USDT", start=ts[1])
    assert list(funding.columns) == ["ts", "rate", "mark_price"]
    assert funding["rate"].tolist() == [2e-4, -1e-4, 0.0]
    oi = store.read_open_interest(engine, "bybit", "BTC/USDT:USDT", end=ts[2])
    assert list(oi.columns) == ["ts", "open_interest", "open_interest_value"]
    assert oi["open_interest"].tolist() == [5.0, 6.0] and oi["open_interest_value"].isna().all()
    liq = store.read_liquidations(engine, "bybit", "BTC/USDT:USDT")
    assert list(liq.columns) == ["ts", "side", "price", "amount", "value"]
    assert liq["price"].tolist() == [12.0, 11.0, 10.0]  # by ts, then liquidation id


def test_read_table_where_and_order(brain_db_url: str) -> None:
    engine = make_engine(brain_db_url)
    table = Base.metadata.tables["model_metrics"]
    store.upsert(engine, table, [make_row(table, i) for i in range(6)])
    rows = store.read_table(engine, "model_metrics", where={"version": [1, 4]})
    assert rows["version"].tolist() == [1, 4]
    assert rows["version"].dtype == "int64"
    desc = store.read_table(engine, "model_metrics", order_by="value")
    assert desc["value"].is_monotonic_increasing
    assert store.read_table(engine, "model_metrics", where={"symbol": "symb2"})["version"].tolist() == [2]
    with pytest.raises(KeyError):
        store.read_table(engine, "model_metrics", where={"nope": 1})


def test_last_timestamp_and_list_symbols(brain_db_url: str) -> None:
    engine = make_engine(brain_db_url)
    assert store.last_timestamp(engine, "candles", exchange="binance") is None
    store.upsert(engine, "candles", candles(10))
    store.upsert(engine, "candles", candles(4, symbol="ETH/USDT"))
    store.upsert(engine, "candles", candles(2, symbol="XRP/USDT").assign(timeframe="1h", exchange="okx"))
    last = store.last_timestamp(engine, "candles", exchange="binance", symbol="BTC/USDT", timeframe="5m")
    assert last == BASE_TS + dt.timedelta(minutes=45)
    assert last.tzinfo is not None and last.utcoffset() == dt.timedelta(0)
    assert store.list_symbols(engine) == ["BTC/USDT", "ETH/USDT", "XRP/USDT"]
    assert store.list_symbols(engine, exchange="binance") == ["BTC/USDT", "ETH/USDT"]
    assert store.list_symbols(engine, timeframe="1h") == ["XRP/USDT"]


def _fill(engine: object) -> None:
    for name in TABLE_NAMES:
        table = Base.metadata.tables[name]
        store.upsert(engine, table, [make_row(table, i) for i in range(3)])


def test_snapshot_of_the_same_writes_is_equal(brain_db_url: str) -> None:
    engine = make_engine(brain_db_url)
    _fill(engine)
    first = snapshots.snapshot(engine)
    assert set(first) == set(TABLE_NAMES) and all(len(f) == 3 for f in first.values())
    _fill(engine)
    snapshots.assert_same_database(first, snapshots.snapshot(engine))


def test_snapshot_differences_are_reported_and_ignorable(brain_db_url: str) -> None:
    engine = make_engine(brain_db_url)
    _fill(engine)
    first = snapshots.snapshot(engine)
    table = Base.metadata.tables["rollback_logs"]
    row = make_row(table, 1)
    row["created_at"] = BASE_TS + dt.timedelta(days=30)
    store.upsert(engine, table, [row])
    with pytest.raises(AssertionError, match="rollback_logs"):
        snapshots.assert_same_database(first, snapshots.snapshot(engine))
    ignore = {"rollback_logs": ["created_at"]}
    snapshots.assert_same_database(snapshots.snapshot(engine, ignore), snapshots.snapshot(engine, ignore))
    snapshots.assert_same_database(
        first | {"rollback_logs": first["rollback_logs"].drop(columns="created_at")},
        snapshots.snapshot(engine, ignore))
    with pytest.raises(KeyError):
        snapshots.snapshot(engine, {"nope": ["x"]})


def test_timestamps_round_trip_to_the_microsecond(brain_db_url: str) -> None:
    engine = make_engine(brain_db_url)
    ts = [pd.Timestamp("1969-12-31 23:59:59.999999", tz="UTC"), pd.Timestamp("2024-02-29 12:34:56.123456", tz="UTC")]
    store.upsert(engine, "funding_rates", pd.DataFrame(
        {"exchange": "x", "symbol": "y", "ts": ts, "rate": [1.0, 2.0]}))
    out = store.read_funding(engine, "x", "y")
    assert out["ts"].tolist() == ts
    assert str(out["ts"].dtype) == "datetime64[us, UTC]"
    row = make_row(Base.metadata.tables["training_runs"], 0) | {"finished_at": None}
    store.upsert(engine, "training_runs", [row])
    runs = store.read_table(engine, "training_runs")
    assert pd.isna(runs.loc[0, "finished_at"]) and runs.loc[0, "started_at"] == row["started_at"]
