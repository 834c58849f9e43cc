"""Market data sources behind one interface: exchanges through ccxt, freqtrade data directories,
plain CSV/Parquet files, and a deterministic synthetic market.

Every ``fetch_*`` returns a frame in the conventions of `brain_tasks.market.frames`, rows in the
half-open window ``[since, until)``; validation is left to `brain_tasks.market.quality`, so a source
hands over what it received (a defective row is recorded, not silently dropped here).
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import ccxt
import pandas as pd
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from brain_tasks.errors import DataError, TransientError
from brain_tasks.market.frames import (BadRequest, EmptyFile, ExchangeRejected, Malformed, UnknownSymbol, Unsupported,
                                       conform, empty_frame, freqtrade_pair, freqtrade_stem, timeframe_delta,
                                       to_ms, ts_series, validate_symbol)
from brain_tasks.timekeeping import parse_utc
from brain_tasks.market.synthetic import SyntheticSource


@runtime_checkable
class MarketSource(Protocol):
    """What `brain_tasks.service.steps.collect` needs from a source; ``name`` is the exchange key stored in the tables."""

    name: str
    live: bool  # True when the source follows the present (staleness is checked against now)

    def fetch_candles(self, symbol: str, timeframe: str, since: Any = None, until: Any = None) -> pd.DataFrame: ...

    def fetch_funding(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame: ...

    def fetch_open_interest(self, symbol: str, timeframe: str, since: Any = None,
                            until: Any = None) -> pd.DataFrame: ...

    def fetch_liquidations(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame: ...

    def fetch_sentiment(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame: ...


def window(df: pd.DataFrame, since: Any = None, until: Any = None) -> pd.DataFrame:
    """Rows with ``since <= ts < until``; rows with an unreadable ts are kept for the validator."""
    since, until = parse_utc(since), parse_utc(until)
    keep = pd.Series(True, index=df.index)
    if since is not None:
        keep &= ~(df["ts"] < since)
    if until is not None:
        keep &= ~(df["ts"] >= until)
    return df[keep].reset_index(drop=True)


class _NoKind:
    """Mixin: every kind a source lacks raises `Unsupported` naming the source and the kind."""

    name: str

    def _unsupported(self, kind: str) -> Unsupported:
        return Unsupported(f"source {self.name!r} ({type(self).__name__}) has no {kind} data")

    def fetch_candles(self, symbol: str, timeframe: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        raise self._unsupported("candles")

    def fetch_funding(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        raise self._unsupported("funding")

    def fetch_open_interest(self, symbol: str, timeframe: str, since: Any = None,
                            until: Any = None) -> pd.DataFrame:
        raise self._unsupported("open_interest")

    def fetch_liquidations(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        raise self._unsupported("liquidations")

    def fetch_sentiment(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        raise self._unsupported("sentiment")


# --- ccxt ----------------------------------------------------------------------------------------

# ccxt's unified liquidation `side` is the side of the forced order on most exchanges (binance: a
# liquidated long is a SELL), but gate's parser derives it from the position size (size > 0, a long
# position, gives 'buy').  These exchanges report the position side.
_POSITION_SIDE = {"gate", "gateio"}


class CcxtSource(_NoKind):
    """An exchange through ccxt's unified API, paginated, rate limited, retried on network errors.

    ccxt's own ``paginate`` option retries any error without backoff and cannot stop at ``until``
    on every exchange, so pages are walked here, each call retried (tenacity, exponential backoff
    with full jitter) only on ``ccxt.NetworkError`` (timeouts, rate limits, maintenance).
    """

    live = True

    def __init__(self, exchange_id: str, *, exchange: ccxt.Exchange | None = None, max_retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 30.0, page_limit: int | None = None,
                 max_pages: int = 500, sleep: Callable[[float], None] = time.sleep,
                 config: dict[str, Any] | None = None, funding_intervals: dict[str, str] | None = None) -> None:
        if exchange is None:
            if exchange_id not in ccxt.exchanges:
                raise BadRequest(f"unknown ccxt exchange {exchange_id!r}", check="unknown_exchange")
            exchange = getattr(ccxt, exchange_id)({"enableRateLimit": True, **(config or {})})
        self.exchange = exchange
        self.name = exchange_id
        self.max_retries = max_retries
        self.page_limit = page_limit
        self.max_pages = max_pages
        self.funding_intervals = dict(funding_intervals or {})
        self._retrying = Retrying(retry=retry_if_exception_type(ccxt.NetworkError),
                                  wait=wait_random_exponential(multiplier=backoff, max=max_backoff),
                                  stop=stop_after_attempt(max_retries + 1), sleep=sleep, reraise=True)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self.exchange, method)
        try:
            return self._retrying(fn, *args, **kwargs)
        except ccxt.NetworkError as exc:
            raise TransientError(f"{self.name}.{method} failed after {self.max_retries + 1} attempts: {exc}") from exc
        except ccxt.BadSymbol as exc:
            raise UnknownSymbol(f"{self.name} does not list {args[0] if args else ''!r}: {exc}") from exc
        except ccxt.NotSupported as exc:
            raise Unsupported(f"{self.name} does not support {method}: {exc}") from exc
        except ccxt.ExchangeError as exc:
            raise ExchangeRejected(f"{self.name}.{method} was refused: {exc}") from exc
        except (TypeError, KeyError, IndexError, ValueError, AttributeError) as exc:
            # ccxt's parsers fail this way on a truncated or mis-shaped body.
            raise Malformed(f"{self.name}.{method} returned a payload ccxt could not parse: {exc!r}") from exc

    def _market(self, symbol: str, need: str) -> dict[str, Any]:
        validate_symbol(symbol)
        self._call("load_markets")
        if not self.exchange.has.get(need):
            raise Unsupported(f"{self.name} has no {need}")
        if symbol not in self.exchange.markets:
            raise UnknownSymbol(f"{self.name} does not list {symbol!r}")
        return self.exchange.markets[symbol]

    def _pages(self, method: str, args: Callable[[int | None], tuple[Any, ...]], ts_of: Callable[[Any], int],
               since: pd.Timestamp | None, until: pd.Timestamp | None, step_ms: int) -> list[Any]:
        """Walk forward from ``since`` one page at a time until ``until``, an empty page or no progress."""
        cursor = to_ms(since)
        end = to_ms(until) if until is not None else self.exchange.milliseconds()
        rows: list[Any] = []
        for _ in range(self.max_pages):
            page = self._call(method, *args(cursor))
            if not isinstance(page, list):
                raise Malformed(f"{self.name}.{method} returned {type(page).__name__}, expected a list")
            if not page:
                break
            rows.extend(page)
            try:
                last = max(ts_of(r) for r in page)
            except (TypeError, ValueError, KeyError, IndexError) as exc:
                raise Malformed(f"{self.name}.{method} rows without readable timestamps: {exc!r}") from exc
            if cursor is None or last + step_ms <= cursor or last + step_ms >= end:
                break
            cursor = last + step_ms
        else:
            raise BadRequest(f"{self.name}.{method}: more than {self.max_pages} pages; ask for a shorter window",
                             check="too_large")
        return rows

    def fetch_candles(self, symbol: str, timeframe: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        """OHLCV bars via ``fetch_ohlcv``, paginated from ``since``."""
        step = timeframe_delta(timeframe)
        self._market(symbol, "fetchOHLCV")
        since, until = parse_utc(since), parse_utc(until)
        raw = self._pages("fetch_ohlcv", lambda c: (symbol, timeframe, c, self.page_limit),
                          lambda r: int(r[0]), since, until, int(step.total_seconds() * 1000))
        bad = [r for r in raw if not isinstance(r, (list, tuple)) or len(r) < 6]
        if bad:
            raise Malformed(f"{self.name} OHLCV rows with fewer than 6 fields, e.g. {bad[0]!r}")
        df = pd.DataFrame([list(r[:6]) for r in raw], columns=["ts", "open", "high", "low", "close", "volume"])
        df["ts"] = ts_series(df["ts"]) if len(df) else df["ts"].astype("datetime64[ns, UTC]")
        # Overlapping pages repeat the boundary bar; that is pagination, not an exchange defect.
        df = df.drop_duplicates()
        return window(conform(df, "candles"), since, until)

    def funding_interval(self, symbol: str) -> str:
        """The settlement interval of ``symbol``: configured per symbol, else 8h (most perpetuals).

        ccxt reports the interval only in live funding snapshots, not in the markets, so it is configured.
        """
        return self.funding_intervals.get(symbol, "8h")

    def fetch_funding(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        """Settled funding rates via ``fetch_funding_rate_history``."""
        self._market(symbol, "fetchFundingRateHistory")
        since, until = parse_utc(since), parse_utc(until)
        raw = self._pages("fetch_funding_rate_history", lambda c: (symbol, c, self.page_limit),
                          lambda r: int(r["timestamp"]), since, until, 1)
        df = pd.DataFrame({"ts": [r.get("timestamp") for r in raw], "rate": [r.get("fundingRate") for r in raw],
                           "mark_price": [r.get("markPrice") for r in raw]})
        return window(conform(df.drop_duplicates(), "funding"), since, until)

    def fetch_open_interest(self, symbol: str, timeframe: str, since: Any = None,
                            until: Any = None) -> pd.DataFrame:
        """Open interest history via ``fetch_open_interest_history`` (base amount and quote value)."""
        step = timeframe_delta(timeframe)
        self._market(symbol, "fetchOpenInterestHistory")
        since, until = parse_utc(since), parse_utc(until)
        raw = self._pages("fetch_open_interest_history", lambda c: (symbol, timeframe, c, self.page_limit),
                          lambda r: int(r["timestamp"]), since, until, int(step.total_seconds() * 1000))
        df = pd.DataFrame({"ts": [r.get("timestamp") for r in raw],
                           "open_interest": [r.get("openInterestAmount") for r in raw],
                           "open_interest_value": [r.get("openInterestValue") for r in raw]})
        return window(conform(df.drop_duplicates(), "open_interest"), since, until)

    def fetch_liquidations(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        """Public liquidation events via ``fetch_liquidations``; ``side`` is the liquidated position."""
        self._market(symbol, "fetchLiquidations")
        since, until = parse_utc(since), parse_utc(until)
        raw = self._pages("fetch_liquidations", lambda c: (symbol, c, self.page_limit),
                          lambda r: int(r["timestamp"]), since, until, 1)
        position_side = self.name in _POSITION_SIDE
        sides = []
        for r in raw:
            s = r.get("side")
            if s in ("long", "short"):
                sides.append(s)
            elif s in ("buy", "sell"):
                sides.append(("long" if s == "buy" else "short") if position_side else
                             ("long" if s == "sell" else "short"))
            else:
                sides.append(s)
        ids = []
        for r in raw:
            info = r.get("info") or {}
            ids.append(info.get("id") or info.get("orderId") or info.get("order_id") or r.get("id") or "")
        df = pd.DataFrame({"ts": [r.get("timestamp") for r in raw], "side": sides,
                           "price": [r.get("price") for r in raw], "amount": [r.get("baseValue") for r in raw],
                           "value": [r.get("quoteValue") for r in raw], "liq_id": [str(i) for i in ids]})
        return window(conform(df, "liquidations"), since, until)


# --- freqtrade -----------------------------------------------------------------------------------

_FT_FILE = re.compile(r"^(?P<pair>[^-]+)-(?P<tf>[1-9][0-9]*[smhdwM])(?:-(?P<ctype>futures|mark|index|"
                      r"premiumIndex|funding_rate))?\.(?P<ext>feather|parquet|json|json\.gz)$")


def read_table_file(path: Path) -> pd.DataFrame:
    """Read a feather / parquet / csv / json(.gz) file; freqtrade JSON is a list of [ms, o, h, l, c, v].

    A file without rows raises `EmptyFile`: a truncated download must be a finding, not a quiet no-op."""
    df = _read_table_file(path)
    if df.empty:
        raise EmptyFile(f"{path} holds no rows")
    return df


def _read_table_file(path: Path) -> pd.DataFrame:
    name = path.name
    try:
        if name.endswith(".feather"):
            return pd.read_feather(path)
        if name.endswith(".parquet"):
            return pd.read_parquet(path)
        if name.endswith(".csv"):
            return pd.read_csv(path)
        if name.endswith((".json", ".json.gz")):
            if name.endswith(".gz"):
                with gzip.open(path, "rt") as fh:
                    text = fh.read()
            else:
                text = path.read_text()
            data = json.loads(text)
            if isinstance(data, list):
                return pd.DataFrame(data, columns=["date", "open", "high", "low", "close", "volume"])
            return pd.DataFrame(data)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise Malformed(f"cannot read {path}: {exc}") from exc
    raise Malformed(f"unknown file type: {path}")


def _rename_ts(df: pd.DataFrame) -> pd.DataFrame:
    for name in ("ts", "date", "timestamp", "time", "datetime"):
        if name in df.columns:
            return df.rename(columns={name: "ts"}) if name != "ts" else df
    raise Malformed(f"no timestamp column in {list(df.columns)}")


class FreqtradeSource(_NoKind):
    """A freqtrade data directory: ``PAIR-TF.feather`` spot candles, ``futures/PAIR-TF-futures`` perp
    candles and ``futures/PAIR-8h-funding_rate`` funding (the rate is in the ``open`` column)."""

    live = False

    def __init__(self, path: str | Path, *, name: str = "freqtrade") -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise BadRequest(f"freqtrade data directory {self.path} does not exist", check="unknown_path")
        self.name = name
        self._files: list[tuple[str, str, str, Path]] = []  # (symbol, timeframe, candle type, path)
        for file in sorted(self.path.rglob("*")):
            m = _FT_FILE.match(file.name)
            if not m or not file.is_file():
                continue
            try:
                symbol = freqtrade_pair(m["pair"])
            except DataError:
                continue
            ctype = m["ctype"] or ("futures" if ":" in symbol else "spot")
            self._files.append((symbol, m["tf"], ctype, file))

    def symbols(self, timeframe: str | None = "5m") -> list[str]:
        """Pairs with candle files (spot or perp) at ``timeframe`` (any timeframe when None)."""
        return sorted({s for s, tf, ct, _ in self._files
                       if ct in ("spot", "futures") and (timeframe is None or tf == timeframe)})

    def funding_symbols(self) -> list[str]:
        """Pairs with a funding-rate file."""
        return sorted({s for s, _, ct, _ in self._files if ct == "funding_rate"})

    def _find(self, symbol: str, timeframe: str | None, ctypes: Iterable[str]) -> tuple[str, Path] | None:
        validate_symbol(symbol)
        for ctype in ctypes:
            for s, tf, ct, file in self._files:
                if s == symbol and ct == ctype and (timeframe is None or tf == timeframe):
                    return tf, file
        return None

    def fetch_candles(self, symbol: str, timeframe: str, since: Any = None, until: Any = None, *,
                      candle_type: str | None = None) -> pd.DataFrame:
        """The pair's candles at ``timeframe``: the perp file for ``BASE/QUOTE:SETTLE`` symbols, or another
        freqtrade candle type ('mark', 'index', 'premiumIndex'; mark candles carry no volume)."""
        timeframe_delta(timeframe)
        ctype = candle_type or ("futures" if ":" in symbol else "spot")
        found = self._find(symbol, timeframe, (ctype,))
        if found is None:
            raise UnknownSymbol(f"no {timeframe} {ctype} candle file for {symbol!r} ({freqtrade_stem(symbol)}) "
                                f"in {self.path}")
        df = _rename_ts(read_table_file(found[1]))
        return window(conform(df, "candles"), since, until)

    def fetch_funding(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        """Funding settlements: freqtrade keeps the rate in ``open``; the mark price comes from the
        matching ``-mark`` file when there is one.  Timestamps are left as stored (ms jitter included):
        the validator snaps them to the interval."""
        found = self._find(symbol, None, ("funding_rate",))
        if found is None:
            raise UnknownSymbol(f"no funding-rate file for {symbol!r} in {self.path}")
        tf, file = found
        raw = _rename_ts(read_table_file(file))
        df = pd.DataFrame({"ts": ts_series(raw["ts"]), "rate": raw["open"]})
        mark = self._find(symbol, tf, ("mark",))
        if mark is not None:
            m = _rename_ts(read_table_file(mark[1]))
            prices = pd.Series(m["open"].to_numpy(), index=ts_series(m["ts"]).dt.round(tf))
            df["mark_price"] = df["ts"].dt.round(tf).map(prices[~prices.index.duplicated()])
        return window(conform(df, "funding"), since, until)

    def funding_interval(self, symbol: str) -> str:
        """The interval of the pair's funding file (the timeframe in its name)."""
        found = self._find(symbol, None, ("funding_rate",))
        return found[0] if found else "8h"


