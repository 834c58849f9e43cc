"""Window-exact features and regimes: a bar's value computed from any later first bar, with at least
`required_history` candles up to it and the external events from `events_from`, equals the value
computed from the whole history bit for bit — on the real sample and on adversarial data (gaps in
the candles, NaN runs and stopped feeds in the external series, constant prices, volume, rates)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import load_pair

from brain_tasks.ml import features as F
from brain_tasks.ml.features import events_from, make_features, required_history
from brain_tasks.ml.regimes import last_regime, volatility_regimes
from brain_tasks.ml.regimes import required_history as regime_history

STEP = pd.Timedelta(minutes=5)


def _extras(candles: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    t0, t1 = candles["ts"].iloc[0] - pd.Timedelta(days=3), candles["ts"].iloc[-1]
    funding_ts = pd.date_range(t0.floor("8h"), t1, freq="8h") + pd.Timedelta(milliseconds=17)
    oi_ts = pd.date_range(t0, t1, freq="15min")
    n_liq = 4000
    liq_ts = t0 + pd.to_timedelta(np.sort(rng.uniform(0, (t1 - t0).total_seconds(), n_liq)), unit="s")
    price = np.interp(liq_ts.asi8, candles["ts"].astype("int64"), candles["close"])
    amount = rng.lognormal(0, 1, n_liq)
    return {
        "funding": pd.DataFrame({"ts": funding_ts, "rate": rng.normal(1e-4, 5e-5, len(funding_ts))}),
        "open_interest": pd.DataFrame({"ts": oi_ts, "open_interest": 1e9 * np.exp(np.cumsum(rng.normal(0, 1e-3,
                                                                                                   len(oi_ts))))}),
        "liquidations": pd.DataFrame({"ts": liq_ts, "side": rng.choice(["long", "short"], n_liq), "price": price,
                                      "amount": amount, "value": amount * price}),
    }


def _adversarial(seed: int = 3) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Real ETH/BTC bars with gaps (a day, an hour, single bars), a flat stretch (constant prices and
    volume), zero-volume runs; funding with a constant-rate stretch, NaN rates, and stopping for good; open
    interest with a NaN run, non-positive values, a constant stretch and a four-day stop; a liquidation
    burst (cascades, a run of 900 bars with liquidations)."""
    rng = np.random.default_rng(seed)
    c = load_pair("ETH").copy()
    c.loc[1500:1900, ["open", "high", "low", "close"]] = float(c.loc[1500, "close"])
    c.loc[1500:1900, "volume"] = 7.25
    c.loc[2500:2600, "volume"] = 0.0
    keep = np.ones(len(c), bool)
    keep[3000:3288] = False  # a day missing
    keep[4000:4012] = False
    keep[rng.choice(np.arange(300, len(c)), 40, replace=False)] = False
    c = c[keep].reset_index(drop=True)
    x = _extras(c, seed)
    f, oi, liq = x["funding"], x["open_interest"], x["liquidations"]
    t = c["ts"]
    f.loc[(f.ts > t[800]) & (f.ts < t[2500]), "rate"] = 1e-4
    f.loc[f.index[10:13], "rate"] = np.nan
    f = f[f.ts < t[2700]]
    oi.loc[(oi.ts > t[600]) & (oi.ts < t[700]), "open_interest"] = np.nan
    oi.loc[(oi.ts > t[900]) & (oi.ts < t[910]), "open_interest"] = 0.0
    oi.loc[(oi.ts > t[1600]) & (oi.ts < t[2000]), "open_interest"] = 2.5e9
    oi = oi[(oi.ts < t[3500]) | (oi.ts > t[3500] + pd.Timedelta(days=4))]
    n = 9000
    burst_ts = t[1200] + pd.to_timedelta(np.sort(rng.uniform(0, 900 * 300, n)), unit="s")
    burst = pd.DataFrame({"ts": burst_ts, "side": rng.choice(["long", "short"], n), "price": 0.09,
                          "amount": rng.lognormal(2, 1, n)}).assign(value=lambda d: d.amount * d.price)
    liq = pd.concat([liq, burst]).sort_values("ts", kind="stable").reset_index(drop=True)
    return c, {"funding": f.reset_index(drop=True), "open_interest": oi.reset_index(drop=True), "liquidations": liq}


