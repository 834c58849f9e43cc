"""Dry-run cases of BrainStrategy: freqtrade's dataframe for a new candle in, the columns it sets out.

These run inside freqtrade's own venv (tests/integrations/ftenv.py): `test_freqtrade_strategy.py` runs
this file there with pytest, since freqtrade is not installed with the core.  The Brain is real: the
bundled ETH/BTC sample, a baseline version trained and made champion on SQLite, as tests/test_serving.py
does.  freqtrade sees the pair as a perpetual, `ETH/BTC:BTC`, which maps to the Brain's `ETH/BTC`.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd
import pytest
from freqtrade.enums import RunMode

from brain_tasks.brain import registry, store
from brain_tasks.brain.migrate import upgrade
from brain_tasks.client import BrainClient
from brain_tasks.integrations.freqtrade import BrainStrategy, brain_symbol, replay_for, target_columns
from brain_tasks.ml.regimes import REGIMES
from brain_tasks.service.steps import train
from brain_tasks.settings import from_environ
from tests.workers import REPO

SYMBOL, PAIR, SPOT_PAIR = "ETH/BTC", "ETH/BTC:BTC", "ETH/BTC"
AS_OF = dt.date(2018, 1, 15)
CUT = pd.Timestamp("2018-01-16", tz="UTC")
BAR = pd.Timedelta(minutes=5)
COLUMNS = ["enter_long", "exit_long", "enter_short", "exit_short"]
FRESH = {"BRAIN_SIGNAL_MAX_AGE": str(10**10)}  # the sample is from 2018: "now" would make every bar stale


def _candles() -> pd.DataFrame:
    return pd.read_feather(REPO / "sample" / "freqtrade-testdata" / "ETH_BTC-5m.feather")


@pytest.fixture
def brain(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'brain.db'}"
    upgrade(url)
    for key, value in {"BRAIN_DATABASE_URL": url, **FRESH}.items():
        monkeypatch.setenv(key, value)
    settings = from_environ({"BRAIN_DATABASE_URL": url, **FRESH})
    client = BrainClient(settings, app=object())
    frame = _candles()
    stored = frame[frame.date < CUT].rename(columns={"date": "ts"}).assign(exchange="freqtrade", symbol=SYMBOL,
                                                                            timeframe="5m")
    store.upsert(client.engine, "candles", stored)
    out = train.train_symbol(client.engine, settings, SYMBOL, "baseline", AS_OF)
    registry.pin_champion(client.engine, SYMBOL, "baseline", out.version, "test")
    # Chosen in every regime by an operator: the sample's champion loses to flat, and serving does not
    # fall back to such a champion (tests/test_serving.py `operator_choice`).
    registry.write_regime_choice(client.engine, SYMBOL, AS_OF, {
        r: {"model_type": "baseline", "version": out.version, "confidence": None, "tradeable": True,
            "reason": "an operator's choice"} for r in REGIMES})
    return client, frame[frame.date < CUT].reset_index(drop=True)


def _strategy(pairs: list[str], mode: str = "futures", **brain) -> BrainStrategy:
    config = {"runmode": RunMode.DRY_RUN, "trading_mode": mode, "margin_mode": "isolated" if mode == "futures" else "",
              "stake_currency": "BTC", "exchange": {"name": "binance", "pair_whitelist": pairs}, "brain": brain}
    return BrainStrategy(config)


def _analyze(strategy: BrainStrategy, frame: pd.DataFrame, pair: str) -> pd.Series:
    """freqtrade's own pipeline for one pair's dataframe (indicators, entries, exits); the last row."""
    out = strategy.analyze_ticker(frame.copy(), {"pair": pair})
    return out.iloc[-1][COLUMNS].astype(int)


def _expected(position: int) -> dict[str, int]:
    return {"enter_long": int(position > 0), "exit_long": int(position <= 0), "enter_short": int(position < 0),
            "exit_short": int(position >= 0)}


def test_a_new_candle_gets_the_columns_of_predict(brain):
    client, frame = brain
    strategy = _strategy([PAIR], execution_lag=0)
    signal = client.predict(SYMBOL)
    assert signal.ts == frame.date.iloc[-1] and signal.tradeable and signal.position != 0
    assert _analyze(strategy, frame, PAIR).to_dict() == _expected(signal.position)
    stake = strategy.custom_stake_amount(PAIR, None, 1.0, 0.5, 0.001, 10.0, 1.0, None, "long")
    assert stake == pytest.approx(0.5 * signal.size)


def test_with_an_execution_lag_the_candle_trades_the_decision_of_the_bar_before(brain):
    client, frame = brain
    strategy = _strategy([PAIR], execution_lag=1)
    # After a (re)start the lagged bar was never fetched: the strategy asks for that bar.
    row = _analyze(strategy, frame, PAIR)
    before = client.predict(SYMBOL, at=frame.date.iloc[-2])
    assert before.ts == frame.date.iloc[-2]
    assert row.to_dict() == _expected(before.position)
    # Next candle: the Brain has not stored it yet, so its newest bar is the lagged one, already fetched.
    nxt = pd.concat([frame, frame.tail(1).assign(date=frame.date.iloc[-1] + BAR)], ignore_index=True)
    assert _analyze(strategy, nxt, PAIR).to_dict() == _expected(client.predict(SYMBOL).position)


def test_spot_pairs_never_short(brain):
    client, frame = brain
    strategy = _strategy([SPOT_PAIR], mode="spot", execution_lag=0)
    signal = client.predict(SYMBOL)
    row = _analyze(strategy, frame, SPOT_PAIR).to_dict()
    assert row == {"enter_long": int(signal.position > 0), "exit_long": int(signal.position <= 0),
                   "enter_short": 0, "exit_short": 0}


def test_a_stale_signal_opens_nothing_and_closes_what_is_open(brain, monkeypatch):
    client, frame = brain
    # The Brain itself says its data is stale (its default limit: one bar, and the sample is old).
    with monkeypatch.context() as m:
        m.delenv("BRAIN_SIGNAL_MAX_AGE")
        strategy = _strategy([PAIR], execution_lag=0)
        assert _analyze(strategy, frame, PAIR).to_dict() == _expected(0)
        assert type(strategy._errors[SYMBOL]).__name__ == "StaleDataError"
    # freqtrade is two candles ahead of the Brain's newest bar: the decision for its bar is missing.
    ahead = pd.concat([frame, frame.tail(2).assign(date=[frame.date.iloc[-1] + BAR, frame.date.iloc[-1] + 2 * BAR])],
                      ignore_index=True)
    strategy = _strategy([PAIR], execution_lag=0)
    assert client.predict(SYMBOL).position != 0
    assert _analyze(strategy, ahead, PAIR).to_dict() == _expected(0)


def test_a_flat_or_untradeable_choice_opens_nothing_and_closes_what_is_open(brain):
    client, frame = brain
    flat = {r: {"model_type": "flat", "version": None, "confidence": 0.4, "tradeable": False,
                "reason": "nothing beat doing nothing"} for r in REGIMES}
    registry.write_regime_choice(client.engine, SYMBOL, AS_OF, flat)
    signal = client.predict(SYMBOL)
    assert (signal.model_type, signal.position, signal.tradeable) == ("flat", 0, False)
    strategy = _strategy([PAIR], execution_lag=0)
    assert _analyze(strategy, frame, PAIR).to_dict() == _expected(0)
    assert strategy.custom_stake_amount(PAIR, None, 1.0, 0.5, 0.001, 10.0, 1.0, None, "long") == 0.0


def test_models_and_minimum_confidence_from_the_config_gate_the_signal(brain):
    client, frame = brain
    signal = client.predict(SYMBOL)
    assert _analyze(_strategy([PAIR], execution_lag=0, models=["lightgbm"]), frame, PAIR).to_dict() == _expected(0)
    assert _analyze(_strategy([PAIR], execution_lag=0, models=["baseline"]), frame, PAIR).to_dict() \
        == _expected(signal.position)
    high = {r: {"model_type": "baseline", "version": signal.version, "confidence": 0.6, "tradeable": True,
                "reason": "chosen"} for r in REGIMES}
    registry.write_regime_choice(client.engine, SYMBOL, AS_OF, high)
    assert _analyze(_strategy([PAIR], execution_lag=0, min_confidence=0.7), frame, PAIR).to_dict() == _expected(0)


def test_an_unknown_pair_is_logged_once_and_not_traded(brain, caplog):
    client, frame = brain
    strategy = _strategy([PAIR, "XRP/USDT:USDT"], execution_lag=0)
    with caplog.at_level(logging.WARNING, logger="brain_tasks.integrations.freqtrade"):
        for extra in range(3):
            candle = frame.assign(date=frame.date + extra * BAR) if extra else frame
            row = _analyze(strategy, candle, "XRP/USDT:USDT")
            assert row.to_dict() == dict.fromkeys(COLUMNS, 0)  # nothing opened, nothing closed
    lines = [r for r in caplog.records if "XRP/USDT:USDT" in r.getMessage()]
    assert len(lines) == 1 and "not traded" in lines[0].getMessage()
    # The known pair of the same whitelist still trades.
    assert _analyze(strategy, frame, PAIR).to_dict() == _expected(client.predict(SYMBOL).position)


def test_an_unreachable_brain_opens_nothing_keeps_running_and_logs_once_a_minute(caplog):
    # Nothing listens on port 9 of this host: every connection is refused at once.
    strategy = _strategy([PAIR], execution_lag=0, database_url="postgresql+psycopg://brain@127.0.0.1:9/brain")
    clock = [1000.0]
    strategy._unreachable.clock = lambda: clock[0]
    frame = _candles().head(400)
    with caplog.at_level(logging.WARNING, logger="brain_tasks.integrations.freqtrade"):
        for k in range(12):  # twelve candles, 15 s apart (a fast timeframe): three minutes
            candle = frame.assign(date=frame.date + k * BAR)
            assert _analyze(strategy, candle, PAIR).to_dict() == dict.fromkeys(COLUMNS, 0)
            clock[0] += 15.0
    lines = [r for r in caplog.records if "cannot reach the Brain" in r.getMessage()]
    assert len(lines) == 3, [r.getMessage() for r in lines]  # at 0 s, 60 s and 120 s


def test_pair_names_map_to_the_brains_symbols():
    known = {"ETH/BTC", "BTC/USDT:USDT", "SOL/USDT"}
    assert brain_symbol("ETH/BTC", known) == "ETH/BTC"
    assert brain_symbol("BTC/USDT:USDT", known) == "BTC/USDT:USDT"
    assert brain_symbol("SOL/USDT:USDT", known) == "SOL/USDT"      # a perp on its spot pair's decisions
    assert brain_symbol("BTC/USDT", known) == "BTC/USDT:USDT"       # a spot pair on its perp's
    assert brain_symbol("XRP/USDT", known) is None
    assert brain_symbol("1000PEPE/USDT:USDT", known, {"1000PEPE/USDT:USDT": "SOL/USDT"}) == "SOL/USDT"


def test_target_columns_rule():
    t = np.array([1.0, -1.0, 0.0, np.nan])
    futures = target_columns(t, can_short=True)
    assert {k: v.tolist() for k, v in futures.items()} == {
        "enter_long": [1, 0, 0, 0], "exit_long": [0, 1, 1, 0], "enter_short": [0, 1, 0, 0], "exit_short": [1, 0, 1, 0]}
    spot = target_columns(t, can_short=False)
    assert {k: v.tolist() for k, v in spot.items()} == {
        "enter_long": [1, 0, 0, 0], "exit_long": [0, 1, 1, 0], "enter_short": [0, 0, 0, 0], "exit_short": [0, 0, 0, 0]}


def test_a_backtest_trades_the_newest_replay_that_covers_its_timerange():
    newest_first = [
        {"replay_id": "short", "symbols": ["ETH/BTC"], "start": "2024-01-12", "end": "2024-01-13"},
        {"replay_id": "month", "symbols": ["ETH/BTC"], "start": "2024-01-01", "end": "2024-01-31"},
        {"replay_id": "older", "symbols": ["ETH/BTC", "BTC/USDT"], "start": "2024-01-01", "end": "2024-02-28"}]
    start, end = pd.Timestamp("2024-01-05", tz="UTC"), pd.Timestamp("2024-01-20 23:55", tz="UTC")
    assert replay_for(newest_first, "ETH/BTC", start, end) == "month"
    assert replay_for(newest_first, "ETH/BTC", start, pd.Timestamp("2024-02-10", tz="UTC")) == "older"
    assert replay_for(newest_first, "BTC/USDT:USDT", start, end) == "older"  # the perp on its spot pair's replay
    assert replay_for(newest_first, "XRP/USDT", start, end) is None


def test_a_strategy_on_another_timeframe_than_the_brains_is_refused(brain):
    strategy = _strategy([PAIR], execution_lag=0)
    strategy.timeframe = "1h"
    with pytest.raises(ValueError, match="timeframe"):
        strategy.live_target(PAIR, pd.Timestamp("2018-01-15 23:00", tz="UTC"))