# --- plain files ---------------------------------------------------------------------------------

_KIND_MARKERS = (("candles", {"open", "high", "low", "close"}), ("funding", {"rate"}),
                 ("open_interest", {"open_interest"}), ("liquidations", {"side", "price", "amount"}),
                 ("sentiment", {"score"}))
_FILE_STEM = re.compile(r"^(?P<pair>[^-]+)(?:-(?P<tf>[1-9][0-9]*[smhdwM]))?")


class FileSource(_NoKind):
    """CSV / Parquet files under ``path`` (a file or a directory).

    Each file holds one kind, told by its columns (ohlc, ``rate``, ``open_interest``, ``side/price/amount``
    or ``score``), a timestamp column (``ts``, ``date`` or ``timestamp``: ISO text or epoch ms) and
    optional ``symbol`` / ``timeframe`` columns; without them the name ``BTC_USDT-1h.csv`` says both.
    """

    live = False

    def __init__(self, path: str | Path, *, name: str = "file") -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BadRequest(f"{self.path} does not exist", check="unknown_path")
        self.name = name
        files = [self.path] if self.path.is_file() else sorted(
            p for p in self.path.rglob("*") if p.suffix in (".csv", ".parquet"))
        self._frames: dict[str, list[pd.DataFrame]] = {k: [] for k, _ in _KIND_MARKERS}
        for file in files:
            df = _rename_ts(read_table_file(file))
            kind = next((k for k, cols in _KIND_MARKERS if cols <= set(df.columns)), None)
            if kind is None:
                raise Malformed(f"{file}: cannot tell the data kind from the columns {list(df.columns)}")
            m = _FILE_STEM.match(file.stem)
            if "symbol" not in df.columns:
                df["symbol"] = freqtrade_pair(m["pair"]) if m and "_" in m["pair"] else None
            if "timeframe" not in df.columns:
                df["timeframe"] = m["tf"] if m and m["tf"] else None
            self._frames[kind].append(df)

    def _select(self, kind: str, symbol: str, timeframe: str | None, since: Any, until: Any) -> pd.DataFrame:
        validate_symbol(symbol)
        if not self._frames[kind]:
            raise self._unsupported(kind)
        parts = [df[df["symbol"] == symbol] for df in self._frames[kind]]
        parts = [p for p in parts if len(p)]
        if timeframe is not None:
            parts = [p[p["timeframe"].isna() | (p["timeframe"] == timeframe)] for p in parts]
            parts = [p for p in parts if len(p)]
        if not parts:
            raise UnknownSymbol(f"no {kind} rows for {symbol!r}{' ' + timeframe if timeframe else ''} in {self.path}")
        return window(conform(pd.concat(parts, ignore_index=True), kind), since, until)

    def fetch_candles(self, symbol: str, timeframe: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        timeframe_delta(timeframe)
        return self._select("candles", symbol, timeframe, since, until)

    def fetch_funding(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        return self._select("funding", symbol, None, since, until)

    def fetch_open_interest(self, symbol: str, timeframe: str, since: Any = None,
                            until: Any = None) -> pd.DataFrame:
        timeframe_delta(timeframe)
        return self._select("open_interest", symbol, timeframe, since, until)

    def fetch_liquidations(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        return self._select("liquidations", symbol, None, since, until)

    def fetch_sentiment(self, symbol: str, since: Any = None, until: Any = None) -> pd.DataFrame:
        return self._select("sentiment", symbol, None, since, until)


def make_source(kind: str, **kw: Any) -> MarketSource:
    """Build a source by kind: 'ccxt' (exchange_id=...), 'freqtrade' (path=...), 'file' (path=...),
    'synthetic' (seed=...)."""
    kinds: dict[str, Callable[..., MarketSource]] = {"ccxt": CcxtSource, "freqtrade": FreqtradeSource,
                                                      "file": FileSource, "csv": FileSource, "parquet": FileSource,
                                                      "synthetic": SyntheticSource}
    if kind not in kinds:
        raise BadRequest(f"unknown source kind {kind!r}; expected one of {sorted(kinds)}", check="unknown_source")
    return kinds[kind](**kw)


__all__ = ["CcxtSource", "ExchangeRejected", "FileSource", "FreqtradeSource", "Malformed", "MarketSource",
           "SyntheticSource", "UnknownSymbol", "Unsupported", "empty_frame", "make_source", "read_table_file",
           "window"]
