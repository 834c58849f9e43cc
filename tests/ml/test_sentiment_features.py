"""Sentiment features: causal (a bar sees only items published before its close), absent without
sentiment, and visible in the feature names and their hash."""

from __future__ import annotations

import numpy as np
import pandas as pd

from brain_tasks.market.news import Tagger
from brain_tasks.market.sentiment import aggregate_hourly
from brain_tasks.ml.features import SENTIMENT_FEATURES, feature_set_hash, make_features
from brain_tasks.ml.pipeline import TrainConfig, build_dataset

SYM = "BTC/USDT"


def _candles(n: int = 900, start: str = "2024-01-01", tf: str = "5min", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    return pd.DataFrame({"ts": pd.date_range(start, periods=n, freq=tf, tz="UTC"), "open": close,
                         "high": close * 1.001, "low": close * 0.999, "close": close,
                         "volume": rng.uniform(1, 10, n)})


def _items(n: int, start: str, hours: float, seed: int) -> pd.DataFrame:
    """Items at random times, scored at random (no scorer needed: the features read scores)."""
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.sort(rng.uniform(0, hours * 3600, n)), unit="s")
    return pd.DataFrame({"ts": ts, "source": rng.choice(["desk", "reddit/r/Bitcoin"], n),
                         "item_id": [f"{seed}-{i}" for i in range(n)], "title": ["Bitcoin"] * n, "text": [""] * n,
                         "symbols": [()] * n, "assets": [("BTC",)] * n, "score": rng.uniform(-1, 1, n)})


def _features(candles: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    rows = aggregate_hourly(items, [SYM])
    return make_features(candles, timeframe="5m", sentiment=rows.drop(columns=["symbol"]))


def test_appending_later_items_never_changes_an_earlier_bars_features():
    candles = _candles()  # 75 hours of 5m bars
    early = _items(300, "2023-12-31 12:00", 40, seed=1)
    cut = pd.Timestamp("2024-01-02 04:37", tz="UTC")
    early = early[early["ts"] < cut]
    later = _items(400, str(cut), 60, seed=2)  # every later item is published at or after `cut`
    before = _features(candles, early)
    after = _features(candles, pd.concat([early, later], ignore_index=True))
    close = candles["ts"] + pd.Timedelta(minutes=5)
    earlier_bars = (close <= cut).to_numpy()
    assert earlier_bars.sum() > 300 and (~earlier_bars).sum() > 300
    cols = list(SENTIMENT_FEATURES)
    pd.testing.assert_frame_equal(before.loc[earlier_bars, cols], after.loc[earlier_bars, cols])
    assert before.loc[earlier_bars, "sent_level_24h"].iloc[12:].notna().all()  # from the first hour's end
    # ...and the later items do reach the later bars.
    assert not before.loc[~earlier_bars, cols].equals(after.loc[~earlier_bars, cols])


def test_an_hour_is_seen_from_its_end_and_not_a_bar_before():
    candles = _candles(48, "2024-01-01 09:00")
    items = _items(1, "2024-01-01 10:59:59", 0, seed=3).assign(score=[0.8])
    feats = _features(candles, items)
    level = feats["sent_level_6h"]
    # The 10:00 hour is known at 11:00: the bar stamped 10:55 closes at 11:00 and is the first to see it.
    assert level.loc[:"2024-01-01 10:50"].isna().all()
    assert level.loc["2024-01-01 10:55":"2024-01-01 12:55"].eq(0.8).all()


def test_without_sentiment_the_columns_are_absent_and_the_hash_says_so():
    candles = _candles()
    plain = make_features(candles, timeframe="5m")
    empty = make_features(candles, timeframe="5m", sentiment=pd.DataFrame(columns=["ts", "score"]))
    with_sent = _features(candles, _items(200, "2023-12-31", 80, seed=4))
    assert not set(SENTIMENT_FEATURES) & set(plain.columns)
    assert list(empty.columns) == list(plain.columns)
    assert list(with_sent.columns) == [*plain.columns, *SENTIMENT_FEATURES]
    assert feature_set_hash(list(plain.columns)) != feature_set_hash(list(with_sent.columns))
    pd.testing.assert_frame_equal(with_sent[plain.columns], plain)  # the other features are untouched


def test_sources_pool_by_item_count_and_quiet_hours_count_as_quiet():
    candles = _candles(12 * 30, "2024-01-01 00:00")
    rows = pd.DataFrame({"ts": pd.to_datetime(["2024-01-01 01:00", "2024-01-01 01:00"], utc=True),
                         "source": ["a", "b"], "score": [0.9, -0.1], "magnitude": [0.9, 0.3], "n_items": [1, 4]})
    feats = make_features(candles, timeframe="5m", sentiment=rows)
    at = feats.loc["2024-01-01 02:00"]
    assert np.isclose(at["sent_level_6h"], (0.9 - 0.4) / 5) and np.isclose(at["sent_magnitude_24h"], 2.1 / 5)
    assert feats.loc["2024-01-01 08:00", "sent_level_6h"] != feats.loc["2024-01-01 08:00", "sent_level_6h"]  # NaN
    assert np.isclose(feats.loc["2024-01-01 08:00", "sent_level_24h"], 0.1)


def test_the_same_candles_rebuild_the_same_features_however_far_back_sentiment_was_read():
    # A manifest's dataset is rebuilt from its first candle on (steps.reads.dataset_for): same digest required.
    candles = _candles(600)
    rows = aggregate_hourly(_items(400, "2023-12-25", 24 * 9, seed=6), [SYM]).drop(columns=["symbol"])
    everything = make_features(candles, timeframe="5m", sentiment=rows)
    from_start = make_features(candles, timeframe="5m", sentiment=rows[rows["ts"] >= candles["ts"].iloc[0]])
    pd.testing.assert_frame_equal(everything, from_start)
    assert everything["sent_level_24h"].notna().sum() > 400


def test_build_dataset_takes_sentiment():
    candles = _candles(1600)
    rows = aggregate_hourly(_items(300, "2024-01-01", 130, seed=5), [SYM]).drop(columns=["symbol"])
    X, y, _ = build_dataset(candles, TrainConfig(min_rows=500), sentiment=rows)
    assert set(SENTIMENT_FEATURES) <= set(X.columns)
    assert Tagger.for_symbols([SYM]).tag("bitcoin") == ("BTC",)


def test_a_model_trains_on_sentiment_and_its_feature_hash_says_so():
    from brain_tasks.ml.pipeline import train_and_evaluate

    candles = _candles(1600)
    rows = aggregate_hourly(_items(300, "2024-01-01", 130, seed=7), [SYM]).drop(columns=["symbol"])
    config = TrainConfig(min_rows=500, n_folds=2)
    with_sent = train_and_evaluate(candles, "baseline", config, sentiment=rows, with_importance=False)
    without = train_and_evaluate(candles, "baseline", config, with_importance=False)
    assert with_sent.feature_names == [*without.feature_names, *SENTIMENT_FEATURES]
    assert with_sent.feature_hash != without.feature_hash
