"""CcxtSource on recorded exchange responses: ccxt's own request building and parsing run, only the
HTTP layer (the exchange instance's `fetch`) is replaced; no network is touched."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd
import pytest

from brain_tasks.errors import DataError, TransientError
from brain_tasks.market.quality import validate_candles, validate_funding, validate_liquidations
from brain_tasks.market.sources import (CcxtSource, ExchangeRejected, FileSource, FreqtradeSource, MarketSource,
                                        SyntheticSource, UnknownSymbol, Unsupported)

RECORDED = Path(__file__).resolve().parents[1] / "data" / "ccxt-recorded"
HOUR_MS = 3_600_000


def recorded(exchange_id: str) -> tuple[ccxt.Exchange, dict[str, Any]]:
    """A ccxt exchange with the recorded markets loaded (so load_markets never goes online)."""
    markets = json.loads((RECORDED / "markets" / f"{exchange_id}.json").read_text())
    methods = json.loads((RECORDED / "response" / f"{exchange_id}.json").read_text())["methods"]
    exchange = getattr(ccxt, exchange_id)({"enableRateLimit": False})
    exchange.set_markets(markets)
    return exchange, methods


class Server:
    """Replaces `exchange.fetch`: serves bodies (or raises errors) in order and records the URLs."""

    def __init__(self, exchange: ccxt.Exchange, bodies: list[Any]) -> None:
        self.bodies = list(bodies)
        self.urls: list[str] = []
        exchange.fetch = self

    def __call__(self, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        self.urls.append(url)
        item = self.bodies.pop(0)
        if isinstance(item, Exception):
            raise item
        return copy.deepcopy(item)


def source(exchange_id: str, exchange: ccxt.Exchange, sleeps: list[float] | None = None, **kw: Any) -> CcxtSource:
    return CcxtSource(exchange_id, exchange=exchange, sleep=(sleeps.append if sleeps is not None else lambda s: None),
                      **kw)


@pytest.mark.parametrize("exchange_id", ["binance", "bybit", "okx", "gate"])
def test_recorded_ohlcv_matches_ccxts_recorded_parse(exchange_id: str) -> None:
    exchange, methods = recorded(exchange_id)
    entry = methods["fetchOHLCV"][0]
    symbol, timeframe, since, limit = entry["input"][:4]
    expected = entry["parsedResponse"]
    Server(exchange, [entry["httpResponse"]])
    until = expected[-1][0] + HOUR_MS
    df = source(exchange_id, exchange, page_limit=limit).fetch_candles(symbol, timeframe, since, until)
    assert len(df) == len(expected)
    assert [int(t.value // 1_000_000) for t in df["ts"]] == [row[0] for row in expected]
    for col, i in (("open", 1), ("high", 2), ("low", 3), ("close", 4), ("volume", 5)):
        assert df[col].tolist() == [float(row[i]) for row in expected]
    assert validate_candles(df, timeframe).defects == []


def test_paginated_history_with_a_retried_network_error() -> None:
    exchange, methods = recorded("binance")
    entry = methods["fetchOHLCV"][0]  # BTC/USDT 1h, since 2024-01-30 16:03:11, 3 bars 16:00..18:00
    page1 = entry["httpResponse"]
    # The second page is derived, not recorded: the recorded body with every timestamp shifted by 3 hours.
    page2 = [[row[0] + 3 * HOUR_MS, *row[1:6], row[6] + 3 * HOUR_MS, *row[7:]] for row in page1]
    server = Server(exchange, [ccxt.RequestTimeout("recorded timeout"), page1, page2])
    sleeps: list[float] = []
    df = source("binance", exchange, sleeps, page_limit=3, backoff=0.5).fetch_candles(
        "BTC/USDT", "1h", since=1706628191000, until="2024-01-30 22:00")
    assert df["ts"].tolist() == list(pd.date_range("2024-01-30 16:00", periods=6, freq="1h", tz="UTC"))
    assert df["close"].tolist()[:3] == df["close"].tolist()[3:] == [43488.71, 43374.8, 43361.11]
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5  # one backoff with jitter, then the retry succeeded
    # ccxt built the request: the retry repeats page 1, then the cursor moves past its last bar.
    assert all("api/v3/klines" in u for u in server.urls)
    assert "startTime=1706628191000" in server.urls[0] and server.urls[0] == server.urls[1]
    assert f"startTime={1706637600000 + HOUR_MS}" in server.urls[2]
    assert server.bodies == []


def test_network_errors_exhaust_retries_into_a_transient_error() -> None:
    exchange, _ = recorded("okx")
    server = Server(exchange, [ccxt.RateLimitExceeded("429")] * 4)
    sleeps: list[float] = []
    with pytest.raises(TransientError, match="after 4 attempts"):
        source("okx", exchange, sleeps, max_retries=3, backoff=1.0, max_backoff=60).fetch_candles(
            "BTC/USDT", "1h", since=1706628191000)
    assert len(server.urls) == 4
    # Exponential backoff with full jitter: each wait is drawn from [0, 2**n].
    assert len(sleeps) == 3 and all(0 <= s <= 2 ** i for i, s in enumerate(sleeps, start=1))


@pytest.mark.parametrize(("error", "expected"), [(ccxt.BadSymbol("no such market"), UnknownSymbol),
                                                 (ccxt.BadRequest("invalid interval"), ExchangeRejected),
                                                 (ccxt.AuthenticationError("key"), ExchangeRejected)])
def test_exchange_errors_are_data_errors_and_not_retried(error: Exception, expected: type) -> None:
    exchange, methods = recorded("bybit")
    server = Server(exchange, [error, methods["fetchOHLCV"][0]["httpResponse"]])
    with pytest.raises(expected) as info:
        source("bybit", exchange).fetch_candles("BTC/USDT:USDT", "1h", since=1706628191000)
    assert isinstance(info.value, DataError)
    assert len(server.urls) == 1


def test_unknown_symbol_is_refused_before_any_request() -> None:
    exchange, _ = recorded("binance")
    server = Server(exchange, [])
    with pytest.raises(UnknownSymbol, match="DOGE/EUR"):
        source("binance", exchange).fetch_candles("DOGE/EUR", "1h", since=1706628191000)
    assert server.urls == []


def test_open_interest_history_from_the_recorded_bybit_body() -> None:
    exchange, methods = recorded("bybit")
    entry = methods["fetchOpenInterest"][0]
    # Reuse of the recorded fetchOpenInterest body: bybit's history call hits the same endpoint with the
    # same body shape (see SOURCE.md); the second page is that body emptied, which ends the pagination.
    empty = copy.deepcopy(entry["httpResponse"])
    empty["result"]["list"] = []
    server = Server(exchange, [entry["httpResponse"], empty])
    df = source("bybit", exchange, page_limit=1).fetch_open_interest(
        "BTC/USDT:USDT", "1h", since="2025-02-16 17:00", until="2025-02-17")
    assert df["ts"].tolist() == [pd.Timestamp("2025-02-16 17:00", tz="UTC")]
    assert df["open_interest"].tolist() == [62129.455]
    assert "v5/market/open-interest" in server.urls[0] and "intervalTime=1h" in server.urls[0]
    assert "startTime=1739725200000" in server.urls[0] and "startTime=1739728800000" in server.urls[1]


def test_gate_liquidations_map_to_position_sides_and_stable_ids() -> None:
    exchange, methods = recorded("gate")
    entry = methods["fetchLiquidations"][0]
    server = Server(exchange, [entry["httpResponse"], []])
    df = source("gate", exchange).fetch_liquidations("BTC/USDT:USDT", since="2023-11-18", until="2023-11-19")
    assert "futures/usdt/liq_orders" in server.urls[0]
    # Positive gate sizes are long positions: ccxt says 'buy', the Brain says a long was liquidated.
    assert df["side"].tolist() == ["long", "long"]
    assert df["amount"].tolist() == [0.0033, 0.0287]
    assert df["value"].tolist() == pytest.approx([120.29952, 1046.24128])
    v = validate_liquidations(df)
    assert v.defects == [] and v.clean["liq_id"].nunique() == 2
    again = validate_liquidations(df.iloc[::-1])
    assert sorted(again.clean["liq_id"]) == sorted(v.clean["liq_id"])


def test_truncated_payloads_never_pass_as_data() -> None:
    exchange, methods = recorded("binance")
    body = methods["fetchOHLCV"][0]["httpResponse"]
    # Rows cut after the low: ccxt fills the missing fields with None, the validator rejects every row.
    Server(exchange, [[row[:4] for row in body]])
    df = source("binance", exchange).fetch_candles("BTC/USDT", "1h", since=1706628191000, until="2024-01-30 19:00")
    v = validate_candles(df, "1h")
    assert v.clean.empty and v.rejected["reason"].tolist() == ["nan"] * 3
    # A body cut mid-JSON reaches ccxt as text, which its parser turns into no rows at all: collect
    # reports that as an empty response (tests/test_collect.py).
    text = json.dumps(body)
    Server(exchange, [text[: len(text) // 2]])
    assert source("binance", exchange).fetch_candles("BTC/USDT", "1h", since=1706628191000).empty


def test_missing_kinds_and_rate_limit_default() -> None:
    exchange, _ = recorded("binance")
    with pytest.raises(Unsupported, match="sentiment"):
        source("binance", exchange).fetch_sentiment("BTC/USDT")
    assert CcxtSource("kraken").exchange.enableRateLimit is True
    with pytest.raises(DataError, match="unknown ccxt exchange"):
        CcxtSource("not-an-exchange")


def test_funding_history_pages_and_jitter() -> None:
    # No recorded fetchFundingRateHistory exists (see SOURCE.md), so this stand-in replaces ccxt's unified
    # method with pages in ccxt's documented funding-history structure: it checks our pagination and
    # mapping, not ccxt's parser.
    exchange, _ = recorded("bybit")
    start = 1706659200000  # 2024-01-31 00:00 UTC
    eight = 8 * HOUR_MS
    pages = [[{"symbol": "BTC/USDT:USDT", "fundingRate": 0.0001 * (i + 1), "timestamp": start + i * eight + 17}
              for i in range(k, k + 3)] for k in (0, 3)] + [[]]
    asked: list[Any] = []

    def history(symbol: str, since: Any = None, limit: Any = None, params: Any = None) -> list[dict[str, Any]]:
        asked.append(since)
        return pages.pop(0)

    exchange.fetch_funding_rate_history = history
    src = source("bybit", exchange, funding_intervals={"ETH/USDT:USDT": "4h"})
    df = src.fetch_funding("BTC/USDT:USDT", since=start, until=start + 10 * eight)
    assert asked == [start, start + 2 * eight + 18, start + 5 * eight + 18]
    assert df["rate"].tolist() == pytest.approx([0.0001 * i for i in range(1, 7)])
    v = validate_funding(df, interval=src.funding_interval("BTC/USDT:USDT"))
    assert v.findings == [] and v.clean["ts"].tolist() == list(
        pd.date_range("2024-01-31", periods=6, freq="8h", tz="UTC"))
    assert src.funding_interval("ETH/USDT:USDT") == "4h"


def test_page_budget_stops_an_endless_history() -> None:
    exchange, methods = recorded("binance")
    body = methods["fetchOHLCV"][0]["httpResponse"]
    pages = [[[row[0] + k * 3 * HOUR_MS, *row[1:]] for row in body] for k in range(3)]  # derived, always advancing
    server = Server(exchange, pages)
    with pytest.raises(DataError, match="more than 2 pages") as info:
        source("binance", exchange, max_pages=2).fetch_candles("BTC/USDT", "1h", since=1706628191000)
    assert info.value.check == "too_large" and len(server.urls) == 2


def test_every_source_class_satisfies_the_protocol(tmp_path: Path) -> None:
    pd.DataFrame({"ts": ["2024-01-01T00:00:00Z"], "symbol": ["BTC/USDT"], "score": [0.5]}).to_csv(
        tmp_path / "news.csv", index=False)
    exchange, _ = recorded("okx")
    sample = Path(__file__).resolve().parents[2] / "sample" / "freqtrade-testdata"
    sources = [source("okx", exchange), FreqtradeSource(sample), FileSource(tmp_path), SyntheticSource(0)]
    for src in sources:
        assert isinstance(src, MarketSource) and isinstance(src.name, str)
    assert [src.live for src in sources] == [True, False, False, False]
