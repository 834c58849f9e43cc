"""Extreme values and input holes, through collection, ingest, training and the tasks, on SQLite and
PostgreSQL: each is refused or recorded as a finding, and none poisons later work."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pandas as pd
import pytest

from brain_tasks.service.chain import ChainState
from brain_tasks.service.steps import compare, explain, train
from brain_tasks.brain import store
from brain_tasks.brain.db import make_engine
from brain_tasks.service.steps.collect import BadBatch, collect, ingest_freqtrade
from brain_tasks.market.symbols import InvalidArgument, InvalidSymbol
from brain_tasks.settings import from_environ, get_settings
from tests.workers import REPO

SAMPLE = REPO / "sample" / "freqtrade-testdata"
DAY = dt.date(2018, 1, 30)
PRICES = ["open", "high", "low", "close"]


class Batch:
    """A source that serves one candle frame."""

    name, live = "scripted", False

    def __init__(self, candles: pd.DataFrame) -> None:
        self.candles = candles

    def fetch_candles(self, symbol: str, timeframe: str, since: object = None, until: object = None) -> pd.DataFrame:
        return self.candles.copy()


def _sample(symbol: str = "ETH/BTC") -> pd.DataFrame:
    return pd.read_feather(SAMPLE / f"{symbol.replace('/', '_')}-5m.feather").rename(columns={"date": "ts"})


def test_a_1e308_bar_is_a_finding_and_the_good_bars_are_stored(brain_db_url):
    engine = make_engine(brain_db_url)
    batch = _sample().head(200)
    batch.loc[50, PRICES] = 1e308
    with pytest.raises(BadBatch, match="overflow: 1"):
        collect(engine, Batch(batch), "candles", "ETH/BTC", timeframe="5m", now="2018-02-01")
    stored = store.read_candles(engine, "scripted", "ETH/BTC", "5m")
    assert len(stored) == 199 and stored["close"].max() < 1
    findings = store.read_table(engine, "data_quality_logs", where={"symbol": "ETH/BTC"})
    assert "overflow" in set(findings["check"])


def test_a_later_batch_is_judged_by_the_stored_bars_before_it(brain_db_url):
    engine = make_engine(brain_db_url)
    sample = _sample().head(300)
    collect(engine, Batch(sample.head(200)), "candles", "ETH/BTC", timeframe="5m", now="2018-02-01")
    spike = sample.iloc[200:201].copy()
    spike[PRICES] = spike[PRICES] * 1000  # one new bar, 1000x the bars stored before it
    with pytest.raises(BadBatch, match="implausible_jump: 1"):
        collect(engine, Batch(spike), "candles", "ETH/BTC", timeframe="5m", now="2018-02-01")
    assert len(store.read_candles(engine, "scripted", "ETH/BTC", "5m")) == 200


def test_a_stored_1e308_bar_does_not_poison_later_trainings(brain_db_url):
    engine = make_engine(brain_db_url)
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url})
    candles = _sample().assign(exchange="freqtrade", symbol="ETH/BTC", timeframe="5m")
    candles.loc[3000, PRICES] = 1e308  # written around validation, as an old row or a manual fix would be
    store.upsert(engine, "candles", candles)
    out = train.train_symbol(engine, settings, "ETH/BTC", "baseline", DAY)
    assert out.status == "succeeded" and out.trained
    prev = compare.compare_models(engine, settings, ChainState.start("ETH/BTC", DAY).with_model(out))
    assert explain.compute_importance(engine, settings, prev).status == "succeeded"


def test_a_symbol_with_a_nul_byte_is_refused_before_any_write_and_the_finding_is_recorded(brain_db_url):
    engine = make_engine(brain_db_url)
    with pytest.raises(InvalidSymbol, match=r"control character \\x00"):
        collect(engine, Batch(_sample().head(50)), "candles", "ETH\x00/BTC", timeframe="5m", now="2018-02-01")
    assert store.read_table(engine, "candles").empty
    rows = store.read_table(engine, "data_quality_logs")
    assert list(rows["symbol"]) == ["ETH\\x00/BTC"] and list(rows["check"]) == ["invalid_symbol"]


def test_a_task_given_a_nul_byte_records_its_failure(brain_db_url, monkeypatch):
    monkeypatch.setenv("BRAIN_DATABASE_URL", brain_db_url)
    get_settings.cache_clear()
    try:
        from brain_tasks.tasks import collect_candles, train_symbol

        assert collect_candles.apply(args=["BAD\x00/BTC"]).get()["status"] == "failed"
        out = train_symbol.apply(args=["NUL\x00/BTC", "baseline", "2018-01-30"]).get()
        assert out["models"]["baseline"]["status"] == "failed"
    finally:
        get_settings.cache_clear()
    rows = store.read_table(make_engine(brain_db_url), "data_quality_logs")
    assert set(rows["symbol"]) == {"BAD\\x00/BTC", "NUL\\x00/BTC"}


def test_fan_outs_refuse_a_string_where_a_list_of_symbols_belongs(brain_db_url, monkeypatch):
    monkeypatch.setenv("BRAIN_DATABASE_URL", brain_db_url)
    get_settings.cache_clear()
    try:
        from brain_tasks.tasks import daily_retrain, nightly_analysis

        for task, kwargs in ((daily_retrain, {"symbols": "ETH/BTC"}), (nightly_analysis, {"symbols": "ETH/BTC"}),
                             (daily_retrain, {"symbols": ["ETH/BTC"], "models": "lightgbm"})):
            result = task.apply(kwargs=kwargs)
            assert result.failed()
            assert isinstance(result.result, InvalidArgument), result.result
            assert "must be a list of" in str(result.result)
    finally:
        get_settings.cache_clear()
    assert store.read_table(make_engine(brain_db_url), "training_runs").empty  # refused before any write


def test_an_empty_file_is_a_finding_even_after_earlier_data(brain_db_url, tmp_path):
    engine = make_engine(brain_db_url)
    shutil.copy(SAMPLE / "ETH_BTC-5m.feather", tmp_path / "ETH_BTC-5m.feather")
    first = ingest_freqtrade(engine, tmp_path, now="2018-02-01")
    assert first["candles"]["ETH/BTC"]["stored"] > 0 and not first["failed"]
    _sample().iloc[:0].to_feather(tmp_path / "ETH_BTC-5m.feather")  # truncated by a failed download
    (tmp_path / "LTC_BTC-5m.json").write_text("[]")
    again = ingest_freqtrade(engine, tmp_path, now="2018-02-01")
    assert set(again["failed"]) == {"candles:ETH/BTC", "candles:LTC/BTC"}
    assert all("holds no rows" in e for e in again["failed"].values())
    rows = store.read_table(engine, "data_quality_logs", where={"check": "empty_file"})
    assert set(rows["symbol"]) == {"ETH/BTC", "LTC/BTC"}
    assert np.all(rows["severity"] == "error")
