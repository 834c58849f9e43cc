"""Fixtures of the ML-core tests: the real freqtrade sample and small seeded synthetic frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "sample" / "freqtrade-testdata"
PAIRS = ("ADA", "DASH", "ETC", "ETH", "LTC", "NXT", "TRX", "XLM", "XMR", "ZEC")


def load_pair(base: str) -> pd.DataFrame:
    """A real 5m BTC-quoted pair in the team's candle convention (column ts)."""
    return pd.read_feather(SAMPLE / f"{base}_BTC-5m.feather").rename(columns={"date": "ts"})


def synthetic_candles(n: int, seed: int = 0, timeframe: str = "5m", vol: float = 0.002) -> pd.DataFrame:
    """Random-walk candles with GARCH-like volatility clustering."""
    rng = np.random.default_rng(seed)
    sigma = np.empty(n)
    s = vol
    for i in range(n):
        s = np.sqrt(0.05 * vol**2 + 0.9 * s**2 + 0.05 * (vol * rng.standard_normal()) ** 2)
        sigma[i] = s
    r = rng.standard_normal(n) * sigma
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    wiggle = np.abs(rng.standard_normal(n)) * sigma * close
    ts = pd.date_range("2024-01-01", periods=n, freq=pd.Timedelta(timeframe.replace("m", "min")), tz="UTC")
    return pd.DataFrame(
        {
            "ts": ts,
            "open": open_,
            "high": np.maximum(open_, close) + wiggle,
            "low": np.minimum(open_, close) - wiggle,
            "close": close,
            "volume": rng.lognormal(3.0, 0.5, n),
        }
    )


@pytest.fixture(scope="session")
def eth() -> pd.DataFrame:
    return load_pair("ETH")


@pytest.fixture(scope="session")
def xrp_futures() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Real XRP/USDT:USDT 5m futures candles and the 8h funding rates (rate from the 'open' column)."""
    candles = pd.read_feather(SAMPLE / "futures" / "XRP_USDT_USDT-5m-futures.feather").rename(columns={"date": "ts"})
    raw = pd.read_feather(SAMPLE / "futures" / "XRP_USDT_USDT-8h-funding_rate.feather")
    funding = pd.DataFrame({"ts": raw["date"], "rate": raw["open"]})
    return candles, funding
