"""Extreme candle values: what no computation can use is rejected with a finding, never stored."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brain_tasks.market.quality import (
    OVERFLOW_LIMIT,
    implausible_jumps,
    validate_candles,
)
from tests.workers import REPO

PRICES = ["open", "high", "low", "close"]


def bars(n: int = 30) -> pd.DataFrame:
    ts = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    close = 1.0 + 0.01 * np.sin(np.arange(n))
    return pd.DataFrame({"ts": ts, "open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                         "volume": 5.0})


def with_bar(df: pd.DataFrame, i: int, price: float, volume: float | None = None) -> pd.DataFrame:
    out = df.copy()
    out.loc[i, PRICES] = price
    if volume is not None:
        out.loc[i, "volume"] = volume
    return out


def reasons(v) -> dict[int, str]:
    return {int((t - pd.Timestamp("2024-01-01", tz="UTC")) / pd.Timedelta("5min")): r
            for t, r in zip(v.rejected["ts"], v.rejected["reason"])}


def test_a_1e308_bar_overflows_and_is_rejected_with_a_finding():
    v = validate_candles(with_bar(bars(), 7, 1e308), "5m")
    assert reasons(v) == {7: "overflow"} and len(v.clean) == 29
    finding = next(f for f in v.findings if f.check == "overflow")
    assert finding.severity == "error" and finding.details["rows"] == 1
    assert finding.details["examples"][0]["close"] == 1e308
    assert np.isfinite(v.clean[PRICES + ["volume"]].to_numpy() ** 2).all()


@pytest.mark.parametrize("value, check", [(np.inf, "nan"), (np.nan, "nan"), (0.0, "non_positive_price"),
                                          (-3.0, "non_positive_price"), (OVERFLOW_LIMIT * 2, "overflow"),
                                          (250.0, "implausible_jump"), (0.004, "implausible_jump")])
def test_non_finite_non_positive_overflowing_or_implausible_prices_are_rejected(value, check):
    assert reasons(validate_candles(with_bar(bars(), 12, value), "5m")) == {12: check}


def test_an_overflowing_volume_is_rejected_too():
    assert reasons(validate_candles(with_bar(bars(), 3, 1.0, volume=1e200), "5m")) == {3: "overflow"}


def test_only_the_bad_bar_goes_even_when_it_comes_first():
    assert reasons(validate_candles(with_bar(bars(), 0, 1e6), "5m")) == {0: "implausible_jump"}
    assert reasons(validate_candles(with_bar(bars(), 29, 1e6), "5m")) == {29: "implausible_jump"}


def test_the_bound_is_configurable_and_a_lone_bar_is_judged_by_the_stored_bars_before_it():
    spiky = with_bar(bars(), 10, 30.0)  # 30x: plausible under the default bound of 100x
    assert reasons(validate_candles(spiky, "5m")) == {}
    assert reasons(validate_candles(spiky, "5m", max_bar_ratio=10)) == {10: "implausible_jump"}
    assert reasons(validate_candles(spiky, "5m", max_bar_ratio=None)) == {}
    lone = with_bar(bars(), 5, 500.0).iloc[[5]]
    assert reasons(validate_candles(lone, "5m")) == {}  # nothing to compare with
    assert reasons(validate_candles(lone, "5m", reference_closes=[1.0] * 9)) == {5: "implausible_jump"}
    assert reasons(validate_candles(bars().iloc[[5]], "5m", reference_closes=[1.0] * 9)) == {}


def test_real_market_data_has_no_implausible_bars():
    sample = REPO / "sample" / "freqtrade-testdata"
    for path in sorted(sample.glob("*-5m.feather")):
        df = pd.read_feather(path).rename(columns={"date": "ts"})
        assert not implausible_jumps(df, 100.0).any(), path.name