def _assert_window_exact(candles: pd.DataFrame, extras: dict[str, pd.DataFrame], starts: list[int],
                         sentiment: pd.DataFrame | None = None) -> int:
    full = make_features(candles, timeframe="5m", sentiment=sentiment, **extras)
    need = required_history("5m", sentiment=sentiment is not None)
    compared = 0
    for s in starts:
        part = candles.iloc[s:].reset_index(drop=True)
        # Only the events the bounded window may depend on: from `events_from` its first bar and the
        # close of the first bar compared.
        since = events_from(part["ts"].iloc[0], part["ts"].iloc[need - 1] + STEP)
        bounded = {k: v[v["ts"] >= since] for k, v in extras.items()}
        got = make_features(part, timeframe="5m", sentiment=sentiment, **bounded).iloc[need - 1:]
        want = full.iloc[s + need - 1:]
        assert list(got.columns) == list(full.columns) and got.index.equals(want.index)
        a, b = got.to_numpy(), want.to_numpy()
        diff = a.view(np.int64) != b.view(np.int64)
        assert not diff.any(), (s, list(got.columns[diff.any(axis=0)]), got.index[diff.any(axis=1)][:3])
        compared += a.size
    return compared


def test_real_sample_features_from_any_later_start_equal_the_full_history_bit_for_bit() -> None:
    candles = load_pair("ETH")
    rng = np.random.default_rng(0)
    starts = [1, 287, 288, 300, 1000, *rng.integers(1, len(candles) - 400, 5).tolist()]
    assert _assert_window_exact(candles, _extras(candles, 0), starts) > 0
    assert _assert_window_exact(candles, {}, starts) > 0


def test_adversarial_data_features_from_any_later_start_equal_the_full_history_bit_for_bit() -> None:
    candles, extras = _adversarial()
    t = candles["ts"]
    # Starts where the last value before a stopped feed is older than any event the window reads, and
    # inside the liquidation run, besides the flat stretch and the gaps.
    stops = [int(t.searchsorted(t[2700] + F.EVENT_LOOKBACK)), int(t.searchsorted(t[3500] + pd.Timedelta(hours=25)))]
    starts = [1, 350, 1250, 1400, 1550, 2150, 2950, *stops, *range(3900, 4000, 17)]
    _assert_window_exact(candles, extras, starts)
    full = make_features(candles, timeframe="5m", **extras)
    flat = full.iloc[1500 + 300:1880]  # the flat stretch: no move, no surprise, exactly
    assert (flat["rv_288"] == 0).all() and (flat["vol_z_48"] == 0).all() and (flat["ma_dev_48"] == 0).all()
    assert full["liq_run_length"].max() == F.LIQ_RUN_CAP
    # Served alone, a quiet window is a window (training refuses a constant series: nothing to learn).
    quiet = candles.iloc[1500:1850].reset_index(drop=True)
    assert (make_features(quiet, timeframe="5m", allow_constant=True)["rv_288"].dropna() == 0).all()
    with pytest.raises(F.DataError, match="constant"):
        make_features(quiet, timeframe="5m")


def test_sentiment_features_from_any_later_start_equal_the_full_history_bit_for_bit() -> None:
    candles = load_pair("ETH").iloc[:3500].reset_index(drop=True)
    rng = np.random.default_rng(5)
    hours = pd.date_range(candles["ts"].iloc[0] - pd.Timedelta(days=2), candles["ts"].iloc[-1], freq="h")
    hours = hours[rng.uniform(size=len(hours)) < 0.7]  # hours without items
    rows = pd.DataFrame({"ts": hours, "score": rng.uniform(-1, 1, len(hours)),
                         "magnitude": rng.uniform(0, 1, len(hours)), "n_items": rng.integers(0, 9, len(hours))})
    need = required_history("5m", sentiment=True)
    assert need > required_history("5m")
    _assert_window_exact(candles, {}, [1, 500, 3500 - need - 40], sentiment=rows)


