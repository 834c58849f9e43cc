"""Serving reads what training read: stored implausible bars skipped as training skipped them, the
symbol's sentiment for a version trained with it, and a quiet window (one close) with a sizer decides."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from brain_tasks.service import serving
from brain_tasks.service.steps import train
from brain_tasks.service.steps.reads import dataset_for
from brain_tasks.brain import registry, store
from brain_tasks.brain.db import make_engine
from brain_tasks.ml import inference as ml
from brain_tasks.ml.sizing import SIGN, VOL_TARGET, Sizer, SizerConfig
from brain_tasks.settings import from_environ
from tests.test_serving import AS_OF, CUT, SYMBOL, _candles, operator_choice

SPIKES = (pd.Timestamp("2018-01-14 20:00", tz="UTC"), pd.Timestamp("2018-01-14 21:30", tz="UTC"))


def _train(url: str, candles: pd.DataFrame, sentiment: pd.DataFrame | None = None):
    from brain_tasks.brain.migrate import upgrade

    upgrade(url)
    engine = make_engine(url)
    settings = from_environ({"BRAIN_DATABASE_URL": url, "BRAIN_SIGNAL_MAX_AGE": str(10**10)})
    store.upsert(engine, "candles", candles[candles.ts < CUT])
    if sentiment is not None:
        store.upsert(engine, "sentiment_scores", sentiment)
    out = train.train_symbol(engine, settings, SYMBOL, "baseline", AS_OF)
    registry.pin_champion(engine, SYMBOL, "baseline", out.version, "test")
    operator_choice(engine, out.version)
    return engine, settings, registry.manifest(engine, SYMBOL, "baseline", out.version)


def _served_rows(monkeypatch) -> list[pd.DataFrame]:
    """The model rows each decision predicts from."""
    seen: list[pd.DataFrame] = []
    real = ml.predict_last

    def spy(model, rows):
        seen.append(rows)
        return real(model, rows)

    monkeypatch.setattr(ml, "predict_last", spy)
    return seen


def _assert_served_as_trained(engine, settings, manifest, bars, seen) -> None:
    X, _y = dataset_for(engine, settings, manifest)  # training's own rows (`usable_candles` applied)
    model = serving.load_model(engine, manifest.artifact_sha256)
    final = pd.Series(model.predict(X[manifest.feature_names]), index=X.index)
    for ts in bars:
        serving.server(engine).decisions.clear()
        seen.clear()
        signal = serving.predict(engine, settings, SYMBOL, at=ts, stamp=CUT.to_pydatetime(), record=False)
        assert signal.ts == ts and len(seen) == 1
        row, trained = seen[0].iloc[-1].to_numpy(), X.loc[ts, manifest.feature_names].to_numpy()
        assert np.array_equal(row.view(np.int64), trained.view(np.int64)), ts  # bit for bit
        assert signal.prediction == final.loc[ts]


@pytest.mark.parametrize("window", ["whole", "bounded"])
def test_a_stored_implausible_bar_is_skipped_as_training_skipped_it(sqlite_url, monkeypatch, window):
    """Two bars 1000x off stored inside the training data (as if written before collection checked):
    training skips them (`usable_candles`), and so does serving, from a window reaching back to the
    training data's start or from a bounded one (its first candles judged on bars of its own): the
    served rows of the bars around and after them are training's, bit for bit."""
    candles = _candles()
    for spike in SPIKES:
        candles.loc[candles.ts == spike, ["open", "high", "low", "close"]] *= 1000.0
    engine, settings, manifest = _train(sqlite_url, candles)
    X, _y = dataset_for(engine, settings, manifest)
    assert not set(SPIKES) & set(X.index)  # training skipped them
    if window == "bounded":  # a window far shorter than the data: the usable-bar check starts inside it
        rows = ml.features.required_history("5m") + 1
        monkeypatch.setattr(ml, "required_history", lambda *_a, **_k: rows)
    seen = _served_rows(monkeypatch)
    after = X.index[X.index > SPIKES[0]]
    bars = list(after[:40:3]) + list(after[300:330:2]) + [X.index[X.index < SPIKES[0]][-1]]
    _assert_served_as_trained(engine, settings, manifest, bars, seen)


def test_usable_window_keeps_and_drops_what_the_whole_history_does():
    """Any later window, once its first JUMP_MARGIN sane bars are left out, keeps exactly the bars
    the whole history keeps (spikes and NaN rows at every position of the window)."""
    candles = _candles().iloc[:1200].reset_index(drop=True)
    for i in (30, 31, 200, 450, 700):
        candles.loc[i, ["open", "high", "low", "close"]] *= 1000.0
    candles.loc[[100, 470], "close"] = np.nan
    whole = ml.usable_window(candles, from_start=True)
    for first in range(0, 800, 7):
        part = ml.usable_window(candles.iloc[first:].reset_index(drop=True), from_start=False)
        expected = whole[whole.ts >= part.ts.iloc[0]].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, expected)
        assert len(part) >= len(candles) - first - ml.JUMP_MARGIN - 8


