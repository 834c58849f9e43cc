"""The column path (rows packed server-side, parsed by numpy) returns exactly what the row path returns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from brain_tasks.brain import columnar, store
from brain_tasks.brain.db import make_engine
from tests import servers

pytestmark = pytest.mark.postgres

SAMPLE = Path(__file__).resolve().parents[2] / "sample" / "freqtrade-testdata"
EX, SYM = "bybit", "BTC/USDT:USDT"


@pytest.fixture
def pg_brain(pg_url: str) -> Iterator[sa.Engine]:
    from brain_tasks.brain.db import dispose_engine
    from brain_tasks.brain.migrate import upgrade

    url = servers.create_database(pg_url)
    upgrade(url)
    yield make_engine(url)
    dispose_engine(url)
    servers.drop_database(url)


def _both(monkeypatch: pytest.MonkeyPatch, read: Callable[[], pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(column path, row path) results of the same read."""
    answered = []

    def spy(*a: object, **k: object) -> pd.DataFrame | None:
        answered.append(columnar.packed_select(*a, **k))
        return answered[-1]

    with monkeypatch.context() as m:
        m.setattr(store, "packed_select", spy)
        packed = read()
    assert answered and all(a is not None for a in answered), "the column path was not taken"
    with monkeypatch.context() as m:
        m.setattr(store, "packed_select", lambda *a, **k: None)
        rows = read()
    return packed, rows


def assert_identical(packed: pd.DataFrame, rows: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(packed, rows, check_exact=True)
    assert list(packed.dtypes) == list(rows.dtypes)
    for name in packed.columns:
        if packed[name].dtype == "float64":  # bit for bit: -0.0, NaN and denormals included
            assert np.array_equal(packed[name].to_numpy().view(np.int64), rows[name].to_numpy().view(np.int64)), name


def _readers(engine: sa.Engine) -> dict[str, Callable[..., pd.DataFrame]]:
    return {
        "candles": lambda **w: store.read_candles(engine, EX, SYM, "5m", **w),
        "funding": lambda **w: store.read_funding(engine, EX, SYM, **w),
        "open_interest": lambda **w: store.read_open_interest(engine, EX, SYM, **w),
        "liquidations": lambda **w: store.read_liquidations(engine, EX, SYM, **w),
        "sentiment": lambda **w: store.read_sentiment(engine, SYM, **w),
    }


ODD_FLOATS = [0.0, -0.0, 1e308, -1e308, 5e-324, -2.2250738585072014e-308, 0.1, 1 / 3, np.inf, -np.inf, 7.0, 42.5]
# Before and after PostgreSQL's 2000-01-01 epoch, the Unix epoch, microseconds, far future.
ODD_TS = [dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
          dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC), dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
          dt.datetime(2024, 2, 29, 12, 0, 0, 1, tzinfo=dt.UTC), dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
          dt.datetime(1901, 1, 1, tzinfo=dt.UTC), dt.datetime(2262, 4, 11, tzinfo=dt.UTC),
          dt.datetime(2024, 1, 1, 0, 5, tzinfo=dt.UTC), dt.datetime(2024, 1, 1, 0, 10, tzinfo=dt.UTC),
          dt.datetime(2024, 1, 1, 0, 15, tzinfo=dt.UTC), dt.datetime(2024, 1, 1, 0, 20, tzinfo=dt.UTC)]


