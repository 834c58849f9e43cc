"""freqtrade driven by the Brain: `BrainStrategy`, a freqtrade `IStrategy` base class.

A user subclasses it in `user_data/strategies/` (docs/freqtrade.md).  Every candle, each pair gets a
*target position* from the Brain, and the entry/exit columns follow from it alone:

    target +1: enter_long = 1, exit_short = 1       target -1: enter_short = 1, exit_long = 1
    target  0: exit_long = exit_short = 1 (nothing opened, what is open is closed)
    target NaN ("hold"): no column set (nothing opened, nothing closed)

Where the target comes from:

- dry-run and live: the Brain's `Signal` for the decision bar (below).  A tradeable signal's
  `position` is the target and its `size` scales `custom_stake_amount`.  A *stale* signal (the Brain's
  newest bar is not the decision bar, or the Brain says its data is stale), a *flat* one (position 0,
  or a model type outside the configured models) and a *not-tradeable* one (`tradeable` False, or its
  confidence under the configured minimum) give 0: nothing opens and what is open closes.  A pair the
  Brain does not know gives NaN and is logged once.  A Brain that cannot be reached gives NaN to every
  pair (freqtrade keeps running, opens nothing new, keeps what is open) and logs one line per minute
  at most.
- backtesting and hyperopt: the per-bar positions of a stored replay's `brain` policy
  (`brain/replays.positions`), so backtest and live trade the same decisions.  The replay is the
  configured `replay_id`, else the newest replay of the pair whose window covers the timerange.

Execution lag (one convention for both modes): the Brain's decision for bar t (made at t's close) is
put on freqtrade's row t + lag, and freqtrade fills a row's signal at the next candle's open, i.e. at
the open of t + lag + 1, which is the close of t + lag where candles are continuous.  That is the fill
the Brain's training and replay price (`execution_lag`, default 1 bar: `labels.bar_returns`), so a
replay position held over bar (t + lag, t + lag + 1] is the freqtrade trade open over that candle.

Pair names: freqtrade and the Brain both use ccxt unified symbols (`ETH/BTC`, `BTC/USDT:USDT`).  A
pair maps to the configured alias, else to itself when the Brain knows it, else a perpetual
`BASE/QUOTE:SETTLE` to its spot `BASE/QUOTE` (and a spot pair to its `:QUOTE` perpetual) when the Brain
knows that one.

freqtrade is imported here and nowhere else in the package.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from freqtrade.enums import RunMode
from freqtrade.strategy import IStrategy

logger = logging.getLogger(__name__)

__all__ = ["BrainStrategy", "brain_symbol", "target_columns", "replay_for", "RateLimitedLog", "REPLAY_POLICY"]

REPLAY_POLICY = "brain"  # the replay policy whose decisions the backtest trades
# Live modes ask the Brain; every other mode (backtesting, hyperopt, plotting, the web UI's backtests)
# trades a stored replay.
LIVE_MODES = (RunMode.LIVE, RunMode.DRY_RUN)
SIGNAL_COLUMNS = ("enter_long", "exit_long", "enter_short", "exit_short")


# --- pure pieces (tested on their own) ---------------------------------------------------------------

def brain_symbol(pair: str, known: Iterable[str], aliases: Mapping[str, str] | None = None) -> str | None:
    """The Brain's symbol for a freqtrade pair, or None when the Brain knows no counterpart of it."""
    known = set(known)
    if aliases and pair in aliases:
        return aliases[pair] if aliases[pair] in known else None
    if pair in known:
        return pair
    spot, _, settle = pair.partition(":")
    if settle and spot in known:
        return spot  # a perpetual traded on its spot pair's decisions
    if not settle and "/" in pair and f"{pair}:{pair.split('/')[1]}" in known:
        return f"{pair}:{pair.split('/')[1]}"
    return None