def _sentiment_rows() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    hours = pd.date_range("2018-01-09", "2018-01-17", freq="h", tz="UTC")
    hours = hours[rng.random(len(hours)) > 0.2]  # hours without rows too
    rows = [pd.DataFrame({"ts": hours, "source": src, "symbol": SYMBOL, "score": rng.uniform(-1, 1, len(hours)),
                          "magnitude": rng.uniform(0, 1, len(hours)), "n_items": rng.integers(1, 9, len(hours))})
            for src in ("desk", "reddit")]
    return pd.concat(rows, ignore_index=True)


def test_a_version_trained_with_sentiment_is_served_with_it(sqlite_url, monkeypatch):
    """The symbol has sentiment rows: the version's features include sentiment's, and serving reads
    the symbol's sentiment for the bar's window; each served row is training's bit for bit."""
    engine, settings, manifest = _train(sqlite_url, _candles(), _sentiment_rows())
    assert ml.uses_sentiment(manifest.feature_names)
    X, _y = dataset_for(engine, settings, manifest)
    assert X["sent_level_24h"].notna().mean() > 0.5
    seen = _served_rows(monkeypatch)
    oos = registry.oos_frame(engine, manifest.oos_sha256)
    bars = list(pd.DatetimeIndex(pd.to_datetime(oos["ts"], utc=True))[::61])
    _assert_served_as_trained(engine, settings, manifest, bars, seen)


class _Model:
    def predict(self, X):
        return np.full(len(X), 0.002)


def test_a_quiet_window_with_a_sizer_gives_a_decision(monkeypatch):
    """One close price over the whole serving window: the sizer sees zero returns (no error) and sizes
    by its rule; vol-target sizing of a zero-volatility market is full size."""
    from brain_tasks.ml.pipeline import TrainConfig

    n = 2200
    ts = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    candles = pd.DataFrame({"ts": ts, "open": 5.0, "high": 5.0, "low": 5.0, "close": 5.0, "volume": 1.0})
    config = TrainConfig(timeframe="5m")
    sizer = Sizer({"active": VOL_TARGET, "reason": "test", "config": SizerConfig().to_dict(),
                   "scales": {"pred_scale": 1.0, "vol_ref": 0.01, "ret_scale": 0.01, "dd_scale": 0.1}})
    features = ml.feature_frame({"candles": candles}, config)
    names = list(ml.features.CANDLE_FEATURES)
    target = serving._sized(sizer, _Model(), features, names, candles, config, "low")
    assert target == 1.0
    sizer.description["active"] = SIGN
    assert serving._sized(sizer, _Model(), features, names, candles, config, None) == 1.0


def test_predict_many_with_shared_round_trips_decides_as_predict(brain_db_url):
    """predict_many reads every symbol's state, row counts and fresh candles in shared queries: bar
    after bar (a new one stored each time, a recent one rewritten once), each symbol's signal is the
    one a fresh process's predict gives."""
    candles = _candles()
    engine, settings, _manifest = _train(brain_db_url, candles)
    later = candles[candles.ts >= CUT].iloc[:6]
    symbols = [SYMBOL, "NONE/BTC"]
    for i, (_, bar) in enumerate(later.iterrows()):
        store.upsert(engine, "candles", later.iloc[[i]])
        if i == 3:  # a recent bar rewritten
            store.upsert(engine, "candles", later.iloc[[i - 1]].assign(close=later.iloc[i - 1].close * 1.02))
        stamp = bar.ts.to_pydatetime() + dt.timedelta(minutes=5)
        many = serving.predict_many(engine, settings, symbols, stamp=stamp)
        serving.server(engine).markets.clear()
        serving.server(engine).decisions.clear()
        alone = serving.predict(engine, settings, SYMBOL, stamp=stamp, record=False)
        assert many[SYMBOL] == alone and alone.ts == bar.ts
        assert isinstance(many["NONE/BTC"], serving.NoDataError)
        counted = []
        real = serving.signal_rows.stored_counts
        serving.signal_rows.stored_counts = lambda *a, **k: counted.append(1) or real(*a, **k)
        try:
            assert serving.predict_many(engine, settings, symbols, stamp=stamp)[SYMBOL] == alone  # from the cache
        finally:
            serving.signal_rows.stored_counts = real
        assert not counted  # counted in the call's shared round trip
