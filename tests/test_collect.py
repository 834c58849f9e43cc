"""The collection service on SQLite and PostgreSQL: ingest of the real sample, incremental resume,
idempotence, gap resolution, and a bad-input suite where every case gives a clear error, leaves a
data_quality_logs row and changes nothing already stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from brain_tasks.brain.db import dispose_engine, make_engine
from brain_tasks.brain.migrate import upgrade
from brain_tasks.brain.tables import Candle, FundingRate, Liquidation, OpenInterest, SentimentScore
from brain_tasks.brain.findings import read_findings, record_findings, resolve_findings
from brain_tasks.service.steps.collect import BadBatch, check_stored, collect, ingest_freqtrade, source_for
from brain_tasks.errors import DataError, TransientError
from brain_tasks.market.frames import Unsupported
from brain_tasks.market.quality import Finding
from brain_tasks.market.sources import CcxtSource, FreqtradeSource, SyntheticSource
from brain_tasks.settings import Settings
from tests import servers
from tests.market.test_ccxt_source import Server, recorded

SAMPLE = Path(__file__).resolve().parent.parent / "sample" / "freqtrade-testdata"
SYM = "BTC/USDT:USDT"
NOW = pd.Timestamp("2024-02-01", tz="UTC")
H = pd.Timedelta(hours=1)
MARKET_TABLES = (Candle, FundingRate, OpenInterest, Liquidation, SentimentScore)


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def bars(start: str = "2024-01-01", n: int = 6) -> pd.DataFrame:
    """Consistent 1h candles: the same timestamp always has the same values."""
    t = pd.date_range(start, periods=n, freq="1h", tz="UTC")
    hours = ((t - ts("2024-01-01")) / H).to_numpy()
    close = 100 + hours
    return pd.DataFrame({"ts": t, "open": close - 0.5, "high": close + 1, "low": close - 1, "close": close,
                         "volume": 10 + hours})


class Scripted:
    """A MarketSource double: serves the frames (or raises the errors) it was given and logs the calls."""

    def __init__(self, name: str = "scripted", live: bool = False, **data: Any) -> None:
        self.name, self.live, self.data, self.calls = name, live, data, []

    def _serve(self, kind: str, since: Any, until: Any) -> pd.DataFrame:
        self.calls.append((kind, since, until))
        item = self.data.get(kind)
        if item is None:
            raise Unsupported(f"scripted source has no {kind}")
        if isinstance(item, Exception):
            raise item
        return item.copy()

    def fetch_candles(self, symbol: str, timeframe: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        return self._serve("candles", since, until)

    def fetch_funding(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        return self._serve("funding", since, until)

    def fetch_open_interest(self, symbol: str, timeframe: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        return self._serve("open_interest", since, until)

    def fetch_liquidations(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        return self._serve("liquidations", since, until)

    def fetch_sentiment(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        return self._serve("sentiment", since, until)


class Spy:
    """Wraps a source, recording the windows asked for; `drop` hides some candle timestamps."""

    def __init__(self, inner: Any, drop: tuple[pd.Timestamp, pd.Timestamp] | None = None) -> None:
        self.inner, self.drop, self.calls = inner, drop, []
        self.name, self.live = inner.name, inner.live

    def fetch_candles(self, symbol: str, timeframe: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        self.calls.append((since, until))
        df = self.inner.fetch_candles(symbol, timeframe, since, until)
        if self.drop is not None:
            df = df[(df["ts"] < self.drop[0]) | (df["ts"] > self.drop[1])].reset_index(drop=True)
        return df


def snapshot(engine: sa.Engine) -> set[tuple[Any, ...]]:
    """Every market row as a tuple (table name first)."""
    rows = set()
    with engine.connect() as conn:
        for model in MARKET_TABLES:
            t = model.__table__
            for r in conn.execute(sa.select(t)):
                rows.add((t.name, *r))
    return rows


def count(engine: sa.Engine, model: type, **where: Any) -> int:
    t = model.__table__
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(t)
                            .where(*(t.c[k] == v for k, v in where.items()))).scalar_one()


@pytest.fixture
def engine(brain_db_url: str) -> sa.Engine:
    return make_engine(brain_db_url)


# --- the real sample ------------------------------------------------------------------------------

def test_ingest_freqtrade_sample_is_complete_and_idempotent(engine: sa.Engine) -> None:
    first = ingest_freqtrade(engine, SAMPLE, now=NOW)
    src = FreqtradeSource(SAMPLE)
    assert first["failed"] == {} and first["symbols"] == src.symbols("5m")
    for symbol in src.symbols("5m"):
        expected = src.fetch_candles(symbol, "5m")
        assert count(engine, Candle, exchange="freqtrade", symbol=symbol, timeframe="5m") == len(expected)
        assert first["candles"][symbol]["first"] == expected["ts"].iloc[0].isoformat()
        assert first["candles"][symbol]["last"] == expected["ts"].iloc[-1].isoformat()
    with engine.connect() as conn:
        funding = [r[0] for r in conn.execute(sa.select(FundingRate.ts).where(FundingRate.symbol == SYM.replace(
            "BTC", "XRP")).order_by(FundingRate.ts))]
    assert len(funding) == 91
    assert all(t.minute == t.second == t.microsecond == 0 and t.hour % 8 == 0 for t in funding)
    gaps = read_findings(engine, source="freqtrade", symbol="ADA/BTC", check="gap")
    assert len(gaps) == 5 and not gaps["resolved"].any()
    before = snapshot(engine)
    again = ingest_freqtrade(engine, SAMPLE, now=NOW + H)
    assert again["stored"] == 0 and again["failed"] == {}
    assert snapshot(engine) == before
    assert len(read_findings(engine, source="freqtrade", symbol="ADA/BTC", check="gap")) == 5


# --- incremental collection -----------------------------------------------------------------------

def test_resume_from_last_stored_and_same_window_twice_changes_nothing(engine: sa.Engine) -> None:
    spy = Spy(SyntheticSource(11))
    s1 = collect(engine, spy, "candles", SYM, timeframe="1h", since="2024-01-01", until="2024-01-02", now=NOW)
    assert s1["stored"] == s1["fetched"] == 24 and s1["findings"] == {}
    assert json.loads(json.dumps(s1)) == s1  # a Celery result: JSON only
    before = snapshot(engine)
    s2 = collect(engine, spy, "candles", SYM, timeframe="1h", since="2024-01-01", until="2024-01-02", now=NOW)
    assert s2["stored"] == 0 and snapshot(engine) == before
    s3 = collect(engine, spy, "candles", SYM, timeframe="1h", until="2024-01-03", now=NOW)
    assert spy.calls[-1][0] == ts("2024-01-02")  # resumed right after the last stored bar
    assert s3["stored"] == 24 and s3["window"]["since"] == "2024-01-02T00:00:00+00:00"
    stored = pd.read_sql(sa.select(Candle.ts, Candle.close).order_by(Candle.ts), engine.connect())
    expected = SyntheticSource(11).fetch_candles(SYM, "1h", "2024-01-01", "2024-01-03")
    assert np.allclose(stored["close"], expected["close"]) and len(stored) == 48


def test_every_kind_from_the_synthetic_market(engine: sa.Engine) -> None:
    src = SyntheticSource(4, end="2024-01-10")
    window = {"since": "2024-01-02", "until": "2024-01-04", "now": NOW}
    for kind, model, tf in (("funding", FundingRate, None), ("open_interest", OpenInterest, "1h"),
                            ("liquidations", Liquidation, None), ("sentiment", SentimentScore, None)):
        summary = collect(engine, src, kind, SYM, timeframe=tf, **window)
        assert summary["stored"] == summary["fetched"] == count(engine, model, symbol=SYM) > 0
        assert summary["findings"] == {}
        assert collect(engine, src, kind, SYM, timeframe=tf, **window)["stored"] == 0
    assert count(engine, FundingRate) == 6 and count(engine, OpenInterest) == 48


def test_refilled_gap_is_resolved_by_recollecting_the_window(engine: sa.Engine) -> None:
    synthetic = SyntheticSource(8)
    holey = Spy(synthetic, drop=(ts("2024-01-01 10:00"), ts("2024-01-01 12:00")))
    s1 = collect(engine, holey, "candles", SYM, timeframe="1h", since="2024-01-01", until="2024-01-02",
                 now=NOW)
    assert s1["findings"] == {"gap": 1}
    [gap] = read_findings(engine, check="gap").to_dict("records")
    assert (gap["ts_start"], gap["ts_end"], gap["resolved"]) == (ts("2024-01-01 10:00"), ts("2024-01-01 12:00"), False)
    assert gap["details"]["missing"] == 3
    s2 = collect(engine, Spy(synthetic), "candles", SYM, timeframe="1h", since="2024-01-01", until="2024-01-02",
                 now=NOW + H)
    assert s2["stored"] == 3 and s2["resolved"] == 1
    [gap] = read_findings(engine, check="gap").to_dict("records")
    assert gap["resolved"] is True and gap["resolved_at"] == NOW + H and gap["first_seen"] == NOW


def test_incremental_run_backfills_an_open_gap(engine: sa.Engine) -> None:
    synthetic = SyntheticSource(9)
    collect(engine, Spy(synthetic, drop=(ts("2024-01-01 05:00"), ts("2024-01-01 06:00"))), "candles", SYM,
            timeframe="1h", since="2024-01-01", until="2024-01-02", now=NOW)
    spy = Spy(synthetic)
    s = collect(engine, spy, "candles", SYM, timeframe="1h", until="2024-01-03", now=NOW + H)
    assert spy.calls == [(ts("2024-01-01 04:00"), ts("2024-01-03"))]  # reached back to the gap
    assert s["resolved"] == 1 and count(engine, Candle) == 48
    assert read_findings(engine, check="gap", resolved=False).empty


def test_stale_live_series_is_flagged_then_resolved(engine: sa.Engine) -> None:
    live = Scripted(live=True, candles=bars("2024-01-01", 6))
    now = ts("2024-01-01 17:30")
    s = collect(engine, live, "candles", SYM, timeframe="1h", since="2024-01-01", now=now)
    assert s["findings"] == {"stale": 1}
    live.data["candles"] = bars("2024-01-01 06:00", 12)
    s = collect(engine, live, "candles", SYM, timeframe="1h", now=now)
    assert s["findings"] == {} and s["resolved"] == 1
    assert s["withheld"] == 1 and s["last"] == "2024-01-01T16:00:00+00:00"  # the 17:00 bar is still open


def test_findings_are_logged_once_and_reopened(engine: sa.Engine) -> None:
    f = Finding("candles", "nan", "error", ts("2024-01-01 03:00"), None, {"rows": 1})
    assert record_findings(engine, "x", SYM, "1h", [f, f], now=NOW) == 1
    record_findings(engine, "x", SYM, "1h", [f], now=NOW + H)
    [row] = read_findings(engine, source="x").to_dict("records")
    assert (row["first_seen"], row["last_seen"], row["severity"]) == (NOW, NOW + H, "error")
    kw = {"window_start": ts("2024-01-01"), "window_end": ts("2024-01-02")}
    assert resolve_findings(engine, "x", SYM, "1h", "candles", still_open=[f], now=NOW, **kw) == 0
    assert resolve_findings(engine, "x", SYM, "1h", "candles", still_open=[], now=NOW, window_start=ts("2024-01-02"),
                            window_end=None) == 0  # outside the window: left alone
    assert resolve_findings(engine, "x", SYM, "1h", "candles", still_open=[], now=NOW, **kw) == 1
    record_findings(engine, "x", SYM, "1h", [f], now=NOW + 2 * H)
    [row] = read_findings(engine, source="x").to_dict("records")
    assert row["resolved"] is False and row["resolved_at"] is None and row["first_seen"] == NOW


def test_thousands_of_findings_in_one_batch(engine: sa.Engine) -> None:
    start = ts("2024-01-01")
    many = [Finding("candles", "gap", "warning", start + i * 2 * H, start + (i * 2 + 1) * H, {"missing": 1})
            for i in range(3000)]
    assert record_findings(engine, "x", SYM, "1h", many, now=NOW) == 3000
    assert len(read_findings(engine, source="x", check="gap", resolved=False)) == 3000
    assert resolve_findings(engine, "x", SYM, "1h", "candles", window_start=start, window_end=None,
                            still_open=many[:10], now=NOW) == 2990


def test_check_stored_reports_gaps_and_coverage(engine: sa.Engine) -> None:
    holey = Scripted(candles=bars("2024-01-01", 48).drop(index=[5, 6]))
    collect(engine, holey, "candles", SYM, timeframe="1h", since="2024-01-01", until="2024-01-03", now=NOW)
    out = check_stored(engine, "scripted", [SYM, "ETH/USDT"], "1h", now=NOW)
    mine = out["symbols"][SYM]
    assert (mine["gaps"], mine["missing_bars"], mine["days_below"]) == (1, 2, 1)
    assert mine["min_day_coverage"] == pytest.approx(22 / 24) and mine["mean_day_coverage"] == pytest.approx(46 / 48)
    assert out["symbols"]["ETH/USDT"]["rows"] == 0
    json.dumps(out)
    [day] = read_findings(engine, check="coverage").to_dict("records")
    assert day["ts_start"] == ts("2024-01-01") and day["details"]["present"] == 22 and not day["resolved"]
    collect(engine, Scripted(candles=bars("2024-01-01", 48)), "candles", SYM, timeframe="1h", since="2024-01-01",
            until="2024-01-03", now=NOW + H)
    assert read_findings(engine, check="coverage", resolved=False).shape[0] == 1  # for the check to judge
    assert check_stored(engine, "scripted", [SYM], "1h", now=NOW + 2 * H)["symbols"][SYM]["days_below"] == 0
    assert read_findings(engine, resolved=False).empty  # the gap (by collect) and the day (by the check)


def test_ccxt_recorded_candles_reach_the_brain(engine: sa.Engine) -> None:
    exchange, methods = recorded("binance")
    body = methods["fetchOHLCV"][0]["httpResponse"]  # BTC/USDT 1h bars 2024-01-30 16:00..18:00
    server = Server(exchange, [body, []])
    src = CcxtSource("binance", exchange=exchange, sleep=lambda s: None)
    now = ts("2024-01-30 19:30")
    s = collect(engine, src, "candles", "BTC/USDT", timeframe="1h", now=now)
    # Nothing stored yet on a live exchange: start lookback_bars before now.
    assert f"startTime={int((now - 1000 * H).value // 1_000_000)}" in server.urls[0]
    assert (s["stored"], s["findings"], s["last"]) == (3, {}, "2024-01-30T18:00:00+00:00")
    stored = store_closes(engine, "binance")
    assert stored == [43488.71, 43374.8, 43361.11]
    server = Server(exchange, [[]])
    s = collect(engine, src, "candles", "BTC/USDT", timeframe="1h", now=now + H)
    assert "startTime=1706641200000" in server.urls[0]  # resumed at 19:00, after the last stored bar
    assert s["stored"] == 0 and store_closes(engine, "binance") == stored


def store_closes(engine: sa.Engine, exchange: str) -> list[float]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(Candle.close).where(Candle.exchange == exchange)
                                           .order_by(Candle.ts))]


def test_transient_faults_propagate_for_retry(engine: sa.Engine) -> None:
    exchange, _ = recorded("binance")
    Server(exchange, [ccxt.NetworkError("down")] * 3)
    with pytest.raises(TransientError):
        collect(engine, CcxtSource("binance", exchange=exchange, max_retries=2, sleep=lambda s: None), "candles",
                "BTC/USDT", timeframe="1h", since="2024-01-30 16:00", until="2024-01-30 19:00", now=NOW)
    assert read_findings(engine).empty  # a fault of the world is retried, not logged as bad data


def test_source_for_settings() -> None:
    assert isinstance(source_for(Settings(exchange="freqtrade", sample_dir=SAMPLE)), FreqtradeSource)
    synthetic = source_for(Settings(exchange="synthetic", seed=5))
    assert isinstance(synthetic, SyntheticSource) and synthetic.seed == 5
    bybit = source_for(Settings(exchange="bybit"))
    assert isinstance(bybit, CcxtSource) and bybit.name == "bybit" and bybit.exchange.enableRateLimit
    with pytest.raises(DataError, match="unknown ccxt exchange"):
        source_for(Settings(exchange="nowhere"))


# --- the bad-input suite --------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def suite_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    """One database per backend for the whole suite, holding a stored window of every kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('bad-input') / 'brain.db'}"
    else:
        url = servers.create_database(request.getfixturevalue("pg_url"))
    upgrade(url)
    engine = make_engine(url)
    base = SyntheticSource(3, end="2024-01-03")
    good = Scripted(candles=bars("2024-01-01", 6), funding=base.fetch_funding(SYM),
                    open_interest=base.fetch_open_interest(SYM, "1h"),
                    liquidations=base.fetch_liquidations(SYM, until="2024-01-01 06:00"),
                    sentiment=base.fetch_sentiment(SYM))
    for kind, tf in (("candles", "1h"), ("funding", None), ("open_interest", "1h"), ("liquidations", None),
                     ("sentiment", None)):
        collect(engine, good, kind, SYM, timeframe=tf, since="2024-01-01", until="2024-01-03", now=NOW)
    yield engine
    dispose_engine(url)
    if request.param == "postgres":
        servers.drop_database(url)


