"""Features: causal, the right columns, as-of joins of external data, bad data refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_candles

from brain_tasks.errors import DataError
from brain_tasks.ml import features as F
from brain_tasks.ml.features import (
    CANDLE_FEATURES,
    FUNDING_FEATURES,
    LIQUIDATION_FEATURES,
    OI_FEATURES,
    feature_set_hash,
    make_features,
)


def _extras(candles: pd.DataFrame, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    t0, t1 = candles["ts"].iloc[0], candles["ts"].iloc[-1]
    funding_ts = pd.date_range(t0.floor("8h"), t1, freq="8h", tz="UTC") + pd.Timedelta(milliseconds=17)
    oi_ts = pd.date_range(t0, t1, freq="15min", tz="UTC")
    n_liq = 3000
    liq_ts = t0 + pd.to_timedelta(np.sort(rng.uniform(0, (t1 - t0).total_seconds(), n_liq)), unit="s")
    price = np.interp(liq_ts.asi8, candles["ts"].astype("int64"), candles["close"])
    amount = rng.lognormal(0, 1, n_liq)
    return {
        "funding": pd.DataFrame({"ts": funding_ts, "rate": rng.normal(1e-4, 5e-5, len(funding_ts))}),
        "open_interest": pd.DataFrame(
            {
                "ts": oi_ts,
                "open_interest": 1e6 * np.exp(np.cumsum(rng.normal(0, 0.01, len(oi_ts)))),
                "open_interest_value": np.nan,
            }
        ),
        "liquidations": pd.DataFrame(
            {
                "ts": liq_ts,
                "side": rng.choice(["long", "short"], n_liq),
                "price": price,
                "amount": amount,
                "value": amount * price,
            }
        ),
    }


def test_real_pair_has_the_candle_features_and_nan_only_in_warm_up(eth: pd.DataFrame) -> None:
    X = make_features(eth, timeframe="5m")
    assert list(X.columns) == list(CANDLE_FEATURES)
    assert X.index.equals(pd.DatetimeIndex(eth["ts"])) and str(X.index.tz) == "UTC"
    assert X.iloc[:50].isna().any(axis=1).all()
    assert np.isfinite(X.iloc[300:].to_numpy()).all()
    assert X["rsi_14"].iloc[300:].between(0, 100).all()
    assert (X["rv_48"].iloc[300:] > 0).all()


def test_all_sources_give_about_forty_features() -> None:
    candles = synthetic_candles(3000, seed=1)
    X = make_features(candles, timeframe="5m", **_extras(candles))
    assert list(X.columns) == [*CANDLE_FEATURES, *FUNDING_FEATURES, *OI_FEATURES, *LIQUIDATION_FEATURES]
    assert 35 <= X.shape[1] <= 45
    assert np.isfinite(X.iloc[700:].to_numpy()).all()  # funding z-score needs two days of settlements


@pytest.mark.parametrize("cut", [700, 1500, 2999])
def test_features_are_causal_future_data_changes_nothing_before_it(cut: int) -> None:
    candles = synthetic_candles(3000, seed=2)
    extras = _extras(candles, seed=3)
    full = make_features(candles, timeframe="5m", **extras)
    # Everything after the close of bar `cut - 1` is replaced by different data.
    close_of_last = candles["ts"].iloc[cut - 1] + pd.Timedelta("5min")
    altered = synthetic_candles(3000, seed=99)
    future = candles.copy()
    future.loc[cut:, ["open", "high", "low", "close", "volume"]] = altered.loc[
        cut:, ["open", "high", "low", "close", "volume"]
    ].to_numpy()
    other = _extras(candles, seed=4)
    future_extras = {
        k: pd.concat([v[v["ts"] < close_of_last], other[k][other[k]["ts"] >= close_of_last]]) for k, v in extras.items()
    }
    changed = make_features(future, timeframe="5m", **future_extras)
    pd.testing.assert_frame_equal(full.iloc[:cut], changed.iloc[:cut])
    assert not full.iloc[cut:].equals(changed.iloc[cut:])


def test_real_funding_is_joined_as_of_the_bar_close(xrp_futures: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    candles, funding = xrp_futures
    X = make_features(candles, timeframe="5m", funding=funding)
    first = funding.iloc[0]  # settled 2021-11-18 00:00:00.017
    assert pd.isna(X.loc[pd.Timestamp("2021-11-17 23:55", tz="UTC"), "funding_rate"])
    assert X.loc[pd.Timestamp("2021-11-18 00:00", tz="UTC"), "funding_rate"] == first["rate"]
    second_bar = pd.Timestamp("2021-11-18 08:00", tz="UTC")
    assert X.loc[second_bar - pd.Timedelta("5min"), "funding_rate"] == first["rate"]
    assert X.loc[second_bar, "funding_rate"] == funding.iloc[1]["rate"]
    assert X.loc[second_bar, "funding_change"] == pytest.approx(funding.iloc[1]["rate"] - first["rate"])


def test_liquidation_features_bucket_events_into_the_bar_that_knows_them() -> None:
    candles = synthetic_candles(400, seed=5)
    candles["volume"] = 10.0
    candles["close"] = 100.0 + np.arange(400) * 1e-3
    candles["open"] = candles["close"]
    candles["high"] = candles["close"] + 0.01
    candles["low"] = candles["close"] - 0.01
    t = candles["ts"]
    events = [
        (t.iloc[350] + pd.Timedelta("2min"), "long", 100.0, 5.0),
        (t.iloc[350] + pd.Timedelta("4min"), "long", 100.0, 5.0),
        (t.iloc[350] + pd.Timedelta("299s"), "short", 100.0, 2.0),
        (t.iloc[351] + pd.Timedelta("1min"), "long", 100.0, 1.0),
    ]
    liq = pd.DataFrame(events, columns=["ts", "side", "price", "amount"])
    liq["value"] = liq["price"] * liq["amount"]
    X = make_features(candles, timeframe="5m", liquidations=liq)
    assert X["liq_intensity_12"].iloc[349] == 0.0
    quote_12 = (candles["close"] * candles["volume"]).iloc[339:351].sum()
    assert X["liq_intensity_12"].iloc[350] == pytest.approx(1200.0 / quote_12)
    assert X["liq_imbalance_12"].iloc[350] == pytest.approx((1000 - 200) / 1200)
    assert X["liq_imbalance_12"].iloc[351] == pytest.approx((1100 - 200) / 1300)
    assert (
        X["liq_run_length"].iloc[350] == 1 and X["liq_run_length"].iloc[351] == 2 and X["liq_run_length"].iloc[352] == 0
    )
    # Bar 350 is a cascade step: three events worth far more than the (zero) trailing mean.
    assert X["liq_cascade_12"].iloc[350] == 1 and X["liq_cascade_12"].iloc[349] == 0
    assert X["liq_momentum"].iloc[350] > 0
    assert X["liq_cluster_dist"].iloc[352] == pytest.approx(np.log(candles["close"].iloc[352] / 100.0))


@pytest.mark.parametrize(
    "breaker, message",
    [
        (lambda c: c.assign(close=np.where(np.arange(len(c)) == 10, np.nan, c["close"])), "NaN"),
        (lambda c: c.assign(open=1.0, high=1.0, low=1.0, close=1.0), "constant"),
        (lambda c: c.assign(ts=c["ts"].dt.tz_localize(None)), "tz-aware"),
        (lambda c: c.iloc[::-1], "sorted"),
        (lambda c: c.drop(columns="volume"), "missing"),
        (lambda c: c.assign(low=-c["low"]), "non-positive"),
        (lambda c: c.iloc[:0], "empty"),
    ],
)
def test_bad_candles_raise_data_error(breaker, message: str) -> None:  # noqa: ANN001 - a lambda
    with pytest.raises(DataError, match=message):
        make_features(breaker(synthetic_candles(100)), timeframe="5m")


def test_unknown_timeframe_and_bad_liquidation_side_raise_data_error() -> None:
    candles = synthetic_candles(100)
    with pytest.raises(DataError):
        make_features(candles, timeframe="7x")
    liq = pd.DataFrame({"ts": candles["ts"].iloc[[5]], "side": ["buy"], "price": [100.0], "value": [1.0]})
    with pytest.raises(DataError, match="side"):
        make_features(candles, timeframe="5m", liquidations=liq)


def test_feature_set_hash_is_stable_and_order_sensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    names = list(CANDLE_FEATURES)
    h = feature_set_hash(names)
    assert h == feature_set_hash(list(names)) and len(h) == 64
    assert h != feature_set_hash(names[::-1])
    monkeypatch.setattr(F, "FEATURE_SET_VERSION", "999")
    assert F.feature_set_hash(names) != h


def test_timestamp_resolution_does_not_change_features(xrp_futures: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    candles, funding = xrp_futures
    ns = make_features(candles, timeframe="5m", funding=funding)
    coarse = make_features(
        candles.assign(ts=candles["ts"].dt.as_unit("s")),
        timeframe="5m",
        funding=funding.assign(ts=funding["ts"].dt.as_unit("ms")),
    )
    np.testing.assert_array_equal(ns.to_numpy(), coarse.to_numpy())
    assert ns["funding_rate"].notna().sum() > 500