def target_columns(target: np.ndarray, can_short: bool) -> dict[str, np.ndarray]:
    """freqtrade's four signal columns from a target position per row (+1, -1, 0, NaN = hold).

    Without shorting (spot), a short target counts as flat: it opens nothing and closes a long."""
    t = np.asarray(target, dtype="float64")
    if not can_short:
        t = np.where(t < 0, 0.0, t)
    known = np.isfinite(t)
    return {"enter_long": (known & (t > 0)).astype("int8"),
            "exit_long": (known & (t <= 0)).astype("int8"),
            "enter_short": (known & (t < 0)).astype("int8") if can_short else np.zeros(len(t), dtype="int8"),
            "exit_short": (known & (t >= 0)).astype("int8") if can_short else np.zeros(len(t), dtype="int8")}


def replay_for(replays: Sequence[Mapping[str, Any]], pair: str, start: pd.Timestamp, end: pd.Timestamp,
               aliases: Mapping[str, str] | None = None) -> str | None:
    """The id of the newest replay (``list_replays`` order: newest first) that holds the pair's Brain
    symbol and whose traded days cover [start, end]."""
    for r in replays:
        if brain_symbol(pair, r["symbols"], aliases) is not None \
                and pd.Timestamp(r["start"]).date() <= start.date() \
                and pd.Timestamp(r["end"]).date() >= end.date():
            return str(r["replay_id"])
    return None