def _store_adversarial(engine: sa.Engine) -> None:
    n = len(ODD_TS)
    floats = pd.Series(ODD_FLOATS, dtype="float64")
    nullable = floats.where(np.arange(n) % 3 != 0)  # every third a NULL
    store.upsert(engine, "candles", pd.DataFrame({"exchange": EX, "symbol": SYM, "timeframe": "5m", "ts": ODD_TS,
                                                  "open": floats, "high": floats[::-1].to_numpy(), "low": floats,
                                                  "close": floats, "volume": floats}))
    store.upsert(engine, "funding_rates", pd.DataFrame({"exchange": EX, "symbol": SYM, "ts": ODD_TS, "rate": floats,
                                                        "mark_price": nullable}))
    store.upsert(engine, "open_interest", pd.DataFrame({"exchange": EX, "symbol": SYM, "ts": ODD_TS,
                                                        "open_interest": floats, "open_interest_value": nullable}))
    # Several per timestamp (ordered by id), UTF-8 of every width up to String(8)'s 8 characters.
    sides = ["long", "short", "", "ümlaut", "空売り", "🐳🐳🐳🐳🐳🐳🐳🐳", "a\tb\nc\\", "x" * 8, "'; --", "é", "L", "🐳"]
    store.upsert(engine, "liquidations", pd.DataFrame({
        "exchange": EX, "symbol": SYM, "ts": [ODD_TS[i // 2] for i in range(n)], "liq_id": [f"id{9 - i}" for i in range(n)],
        "side": sides, "price": floats, "amount": floats[::-1].to_numpy(), "value": nullable}))
    store.upsert(engine, "sentiment_scores", pd.DataFrame({
        "source": ["news", "social"] * (n // 2), "symbol": SYM, "ts": [ODD_TS[i // 2] for i in range(n)],
        "score": floats, "magnitude": nullable, "n_items": [None, 3] * (n // 2)}))
    # A stored NaN (upsert makes NaN a NULL, other writers need not): written by hand.
    with engine.begin() as conn:
        for table, column in (("candles", "close"), ("funding_rates", "rate"), ("open_interest", "open_interest"),
                              ("liquidations", "price"), ("sentiment_scores", "score"), ("funding_rates", "mark_price")):
            conn.execute(sa.text(f"UPDATE {table} SET {column} = 'NaN' WHERE ts = :ts"), {"ts": ODD_TS[4]})


def test_every_market_read_is_identical_on_adversarial_rows(pg_brain: sa.Engine,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _store_adversarial(pg_brain)
    windows = [{}, {"start": ODD_TS[3]}, {"end": ODD_TS[4]}, {"start": ODD_TS[4], "end": ODD_TS[9]},
               {"start": ODD_TS[4], "end": ODD_TS[4] + dt.timedelta(microseconds=1)},  # one row
               {"start": ODD_TS[5], "end": ODD_TS[5]}]  # empty
    for name, read in _readers(pg_brain).items():
        for window in windows:
            packed, rows = _both(monkeypatch, lambda: read(**window))  # noqa: B023 - called at once
            assert_identical(packed, rows)
        assert len(read()) == len(ODD_TS), name
    liq = store.read_liquidations(pg_brain, EX, SYM)
    assert "🐳🐳🐳🐳🐳🐳🐳🐳" in set(liq["side"]) and "" in set(liq["side"]) and "a\tb\nc\\" in set(liq["side"])
    sentiment = store.read_sentiment(pg_brain, SYM)
    assert sentiment["n_items"].dtype == "float64" and sentiment["n_items"].isna().sum() == len(ODD_TS) // 2


def test_filters_and_missing_symbols(pg_brain: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    _store_adversarial(pg_brain)
    cases = [lambda: store.read_sentiment(pg_brain, SYM, sources=["social"]),
             lambda: store.read_sentiment(pg_brain, SYM, sources=[]),
             lambda: store.read_candles(pg_brain, EX, "NOPE/USDT", "5m"),
             lambda: store.read_liquidations(pg_brain, EX, "NOPE/USDT"),
             lambda: store.read_sentiment(pg_brain, "NOPE/USDT"),
             lambda: store.read_candles(pg_brain, EX, "x' OR '1'='1", "5m")]
    for read in cases:
        assert_identical(*_both(monkeypatch, read))
    social = store.read_sentiment(pg_brain, SYM, sources=["social"])
    assert set(social["source"]) == {"social"} and social["n_items"].dtype == "int64"


def test_real_sample_market_is_identical(pg_brain: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from brain_tasks.service.steps.reads import load_market
    from brain_tasks.service.steps.collect import ingest_freqtrade
    from brain_tasks.settings import from_environ

    ingest_freqtrade(pg_brain, SAMPLE, symbols=["ETH/BTC", "LTC/BTC"], timeframe="5m")
    settings = from_environ({"BRAIN_DATABASE_URL": str(pg_brain.url)})
    for symbol in ("ETH/BTC", "LTC/BTC"):
        packed, rows = _both(monkeypatch, lambda: load_market(pg_brain, settings, symbol))  # noqa: B023
        assert len(packed["candles"]) > 1000
        for key in packed:
            assert (packed[key] is None) == (rows[key] is None), key
            if packed[key] is not None:
                assert_identical(packed[key], rows[key])


def test_a_column_without_a_fixed_width_form_falls_back_to_rows(pg_brain: sa.Engine) -> None:
    with pg_brain.connect() as conn:
        t = store.get_table("data_quality_logs")
        names = [c.name for c in t.columns]
        assert columnar.packed_select(conn, t, names, {"symbol": SYM}, {}, None, None, ["ts_start"]) is None


def test_a_rewritten_bar_in_the_middle_is_read_at_once(pg_brain: sa.Engine) -> None:
    """No read is served from a copy: a corrected bar shows in the next load_market."""
    from brain_tasks.service.steps.reads import load_market
    from brain_tasks.settings import from_environ

    ts = pd.date_range("2024-01-01", periods=500, freq="5min", tz="UTC")
    bars = pd.DataFrame({"exchange": EX, "symbol": SYM, "timeframe": "5m", "ts": ts, "open": 1.0, "high": 2.0,
                         "low": 0.5, "close": np.linspace(1, 2, len(ts)), "volume": 10.0})
    store.upsert(pg_brain, "candles", bars)
    settings = from_environ({"BRAIN_DATABASE_URL": str(pg_brain.url), "BRAIN_EXCHANGE": EX})
    before = load_market(pg_brain, settings, SYM)["candles"]
    store.upsert(pg_brain, "candles", bars.iloc[[250]].assign(close=99.0))
    after = load_market(pg_brain, settings, SYM)["candles"]
    assert before["close"].iloc[250] != 99.0 and after["close"].iloc[250] == 99.0
    assert after.drop(index=250).equals(before.drop(index=250))


def test_a_lost_server_is_sqlalchemys_operational_error_and_the_connection_is_dropped(pg_brain: sa.Engine) -> None:
    """The task policy retries SQLAlchemy's OperationalError: a columnar read on a connection the server
    dropped must raise that (not psycopg's own), or a restart fails a training instead of retrying it."""
    with pg_brain.connect() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        with pg_brain.connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        with pytest.raises(sa.exc.OperationalError):
            store.read_candles(conn, "freqtrade", "ETH/BTC", "5m")
        assert conn.invalidated
    assert store.read_candles(pg_brain, "freqtrade", "ETH/BTC", "5m").empty  # the pool hands out a live one
