"""A seeded synthetic futures market written as freqtrade data files, and the Brain's replay of it.

The market: per pair, 5m candles whose returns carry a slow drift state (AR(1), phi 0.99) under noise,
so momentum features predict the next hours and the Brain's baseline model trades both sides.  Each
candle opens at the previous close (a continuous market, like a 24/7 perpetual): freqtrade's fill at a
candle's open is then exactly the Brain's fill at the previous close.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brain_tasks.market.frames import freqtrade_stem

START = pd.Timestamp("2024-01-01", tz="UTC")
BAR = pd.Timedelta(minutes=5)


def candles(symbol: str, n: int, seed: int) -> pd.DataFrame:
    """freqtrade's candle columns (date = the candle's open time)."""
    rng = np.random.default_rng([seed, sum(map(ord, symbol))])
    drift = np.zeros(n)
    shocks = rng.normal(0.0, 8e-5, n)
    for i in range(1, n):
        drift[i] = 0.99 * drift[i - 1] + shocks[i]
    r = drift + rng.normal(0.0, 0.002, n)
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.normal(0.0, 0.0005, n))
    return pd.DataFrame({"date": START + BAR * np.arange(n), "open": open_,
                         "high": np.maximum(open_, close) * (1 + wick), "low": np.minimum(open_, close) * (1 - wick),
                         "close": close, "volume": rng.lognormal(3.0, 0.4, n)})


def write_futures_data(root: Path, frames: dict[str, pd.DataFrame]) -> Path:
    """freqtrade's futures layout under ``root/binance/futures``: 5m candles, 1h mark candles and 1h
    funding rates (0: the comparison is about trade accounting, not funding).  Returns the datadir."""
    datadir = root / "binance"
    folder = datadir / "futures"
    folder.mkdir(parents=True, exist_ok=True)
    for symbol, df in frames.items():
        stem = freqtrade_stem(symbol)
        df.reset_index(drop=True).to_feather(folder / f"{stem}-5m-futures.feather")
        hourly = df.set_index("date").resample("1h").agg({"open": "first", "high": "max", "low": "min",
                                                           "close": "last", "volume": "sum"}).dropna()
        hourly.reset_index().to_feather(folder / f"{stem}-1h-mark.feather")
        funding = hourly.assign(open=0.0, high=0.0, low=0.0, close=0.0, volume=0.0)
        funding.reset_index().to_feather(folder / f"{stem}-1h-funding_rate.feather")
    return datadir


def markets(symbols: list[str]) -> dict[str, dict]:
    """ccxt's unified market structure for linear USDT perpetuals on binance, fine precisions."""
    out = {}
    for symbol in symbols:
        base, rest = symbol.split("/")
        quote, settle = rest.split(":")
        out[symbol] = {
            "id": f"{base}{quote}", "symbol": symbol, "base": base, "quote": quote, "settle": settle,
            "baseId": base, "quoteId": quote, "settleId": settle, "type": "swap", "spot": False, "margin": False,
            "swap": True, "future": False, "option": False, "index": None, "active": True, "contract": True,
            "linear": True, "inverse": False, "subType": "linear", "contractSize": 1.0, "expiry": None,
            "expiryDatetime": None, "strike": None, "optionType": None, "taker": 0.0005, "maker": 0.0002,
            "percentage": True, "tierBased": False, "feeSide": "get",
            "precision": {"amount": 1e-6, "price": 1e-8, "cost": None, "base": None, "quote": None},
            "limits": {"leverage": {"min": 1.0, "max": 125.0}, "amount": {"min": 1e-6, "max": 1e9},
                       "price": {"min": 1e-8, "max": 1e9}, "cost": {"min": 1.0, "max": None},
                       "market": {"min": 1e-6, "max": 1e9}},
            "marginModes": {"cross": True, "isolated": True}, "created": None, "info": {}}
    return out


def strategy_file(folder: Path, name: str) -> Path:
    """A user's strategy: a subclass of BrainStrategy, as docs/freqtrade.md shows it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.lower()}.py"
    path.write_text(
        "from brain_tasks.integrations.freqtrade import BrainStrategy\n\n\n"
        f"class {name}(BrainStrategy):\n"
        "    timeframe = '5m'\n")
    return path


def backtest_config(path: Path, *, pairs: list[str], database_url: str, replay_id: str | None, fee: float,
                    stake: float) -> Path:
    config = {
        "trading_mode": "futures", "margin_mode": "isolated", "exchange": {"name": "binance",
                                                                         "pair_whitelist": pairs},
        "stake_currency": "USDT", "stake_amount": stake, "dry_run": True, "dry_run_wallet": 1e9,
        "max_open_trades": len(pairs), "timeframe": "5m", "fee": fee,
        # Market orders priced from the order book: backtesting fills them at the candle's open anyway.
        "order_types": {"entry": "market", "exit": "market", "stoploss": "market", "stoploss_on_exchange": False},
        "entry_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
        "exit_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
        "pairlists": [{"method": "StaticPairList"}], "dataformat_ohlcv": "feather",
        "brain": {"database_url": database_url, **({"replay_id": replay_id} if replay_id else {})},
    }
    path.write_text(json.dumps(config, indent=1))
    return path


def timerange(first: pd.Timestamp, last: pd.Timestamp) -> str:
    fmt = "%Y%m%dT%H%M"
    return f"{first.strftime(fmt)}-{last.strftime(fmt)}"


@dataclass(frozen=True)
class Run:
    """One trade of a replay policy: the bars [start, end) where it held ``side``."""

    start: pd.Timestamp
    end: pd.Timestamp         # the first bar after the run (where the position changed)
    side: float
    price_relative: float     # P_exit / P_entry over the run, from the replay's own stored series
    fixed_amount_return: float


def trade_runs(positions: pd.Series, returns: pd.Series, cost: float) -> list[Run]:
    """A replay policy's per-bar positions and net returns as trades (maximal runs of one non-zero
    position), each re-expressed as a fixed-amount trade: the gross bar return is recovered from the
    stored series, (net + cost x turnover) / position, and compounded into the price relative G;
    a long earns G - 1, a short 1 - G, each times (1 - cost) for the entry and for the exit."""
    pos = positions.fillna(0.0)
    net = returns.reindex(pos.index).fillna(0.0).to_numpy()
    p = pos.to_numpy()
    turnover = np.abs(np.diff(p, prepend=0.0))
    idx = pos.index
    bar = idx[1] - idx[0]
    out, i = [], 0
    while i < len(p):
        if p[i] == 0:
            i += 1
            continue
        j = i
        while j < len(p) and p[j] == p[i]:
            j += 1
        gross = (net[i:j] + turnover[i:j] * cost) / p[i:j]
        g = float(np.prod(1.0 + gross))
        held = g if p[i] > 0 else 2.0 - g
        out.append(Run(idx[i], idx[j] if j < len(p) else idx[-1] + bar, float(p[i]), g,
                       held * (1.0 - cost) ** 2 - 1.0))
        i = j
    return out