@pytest.mark.parametrize("data", ["real", "adversarial"])
def test_regimes_from_any_later_start_equal_the_full_history(data: str) -> None:
    candles = load_pair("ETH") if data == "real" else _adversarial()[0]
    window, lookback = 48, 2016
    full = volatility_regimes(candles, window=window, lookback=lookback)
    need = regime_history(window, lookback)
    for s in (1, 500, 1700, len(candles) - need - 5):
        part = volatility_regimes(candles.iloc[s:].reset_index(drop=True), window=window, lookback=lookback)
        pd.testing.assert_series_equal(part.iloc[need - 1:], full.iloc[s + need - 1:])


@pytest.mark.parametrize("w", [1, 3, 7, 12, 21, 48, 168, 288])
def test_window_kernels_match_pandas_and_ignore_the_start(w: int) -> None:
    rng = np.random.default_rng(w)
    x = 1e6 + np.cumsum(rng.normal(size=1500))
    x[700:720] = np.nan
    x[900:1300] = 3.3  # constant: mean exactly the value, deviation exactly 0
    mean, std = F.window_mean_std(x, w)
    roll = pd.Series(x).rolling(w)
    assert np.allclose(mean, roll.mean(), rtol=1e-13, equal_nan=True)
    assert np.allclose(F.window_sum(x, w), roll.sum(), rtol=1e-13, equal_nan=True)
    if w > 1:  # against two-pass deviations (pandas' running sums lose digits after the jump to 3.3)
        exact = np.array([np.nan] * (w - 1) + [np.std(x[i - w + 1:i + 1], ddof=1) for i in range(w - 1, len(x))])
        assert np.allclose(std, exact, rtol=1e-8, atol=1e-12, equal_nan=True)
        assert (std[900 + w - 1:1300] == 0).all() and (mean[900 + w - 1:1300] == 3.3).all()
    for s in (1, w, 333, 701):
        m2, s2 = F.window_mean_std(x[s:], w)
        assert np.array_equal(m2[w - 1:].view(np.int64), mean[s + w - 1:].view(np.int64))
        assert np.array_equal(s2[w - 1:].view(np.int64), std[s + w - 1:].view(np.int64))


def test_truncated_ewm_is_wilders_smoothing_to_the_precision_of_its_taps() -> None:
    x = pd.Series(np.random.default_rng(1).lognormal(size=3000))
    ours = F._ewm(x, 1 / 14, F.EWM_TAPS)
    pandas = x.ewm(alpha=1 / 14, adjust=True).mean().to_numpy()
    assert np.isnan(ours[:F.EWM_TAPS - 1]).all()
    assert np.allclose(ours[F.EWM_TAPS - 1:], pandas[F.EWM_TAPS - 1:], rtol=1e-8)


@pytest.mark.parametrize("data", ["real", "adversarial"])
def test_the_last_bars_regime_alone_is_volatility_regimes_label(data: str) -> None:
    """Serving's path (`last_regime`: one bar's quantiles, its window only) against the whole frame's
    labels, over warm-up, partial and full look-backs."""
    candles = load_pair("ETH") if data == "real" else _adversarial()[0]
    window, lookback = 48, 2016
    full = volatility_regimes(candles, window=window, lookback=lookback)
    ends = [1, 2, 48, 49, 50, 97, 700, 2063, 2064, 2065, *range(2100, len(candles) + 1, 97), len(candles)]
    for end in ends:
        want = full.iloc[end - 1]
        assert last_regime(candles.iloc[:end], window=window, lookback=lookback) == (
            want if isinstance(want, str) else None), end
    small = volatility_regimes(candles, window=12, lookback=100)
    flat = candles.assign(close=candles["close"].where(candles.index < 150, 0.5))  # a quiet market from bar 150
    assert last_regime(flat, window=12, lookback=100) == "low"
    for end in range(1, 400, 7):
        want = small.iloc[end - 1]
        assert last_regime(candles.iloc[:end], window=12, lookback=100) == (want if isinstance(want, str) else None)
