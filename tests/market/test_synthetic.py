"""The synthetic market: deterministic, consistent across windows and timeframes, with real structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brain_tasks.market.quality import check_candles, check_funding, validate_liquidations, validate_sentiment
from brain_tasks.market.sources import SyntheticSource, Unsupported

SYM = "BTC/USDT:USDT"


def test_same_seed_same_market_other_seed_or_symbol_differs() -> None:
    a = SyntheticSource(3).fetch_candles(SYM, "1h")
    assert a.equals(SyntheticSource(3).fetch_candles(SYM, "1h"))
    assert not np.allclose(a["close"], SyntheticSource(4).fetch_candles(SYM, "1h")["close"])
    assert not np.allclose(a["close"], SyntheticSource(3).fetch_candles("ETH/USDT:USDT", "1h")["close"])


def test_windows_are_slices_and_timeframes_aggregate_the_base_grid() -> None:
    src = SyntheticSource(1)
    whole = src.fetch_candles(SYM, "1h", "2024-01-05", "2024-01-10")
    parts = pd.concat([src.fetch_candles(SYM, "1h", "2024-01-05", "2024-01-07"),
                       src.fetch_candles(SYM, "1h", "2024-01-07", "2024-01-10")], ignore_index=True)
    assert len(whole) == 120 and whole.equals(parts)
    five = src.fetch_candles(SYM, "5m", "2024-01-05", "2024-01-05 01:00")
    hour = whole.iloc[0]
    assert (hour["open"], hour["close"]) == (five["open"].iloc[0], five["close"].iloc[-1])
    assert hour["high"] == five["high"].max() and hour["volume"] == pytest.approx(five["volume"].sum())
    with pytest.raises(Unsupported):
        src.fetch_candles(SYM, "1m")


def test_every_kind_passes_the_quality_checks() -> None:
    src = SyntheticSource(2, end="2024-01-15")
    assert check_candles(src.fetch_candles(SYM, "15m"), "15m") == []
    funding = src.fetch_funding(SYM)
    assert check_funding(funding) == [] and len(funding) == 14 * 3
    assert validate_liquidations(src.fetch_liquidations(SYM)).findings == []
    assert validate_sentiment(src.fetch_sentiment(SYM)).findings == []
    oi = src.fetch_open_interest(SYM, "1h")
    assert len(oi) == 14 * 24 and (oi["open_interest"] > 0).all()


def test_regimes_drive_volatility_and_liquidations_follow_moves() -> None:
    src = SyntheticSource(5, end="2024-04-01")
    bars = src.fetch_candles(SYM, "5m")
    regimes = src.regimes(SYM)
    assert set(regimes["regime"]) == {"low", "normal", "high", "extreme"}
    ret = np.log(bars["close"]).diff()
    vol = ret.groupby(regimes["regime"]).std()
    assert vol["low"] < vol["normal"] < vol["high"] < vol["extreme"]
    liq = src.fetch_liquidations(SYM)
    bar = liq["ts"].dt.floor("5min")
    moves = pd.Series(ret.to_numpy(), index=bars["ts"]).reindex(bar).to_numpy()
    # Longs are liquidated on falling bars, shorts on rising ones.
    assert (liq["side"][moves < 0] == "long").mean() > 0.7 and (liq["side"][moves > 0] == "short").mean() > 0.7
    counts = bar.value_counts().reindex(bars["ts"], fill_value=0).to_numpy()
    big = np.abs(ret.to_numpy()) > np.nanquantile(np.abs(ret), 0.99)
    assert counts[big].mean() > 5 * counts[~big].mean()  # bursts on large moves


def test_funding_interval_is_configurable() -> None:
    src = SyntheticSource(2, end="2024-01-03", funding_interval="4h")
    funding = src.fetch_funding(SYM)
    assert src.funding_interval(SYM) == "4h" and len(funding) == 12
    assert check_funding(funding, interval="4h") == []