class RateLimitedLog:
    """Log a warning at most once per ``interval`` seconds (the unreachable Brain: one line a minute,
    however many pairs and candles fail meanwhile)."""

    def __init__(self, log: logging.Logger, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.log, self.interval, self.clock = log, interval, clock
        self._last: float | None = None

    def warning(self, message: str, *args: Any) -> bool:
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        self.log.warning(message, *args)
        return True


# --- the strategy ------------------------------------------------------------------------------------

class BrainStrategy(IStrategy):
    """A freqtrade strategy whose entries, exits and stakes are the Brain's decisions.

    Subclass it and set, in the subclass or in the config's ``"brain"`` section (the config wins):
    ``brain_database_url`` (else ``BRAIN_DATABASE_URL``), ``brain_models`` (model types whose signals
    may trade; empty: any), ``brain_min_confidence``, ``brain_replay_id`` (backtesting), ``brain_pairs``
    (freqtrade pair -> Brain symbol), ``brain_execution_lag`` (bars; default: the replay's, else 1) and
    ``timeframe`` (the Brain's, default 5m).  ROI and stoploss are off: the Brain's decisions are the
    only exits (a subclass may set them, at the cost of trading other decisions than the replay's).
    """

    INTERFACE_VERSION = 3
    timeframe = "5m"
    can_short = False  # set from the config: True in futures/margin mode
    minimal_roi = {"0": 1000.0}
    stoploss = -0.99
    trailing_stop = False
    use_exit_signal = True
    exit_profit_only = False
    ignore_roi_if_entry_signal = True
    process_only_new_candles = True
    startup_candle_count = 0

    brain_database_url: str | None = None
    brain_models: Sequence[str] = ()
    brain_min_confidence: float = 0.0
    brain_replay_id: str | None = None
    brain_pairs: Mapping[str, str] = {}
    brain_execution_lag: int | None = None
    brain_unreachable_log_interval: float = 60.0

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        opts = dict(config.get("brain") or {})
        for key in ("database_url", "models", "min_confidence", "replay_id", "pairs", "execution_lag"):
            if key in opts:
                setattr(self, f"brain_{key}", opts[key])
        self.can_short = str(config.get("trading_mode", "spot")) in ("futures", "margin")
        self._client: Any = None
        self._engine: Any = None
        self._known: set[str] | None = None
        self._logged_unknown: set[str] = set()
        self._unreachable = RateLimitedLog(logger, float(opts.get("unreachable_log_interval",
                                                                  self.brain_unreachable_log_interval)))
        self._signals: dict[str, dict[pd.Timestamp, Any]] = {}   # brain symbol -> bar ts -> Signal
        self._errors: dict[str, Exception] = {}                   # brain symbol -> error of the last fetch
        self._fetched_for: pd.Timestamp | None = None             # the candle the whitelist was fetched for
        self._failed_for: pd.Timestamp | None = None              # the candle at which the Brain was unreachable
        self._sizes: dict[str, float] = {}                        # pair -> size of the signal it trades
        self._default_lag: int | None = None

    # --- mode, settings, connections ------------------------------------------------------------
    def _backtesting(self) -> bool:
        mode = self.config.get("runmode")
        dp = getattr(self, "dp", None)  # freqtrade sets it when the bot starts
        if dp is not None and getattr(dp, "runmode", None) is not None:
            mode = dp.runmode
        return not (mode in LIVE_MODES or str(mode) in {m.value for m in LIVE_MODES})

    def _settings(self) -> Any:
        from brain_tasks.settings import from_environ

        env = dict(os.environ)
        if self.brain_database_url:
            env["BRAIN_DATABASE_URL"] = str(self.brain_database_url)
        return from_environ(env)

    def brain_engine(self) -> Any:
        """The SQLAlchemy engine of the Brain's database (storage reads: replays, known symbols)."""
        if self._engine is None:
            from brain_tasks.brain.db import make_engine

            self._engine = make_engine(self._settings().database_url)
        return self._engine

    def brain_client(self) -> Any:
        """The `BrainClient` that serves decisions (created on first use)."""
        if self._client is None:
            from brain_tasks.client import BrainClient

            settings = self._settings()
            if settings.timeframe != self.timeframe:
                # The Brain decides once per bar of its own timeframe: on another grid every candle would
                # find no decision for its bar (stale) and the bot would never trade.
                raise ValueError(f"brain: the strategy's timeframe {self.timeframe!r} is not the Brain's "
                                 f"BRAIN_TIMEFRAME {settings.timeframe!r}")
            self._client = BrainClient(settings)
        return self._client

    def _whitelist(self) -> list[str]:
        dp = getattr(self, "dp", None)
        if dp is not None:
            try:
                return list(dp.current_whitelist())
            except Exception:  # noqa: BLE001 - no pairlist yet (freqtrade's own unit setups)
                pass
        return list((self.config.get("exchange") or {}).get("pair_whitelist") or [])

    def _lag_bars(self) -> int:
        """The configured lag, else the replay's (when it records one), else the Brain's training config's."""
        if self.brain_execution_lag is not None:
            return int(self.brain_execution_lag)
        if self._default_lag is None:
            from brain_tasks.service.steps.reads import train_config

            self._default_lag = int(train_config(self._settings()).execution_lag)
        return self._default_lag

    def _bar(self) -> pd.Timedelta:
        from brain_tasks.timekeeping import timeframe_seconds

        return pd.Timedelta(seconds=timeframe_seconds(self.timeframe))

    def _symbol(self, pair: str, known: Iterable[str]) -> str | None:
        symbol = brain_symbol(pair, known, self.brain_pairs)
        if symbol is None and pair not in self._logged_unknown:
            self._logged_unknown.add(pair)
            logger.warning("brain: the Brain knows no symbol for pair %s; it is not traded", pair)
        return symbol

    # --- freqtrade's hooks ------------------------------------------------------------------------
    def populate_indicators(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        pair = metadata["pair"]
        if self._backtesting():
            dataframe["brain_position"] = self.replay_targets(pair, dataframe["date"])
        else:
            target = np.full(len(dataframe), np.nan)
            if len(dataframe):
                target[-1] = self.live_target(pair, pd.Timestamp(dataframe["date"].iloc[-1]))
            dataframe["brain_position"] = target
        return dataframe

    def populate_entry_trend(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        cols = target_columns(dataframe["brain_position"].to_numpy(), self.can_short)
        dataframe["enter_long"], dataframe["enter_short"] = cols["enter_long"], cols["enter_short"]
        return dataframe

    def populate_exit_trend(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        cols = target_columns(dataframe["brain_position"].to_numpy(), self.can_short)
        dataframe["exit_long"], dataframe["exit_short"] = cols["exit_long"], cols["exit_short"]
        return dataframe

    def custom_stake_amount(self, pair: str, current_time: Any, current_rate: float, proposed_stake: float,
                            min_stake: float | None, max_stake: float, leverage: float, entry_tag: str | None,
                            side: str, **kwargs: Any) -> float:
        """The proposed stake times the size of the Brain's signal (1 in a backtest: a replay trades
        size 1), at most ``max_stake``; 0 (no trade) when the size is 0."""
        size = self._sizes.get(pair, 1.0)
        if not math.isfinite(size) or size <= 0:
            return 0.0
        return min(proposed_stake * size, max_stake)

    # --- live ---------------------------------------------------------------------------------------
    def live_target(self, pair: str, candle: pd.Timestamp) -> float:
        """Target position for freqtrade's newest closed candle: the Brain's decision for the bar
        ``execution_lag`` bars before it (see the module's rule)."""
        from brain_tasks.errors import NoDataError, StaleDataError

        candle = _utc(candle)
        if not self._fetch(candle):
            return math.nan
        symbol = self._symbol(pair, self._known or ())
        if symbol is None:
            return math.nan
        error = self._errors.get(symbol)
        if isinstance(error, NoDataError) and not isinstance(error, StaleDataError):
            if pair not in self._logged_unknown:
                self._logged_unknown.add(pair)
                logger.warning("brain: the Brain has no data for %s (%s); it is not traded", symbol, error)
            return math.nan
        wanted = candle - self._lag_bars() * self._bar()
        signal = self._signals.get(symbol, {}).get(wanted)
        if signal is None and error is None and wanted < candle:
            signal = self._historical(symbol, wanted)
        position = self.signal_target(signal)
        self._sizes[pair] = float(signal.size) if position else 0.0
        return position

    def signal_target(self, signal: Any) -> float:
        """+1 / -1 for a tradeable signal that passes the configured models and confidence, else 0
        (stale = None, flat, not tradeable)."""
        if signal is None or not signal.tradeable or not signal.position:
            return 0.0
        if self.brain_models and signal.model_type not in set(self.brain_models):
            return 0.0
        if self.brain_min_confidence and (signal.confidence is None
                                          or signal.confidence < float(self.brain_min_confidence)):
            return 0.0
        return float(np.sign(signal.position))

    def _fetch(self, candle: pd.Timestamp) -> bool:
        """The whitelist's signals for ``candle``, once per candle: a published signal for that bar
        (`latest_signal`) where the bar-close task has written one, `predict_many` for the rest.
        False when the Brain cannot be reached (logged at most once per interval)."""
        from brain_tasks.service.decision import Signal

        if self._fetched_for == candle:
            return True
        if self._failed_for == candle:
            return False
        try:
            client = self.brain_client()
            if self._known is None:
                from brain_tasks.brain import store

                s = client.settings
                self._known = set(store.list_symbols(client.engine, s.exchange, s.timeframe))
            symbols = sorted({sym for p in self._whitelist()
                              if (sym := brain_symbol(p, self._known, self.brain_pairs)) is not None})
            fresh: dict[str, Any] = {}
            for symbol in symbols:
                published = client.latest_signal(symbol)
                if published is not None and _utc(published.ts) == candle:
                    fresh[symbol] = published
            missing = [s for s in symbols if s not in fresh]
            answers = client.predict_many(missing) if missing else {}
        except Exception as exc:  # noqa: BLE001 - any failure to reach the Brain: keep freqtrade running
            if not _unreachable(exc):
                raise
            self._failed_for = candle
            self._unreachable.warning("brain: cannot reach the Brain (%s); opening nothing new, keeping open "
                                      "trades", _one_line(exc))
            return False
        self._errors = {}
        for symbol, answer in {**answers, **fresh}.items():
            if isinstance(answer, Signal):
                self._signals.setdefault(symbol, {})[_utc(answer.ts)] = answer
            else:
                self._errors[symbol] = answer
        for bars in self._signals.values():  # keep a day of bars: enough for any execution lag
            for ts in [t for t in bars if t < candle - pd.Timedelta(days=1)]:
                del bars[ts]
        self._fetched_for, self._failed_for = candle, None
        return True

    def _historical(self, symbol: str, wanted: pd.Timestamp) -> Any:
        """The Brain's decision for an earlier bar (after a restart the lagged bar was never fetched):
        `predict(symbol, at=bar)`; None when it cannot be had for exactly that bar."""
        try:
            signal = self.brain_client().predict(symbol, at=wanted.to_pydatetime())
        except Exception as exc:  # noqa: BLE001
            if _unreachable(exc):
                self._unreachable.warning("brain: cannot reach the Brain (%s)", _one_line(exc))
            return None
        if _utc(signal.ts) != wanted:
            return None
        self._signals.setdefault(symbol, {})[wanted] = signal
        return signal

    # --- backtesting --------------------------------------------------------------------------------
    def replay_targets(self, pair: str, dates: pd.Series) -> np.ndarray:
        """Target position per row from the replay's `brain` positions, shifted by the execution lag;
        0 outside the replay's bars, NaN for a pair no replay holds."""
        from brain_tasks.brain import replays

        dates = pd.DatetimeIndex(pd.to_datetime(dates, utc=True))
        engine = self.brain_engine()
        replay_id = self.brain_replay_id
        if replay_id:
            replay = replays.get_replay(engine, str(replay_id))
            if replay is None:
                raise ValueError(f"brain: no replay {replay_id!r} in the Brain's database")
        else:
            start, end = self._timerange(dates)
            replay_id = replay_for(replays.list_replays(engine, limit=1000), pair, start, end, self.brain_pairs)
            if replay_id is None:
                if pair not in self._logged_unknown:
                    self._logged_unknown.add(pair)
                    logger.warning("brain: no replay holds %s over %s .. %s; it is not traded", pair, start, end)
                return np.full(len(dates), np.nan)
            replay = replays.get_replay(engine, replay_id)
        symbol = self._symbol(pair, replay["symbols"])
        if symbol is None:
            return np.full(len(dates), np.nan)
        params = replay.get("params") or {}
        lag = params.get("execution_lag", (params.get("config") or {}).get("execution_lag"))
        self._default_lag = int(lag) if lag is not None else None
        held = replays.positions(engine, replay_id, symbol, [REPLAY_POLICY]).get(REPLAY_POLICY)
        if held is None:
            raise ValueError(f"brain: replay {replay_id} has no {REPLAY_POLICY!r} positions for {symbol}")
        decided_at = dates - self._lag_bars() * self._bar()
        logger.info("brain: %s trades replay %s's %s positions of %s (execution lag %d bars)", pair, replay_id,
                    REPLAY_POLICY, symbol, self._lag_bars())
        return held.reindex(decided_at).fillna(0.0).to_numpy()

    def _timerange(self, dates: pd.DatetimeIndex) -> tuple[pd.Timestamp, pd.Timestamp]:
        text = self.config.get("timerange")
        if text:
            from freqtrade.configuration import TimeRange

            tr = TimeRange.parse_timerange(str(text))
            if tr.startts and tr.stopts:
                return pd.Timestamp(tr.startts, unit="s", tz="UTC"), pd.Timestamp(tr.stopts - 1, unit="s", tz="UTC")
        return dates[0], dates[-1]


def _utc(ts: Any) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _unreachable(exc: Exception) -> bool:
    """True for a failure to reach the Brain (its database or broker), not for a bug."""
    import sqlalchemy.exc

    from brain_tasks.errors import ServiceError

    return isinstance(exc, (ServiceError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                            sqlalchemy.exc.DBAPIError, OSError, TimeoutError))


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