def _batch(mutate: Any, start: str = "2024-01-01 03:00", n: int = 6) -> Scripted:
    """Candles overlapping the stored window (03:00-08:00), with one defect applied."""
    df = bars(start, n)
    return Scripted(candles=mutate(df))


def _at(df: pd.DataFrame, i: int, col: str, value: Any) -> pd.DataFrame:
    df = df.copy()
    if not isinstance(value, float):
        df[col] = df[col].astype(object)
    df.loc[i, col] = value
    return df


def _ccxt(bodies_of: Any) -> CcxtSource:
    exchange, methods = recorded("binance")
    Server(exchange, bodies_of(methods["fetchOHLCV"][0]["httpResponse"]))
    return CcxtSource("binance", exchange=exchange, sleep=lambda s: None)


_SQL = "BTC/USDT'; DROP TABLE candles; --"
_W = {"since": "2024-01-01 03:00", "until": "2024-01-01 09:00"}
_CCXT_W = {"since": "2024-01-30 16:00", "until": "2024-01-30 19:00"}

# id: (source factory, kind, symbol, collect kwargs, expected check, message pattern)
CASES: dict[str, tuple[Any, str, str, dict[str, Any], str, str]] = {
    "nan_close": (lambda: _batch(lambda d: _at(d, 2, "close", np.nan)), "candles", SYM, _W, "nan", "nan: 1"),
    "inf_high": (lambda: _batch(lambda d: _at(d, 3, "high", np.inf)), "candles", SYM, _W, "nan", "nan: 1"),
    "zero_price": (lambda: _batch(lambda d: _at(d, 1, "open", 0.0)), "candles", SYM, _W, "non_positive_price",
                   "non_positive_price"),
    "negative_price": (lambda: _batch(lambda d: _at(d, 4, "low", -3.0)), "candles", SYM, _W, "non_positive_price",
                       "non_positive_price"),
    "high_below_low": (lambda: _batch(lambda d: _at(d, 2, "high", 50.0)), "candles", SYM, _W, "ohlc_inconsistent",
                       "ohlc_inconsistent"),
    "negative_volume": (lambda: _batch(lambda d: _at(d, 5, "volume", -1.0)), "candles", SYM, _W, "negative_volume",
                        "negative_volume"),
    "wrong_type": (lambda: _batch(lambda d: _at(d, 2, "close", "one hundred")), "candles", SYM, _W, "wrong_type",
                   "wrong_type"),
    "bool_price": (lambda: _batch(lambda d: _at(d, 1, "close", True)), "candles", SYM, _W, "wrong_type",
                   "wrong_type"),
    "conflicting_duplicate_of_stored_bar": (
        lambda: _batch(lambda d: pd.concat([d, d.iloc[[0]].assign(close=999.0, high=1000.0)])), "candles", SYM, _W,
        "duplicate_conflict", "duplicate_conflict"),
    "exact_duplicates": (lambda: _batch(lambda d: pd.concat([d, d.iloc[[2, 3]]])), "candles", SYM, _W, "duplicate",
                         "duplicate: 2"),
    "unordered": (lambda: _batch(lambda d: d.iloc[[0, 2, 1, 3, 5, 4]]), "candles", SYM, _W, "unordered",
                  "unordered"),
    "future_timestamp": (lambda: _batch(lambda d: _at(d, 5, "ts", NOW + pd.Timedelta(days=2))), "candles", SYM,
                         {"since": "2024-01-01 03:00"}, "future", "future"),
    "misaligned_timestamp": (lambda: _batch(lambda d: _at(d, 4, "ts", ts("2024-01-01 07:07"))), "candles", SYM,
                             _W, "misaligned", "misaligned"),
    "unreadable_timestamp": (lambda: _batch(lambda d: _at(d, 4, "ts", "half past seven")), "candles", SYM, _W,
                             "bad_timestamp", "bad_timestamp"),
    "revision_inside_a_defective_batch": (
        lambda: _batch(lambda d: _at(_at(d, 0, "close", 101.0), 4, "volume", np.nan)), "candles", SYM, _W, "nan",
        "nan: 1"),
    "missing_column": (lambda: _batch(lambda d: d.drop(columns="volume")), "candles", SYM, _W, "malformed",
                       "lacks the column"),
    "empty_response": (lambda: Scripted(candles=bars().iloc[:0]), "candles", SYM,
                       {"since": "2024-01-02", "until": "2024-01-03"}, "empty", "returned no candles"),
    "huge_request": (lambda: Scripted(candles=bars()), "candles", SYM,
                     {"timeframe": "1m", "since": "2010-01-01", "until": "2024-01-01"},
                     "too_large", "exceed the limit"),
    "unknown_symbol": (lambda: FreqtradeSource(SAMPLE, name="scripted"), "candles", "BTC/EUR", {}, "unknown_symbol",
                       "BTC/EUR"),
    "sql_in_symbol": (lambda: Scripted(candles=bars()), "candles", _SQL, {}, "invalid_symbol", "invalid symbol"),
    "invalid_timeframe": (lambda: Scripted(candles=bars()), "candles", SYM, {"timeframe": "7x"}, "invalid_timeframe",
                          "invalid timeframe"),
    "window_backwards": (lambda: Scripted(candles=bars()), "candles", SYM,
                         {"since": "2024-01-02", "until": "2024-01-01"}, "bad_window", "not before"),
    "unknown_kind": (lambda: Scripted(), "orderbook", SYM, {}, "unknown_kind", "unknown data kind"),
    "kind_the_source_lacks": (lambda: FreqtradeSource(SAMPLE, name="scripted"), "liquidations", "ETH/BTC", {},
                              "unsupported", "no liquidations"),
    "ccxt_truncated_rows": (lambda: _ccxt(lambda b: [[r[:4] for r in b]]), "candles", "BTC/USDT", _CCXT_W, "nan",
                            "nan: 3"),
    "ccxt_truncated_json": (lambda: _ccxt(lambda b: [json.dumps(b)[:200]]), "candles", "BTC/USDT", _CCXT_W, "empty",
                            "returned no candles"),
    "ccxt_bad_symbol": (lambda: _ccxt(lambda b: [ccxt.BadSymbol("binance does not have market symbol")]), "candles",
                        "BTC/USDT", _CCXT_W, "unknown_symbol", "does not list"),
    "ccxt_exchange_error": (lambda: _ccxt(lambda b: [ccxt.BadRequest("Invalid interval")]), "candles", "BTC/USDT",
                            _CCXT_W, "exchange_rejected", "was refused"),
    "funding_absurd_rate": (lambda: Scripted(funding=pd.DataFrame({"ts": [ts("2024-01-01 08:00")], "rate": [2.5]})),
                            "funding", SYM, {"since": "2024-01-01"}, "out_of_range", "out_of_range"),
    "funding_nan_rate": (lambda: Scripted(funding=pd.DataFrame({"ts": [ts("2024-01-01 16:00")], "rate": [np.nan]})),
                         "funding", SYM, {"since": "2024-01-01"}, "nan", "nan: 1"),
    "negative_open_interest": (
        lambda: Scripted(open_interest=pd.DataFrame({"ts": [ts("2024-01-01 05:00")], "open_interest": [-4.0]})),
        "open_interest", SYM, {"since": "2024-01-01 05:00"}, "negative_value", "negative_value"),
    "liquidation_bad_side": (
        lambda: Scripted(liquidations=pd.DataFrame({"ts": [ts("2024-01-01 02:00")], "side": ["buy"], "price": [1.0],
                                                    "amount": [1.0], "liq_id": ["x1"]})),
        "liquidations", SYM, {"since": "2024-01-01"}, "bad_side", "bad_side"),
    "sentiment_out_of_range": (
        lambda: Scripted(sentiment=pd.DataFrame({"ts": [ts("2024-01-01 02:00")], "score": [7.0]})),
        "sentiment", SYM, {"since": "2024-01-01"}, "out_of_range", "out_of_range"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_recorded_refused_clearly_and_changes_nothing_stored(suite_engine: sa.Engine,
                                                                          case: str) -> None:
    make, kind, symbol, kwargs, check, pattern = CASES[case]
    source = make()
    now = NOW + pd.Timedelta(minutes=list(CASES).index(case) + 1)
    kwargs = {"timeframe": "1h" if kind in ("candles", "open_interest") else None, **kwargs}
    before = snapshot(suite_engine)
    with pytest.raises(DataError, match=pattern) as info:
        collect(suite_engine, source, kind, symbol, now=now, **kwargs)
    after = snapshot(suite_engine)
    assert before <= after  # fit rows of a bad batch may be added; no stored row is changed or removed
    logged = read_findings(suite_engine, check=check)
    mine = logged[logged["last_seen"] == now]
    assert len(mine) >= 1, f"no data_quality_logs row for {check}"
    assert (mine["symbol"] == symbol[:64]).all() and set(mine["severity"]) <= {"error", "warning"}
    if isinstance(info.value, BadBatch):
        assert info.value.summary["findings"].get(check)
        json.dumps(info.value.summary)
    if case == "huge_request":
        assert source.calls == []  # refused before asking the exchange
    if case == "sql_in_symbol":
        assert count(suite_engine, Candle) > 0  # the table is still there
