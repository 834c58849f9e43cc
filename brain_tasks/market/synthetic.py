"""A deterministic synthetic market for tests and benchmarks with hundreds of symbols.

Per (seed, symbol) one base path is drawn on a fixed grid from ``start`` to ``end``: a Markov chain of
volatility regimes drives fat-tailed returns; funding follows the recent premium, open interest follows
trend and volatility, liquidations arrive in bursts on large moves (longs liquidated on drops), and
sentiment tracks the last day's return.  Any window of any kind is a slice of that path, so collecting
a window in pieces gives the same rows as collecting it at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from brain_tasks.market.frames import Unsupported, conform, timeframe_delta, validate_symbol
from brain_tasks.timekeeping import parse_utc

REGIMES = ("low", "normal", "high", "extreme")
_VOL_MULT = np.array([0.5, 1.0, 2.0, 4.0])
# Stationary mix: mostly normal, rarely extreme.
_REGIME_P = np.array([0.3, 0.45, 0.2, 0.05])


@dataclass(frozen=True)
class _Path:
    bars: pd.DataFrame          # base-grid candles + regime + return
    funding: pd.DataFrame
    open_interest: pd.DataFrame
    liquidations: pd.DataFrame
    sentiment: pd.DataFrame


class SyntheticSource:
    """Seeded generator of every data kind; ``name`` defaults to 'synthetic'."""

    live = False

    def __init__(self, seed: int, *, start: Any = "2024-01-01", end: Any = "2024-03-01", base_timeframe: str = "5m",
                 annual_vol: float = 0.6, funding_interval: str = "8h", name: str = "synthetic") -> None:
        self.seed = int(seed)
        self.start = parse_utc(start)
        self.end = parse_utc(end)
        self.base = timeframe_delta(base_timeframe)
        self.base_timeframe = base_timeframe
        self.annual_vol = annual_vol
        self._funding_timeframe = funding_interval
        self._funding_step = timeframe_delta(funding_interval)
        self.name = name
        self._cache: dict[str, _Path] = {}

    def _rng(self, symbol: str) -> np.random.Generator:
        digest = int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "big")
        return np.random.default_rng([self.seed, digest])

    def _path(self, symbol: str) -> _Path:
        validate_symbol(symbol)
        if symbol not in self._cache:
            self._cache[symbol] = self._generate(symbol)
        return self._cache[symbol]

    def _generate(self, symbol: str) -> _Path:
        rng = self._rng(symbol)
        ts = pd.date_range(self.start, self.end, freq=self.base, inclusive="left")
        n = len(ts)
        bars_per_day = pd.Timedelta(days=1) / self.base
        # Regimes last about two days on average.
        regime = np.empty(n, dtype=np.int64)
        i = 0
        state = int(rng.choice(4, p=_REGIME_P))
        while i < n:
            length = int(rng.geometric(1.0 / (2 * bars_per_day)))
            regime[i:i + length] = state
            i += length
            state = int(rng.choice(4, p=_REGIME_P))
        sigma = self.annual_vol / np.sqrt(365 * bars_per_day) * _VOL_MULT[regime]
        shocks = rng.standard_t(4, n) / np.sqrt(2.0)  # unit variance for df=4
        ret = sigma * shocks
        p0 = float(np.exp(rng.uniform(np.log(0.5), np.log(50000))))
        close = p0 * np.exp(np.cumsum(ret))
        open_ = np.concatenate([[p0], close[:-1]])
        wick = np.abs(rng.normal(0, 1, (2, n))) * sigma * 0.6
        high = np.maximum(open_, close) * np.exp(wick[0])
        low = np.minimum(open_, close) * np.exp(-wick[1])
        volume = rng.lognormal(np.log(1000 / p0 + 1), 0.4, n) * (1 + 3 * np.abs(ret) / sigma.mean())
        bars = pd.DataFrame({"ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume,
                             "regime": np.array(REGIMES)[regime], "ret": ret})

        # Funding: the premium of the last interval's trend, clipped like an exchange's cap.
        per_interval = max(int(self._funding_step / self.base), 1)
        trend = pd.Series(ret).rolling(per_interval, min_periods=1).sum().to_numpy()
        f_idx = np.flatnonzero(((ts - pd.Timestamp(0, tz="UTC")) % self._funding_step) == pd.Timedelta(0))
        rate = np.clip(0.0001 + 0.02 * trend[f_idx] + rng.normal(0, 5e-5, len(f_idx)), -0.0075, 0.0075)
        funding = pd.DataFrame({"ts": ts[f_idx], "rate": rate, "mark_price": open_[f_idx]})

        # Open interest: builds with trend, unwinds in volatile regimes.
        d_log_oi = 0.3 * ret - 0.02 * sigma * (regime >= 2) + rng.normal(0, 0.2, n) * sigma
        oi = (1e6 / p0 + 10) * np.exp(np.cumsum(d_log_oi))
        open_interest = pd.DataFrame({"ts": ts, "open_interest": oi, "open_interest_value": oi * close})

        # Liquidations: a Poisson burst rate that explodes with the size of the move.
        z = np.abs(ret) / (self.annual_vol / np.sqrt(365 * bars_per_day))
        lam = np.minimum(0.05 * np.exp(1.2 * z) * _VOL_MULT[regime], 50.0)
        counts = rng.poisson(lam)
        bar_of = np.repeat(np.arange(n), counts)
        m = len(bar_of)
        offset_ms = rng.integers(0, int(self.base.total_seconds() * 1000), m)
        long_side = rng.random(m) < np.where(ret[bar_of] < 0, 0.85, 0.15)
        price = close[bar_of] * np.exp(rng.normal(0, 0.3, m) * sigma[bar_of])
        amount = rng.lognormal(np.log(5000 / p0 + 1e-3), 1.0, m)
        ev_ts = ts[bar_of] + pd.to_timedelta(offset_ms, unit="ms")
        liquidations = pd.DataFrame({"ts": ev_ts, "side": np.where(long_side, "long", "short"), "price": price,
                                     "amount": amount, "value": price * amount,
                                     "liq_id": [f"syn-{b}-{k}" for k, b in enumerate(bar_of)]})
        liquidations = liquidations.sort_values(["ts", "liq_id"], kind="stable").reset_index(drop=True)

        # Sentiment: hourly, following the last day's return with noise.
        per_hour = max(int(pd.Timedelta(hours=1) / self.base), 1)
        day_ret = pd.Series(np.log(close)).diff(int(bars_per_day)).fillna(0).to_numpy()
        h_idx = np.arange(0, n, per_hour)
        score = np.tanh(15 * day_ret[h_idx] + rng.normal(0, 0.3, len(h_idx)))
        sentiment = pd.DataFrame({"ts": ts[h_idx], "score": score,
                                  "magnitude": np.abs(score) + np.abs(rng.normal(0, 0.1, len(h_idx))),
                                  "n_items": rng.poisson(20, len(h_idx)).astype("float64")})
        return _Path(bars, funding, open_interest, liquidations, sentiment)

    @staticmethod
    def _slice(df: pd.DataFrame, since: Any, until: Any) -> pd.DataFrame:
        since, until = parse_utc(since), parse_utc(until)
        keep = np.ones(len(df), dtype=bool)
        if since is not None:
            keep &= (df["ts"] >= since).to_numpy()
        if until is not None:
            keep &= (df["ts"] < until).to_numpy()
        return df[keep].reset_index(drop=True)

    def fetch_candles(self, symbol: str, timeframe: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        """Bars at ``timeframe`` (a multiple of the base grid), aggregated from the base path."""
        step = timeframe_delta(timeframe)
        if step % self.base != pd.Timedelta(0):
            raise Unsupported(f"synthetic candles are built on {self.base_timeframe}; {timeframe} is not a multiple")
        bars = self._path(symbol).bars
        if step != self.base:
            bars = (bars.set_index("ts").resample(step, origin="epoch", label="left", closed="left")
                    .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
                    .dropna().reset_index())
        return conform(self._slice(bars, since, until), "candles")

    def regimes(self, symbol: str, timeframe: str | None = None) -> pd.DataFrame:
        """The true regime of every base bar (``ts``, ``regime``): ground truth for regime detectors."""
        bars = self._path(symbol).bars[["ts", "regime"]]
        if timeframe is not None:
            step = timeframe_delta(timeframe)
            bars = bars[((bars["ts"] - pd.Timestamp(0, tz="UTC")) % step) == pd.Timedelta(0)]
        return bars.reset_index(drop=True)

    def funding_interval(self, symbol: str) -> str:
        """The settlement interval of every synthetic perpetual."""
        return self._funding_timeframe

    def fetch_funding(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        return conform(self._slice(self._path(symbol).funding, since, until), "funding")

    def fetch_open_interest(self, symbol: str, timeframe: str, since: Any = None,
                            until: Any = None) -> pd.DataFrame:
        step = timeframe_delta(timeframe)
        oi = self._path(symbol).open_interest
        oi = oi[((oi["ts"] - pd.Timestamp(0, tz="UTC")) % step) == pd.Timedelta(0)]
        return conform(self._slice(oi, since, until), "open_interest")

    def fetch_liquidations(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        return conform(self._slice(self._path(symbol).liquidations, since, until), "liquidations")

    def fetch_sentiment(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        return conform(self._slice(self._path(symbol).sentiment, since, until), "sentiment")
