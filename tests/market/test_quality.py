"""Row checks, repairs, gaps, staleness and coverage of market data batches."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brain_tasks.errors import DataError
from brain_tasks.market.quality import (check_candles, check_funding, check_open_interest, coverage, find_gaps,
                                        stale_finding, validate_candles, validate_funding, validate_liquidations,
                                        validate_open_interest, validate_sentiment)

NOW = pd.Timestamp("2024-02-01", tz="UTC")


def candles(n: int = 6, start: str = "2024-01-01") -> pd.DataFrame:
    ts = pd.date_range(start, periods=n, freq="1h", tz="UTC")
    close = np.linspace(100, 105, n)
    return pd.DataFrame({"ts": ts, "open": close - 0.5, "high": close + 1, "low": close - 1, "close": close,
                         "volume": np.full(n, 10.0)})


@pytest.mark.parametrize(("mutate", "check"), [
    (lambda d: d.assign(close=d["close"].where(d.index != 2, np.nan)), "nan"),
    (lambda d: d.assign(high=d["high"].where(d.index != 2, np.inf)), "nan"),
    (lambda d: d.assign(low=d["low"].where(d.index != 2, -1.0)), "non_positive_price"),
    (lambda d: d.assign(open=d["open"].where(d.index != 2, 0.0)), "non_positive_price"),
    (lambda d: d.assign(high=d["high"].where(d.index != 2, 1.0)), "ohlc_inconsistent"),
    (lambda d: d.assign(low=d["low"].where(d.index != 2, 1000.0)), "ohlc_inconsistent"),
    (lambda d: d.assign(volume=d["volume"].where(d.index != 2, -5.0)), "negative_volume"),
    (lambda d: d.assign(close=d["close"].astype(object).where(d.index != 2, "1e3x")), "wrong_type"),
    (lambda d: d.assign(ts=d["ts"].where(d.index != 2, d["ts"][2] + pd.Timedelta(minutes=7))), "misaligned"),
    (lambda d: d.assign(ts=d["ts"].astype(object).where(d.index != 2, "not a time")), "bad_timestamp"),
    (lambda d: d.assign(ts=d["ts"].where(d.index != 2, NOW + pd.Timedelta(days=3))), "future"),
])
def test_a_bad_row_is_rejected_with_its_reason(mutate, check: str) -> None:
    v = validate_candles(mutate(candles()), "1h", now=NOW)
    assert v.rejected["reason"].tolist() == [check]
    assert len(v.clean) == 5 and np.isfinite(v.clean[["open", "high", "low", "close", "volume"]]).all().all()
    [finding] = v.findings
    assert (finding.check, finding.severity, finding.details["rows"]) == (check, "error", 1)
    json.dumps(finding.to_dict())  # JSON-safe, inf and NaN included


def test_duplicates_and_order_are_repaired_conflicts_rejected() -> None:
    d = candles()
    exact = pd.concat([d, d.iloc[[1]]]).iloc[::-1].reset_index(drop=True)
    v = validate_candles(exact, "1h")
    assert v.clean.equals(d.assign(ts=d["ts"].astype("datetime64[ns, UTC]")))
    assert sorted(f.check for f in v.findings) == ["duplicate", "unordered"]
    assert all(f.severity == "warning" for f in v.findings) and v.rejected.empty
    conflict = pd.concat([d, d.iloc[[1]].assign(close=d["close"][1] + 0.1)])
    v = validate_candles(conflict, "1h")
    assert v.rejected["ts"].tolist() == [d["ts"][1]] * 2 and len(v.clean) == 5
    assert [f.check for f in v.findings] == ["duplicate_conflict"]


def test_open_bar_is_withheld_not_rejected() -> None:
    v = validate_candles(candles(), "1h", now=pd.Timestamp("2024-01-01 05:30", tz="UTC"))
    assert v.withheld == 1 and len(v.clean) == 5 and v.findings == []


def test_missing_column_is_malformed() -> None:
    with pytest.raises(DataError, match="volume"):
        validate_candles(candles().drop(columns="volume"), "1h")


def test_gaps_are_interior_runs_of_missing_bars() -> None:
    d = candles(10).drop(index=[3, 4, 7])
    gaps = find_gaps(d["ts"], "1h", "candles")
    assert [(g.ts_start.hour, g.ts_end.hour, g.details["missing"]) for g in gaps] == [(3, 4, 2), (7, 7, 1)]
    assert [f.check for f in check_candles(d, "1h")] == ["gap", "gap"]
    assert find_gaps(candles(10)["ts"], "1h", "candles") == []


def test_stale_only_when_the_newest_row_lags() -> None:
    last = pd.Timestamp("2024-01-01 05:00", tz="UTC")
    assert stale_finding(last, "1h", "candles", now=last + pd.Timedelta(hours=3)) == []
    [f] = stale_finding(last, "1h", "candles", now=last + pd.Timedelta(hours=10))
    assert f.check == "stale" and f.ts_start == last + pd.Timedelta(hours=1) and f.details["lag_seconds"] == 36000
    assert [f.check for f in check_candles(candles(), "1h", now=NOW, stale_after=3)] == ["stale"]


def test_coverage_per_day_counts_only_the_span_covered() -> None:
    d = candles(48, start="2024-01-01 12:00").drop(index=range(20, 26))
    cov = coverage(d, "1h")
    assert cov["expected"].tolist() == [12, 24, 12]
    assert cov["present"].tolist() == [12, 18, 12]
    assert cov["ratio"].tolist() == [1.0, 0.75, 1.0]


def test_funding_snaps_jitter_and_flags_bad_settlements() -> None:
    ts = pd.date_range("2024-01-01", periods=5, freq="8h", tz="UTC") + pd.Timedelta(milliseconds=17)
    df = pd.DataFrame({"ts": ts, "rate": [0.0001, np.nan, 0.5, 0.0002, 0.0001]})
    df.loc[4, "ts"] = df.loc[4, "ts"] + pd.Timedelta(hours=2)
    v = validate_funding(df, interval="8h")
    assert v.clean["ts"].tolist() == [pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-02", tz="UTC")]
    assert dict(zip(v.rejected["reason"], v.rejected["rate"].fillna(-1))) == {
        "nan": -1, "out_of_range": 0.5, "misaligned": 0.0001}
    assert {f.check for f in check_funding(df.iloc[[0, 3]], interval="8h")} == {"gap"}


def test_open_interest_liquidations_and_sentiment_rules() -> None:
    ts = pd.date_range("2024-01-01", periods=3, freq="1h", tz="UTC")
    oi = pd.DataFrame({"ts": ts, "open_interest": [10.0, -1.0, 12.0], "open_interest_value": [1e5, 1e5, None]})
    v = validate_open_interest(oi)
    assert v.rejected["reason"].tolist() == ["negative_value"]
    assert v.clean["open_interest_value"].isna().tolist() == [False, True]
    [gap] = check_open_interest(oi.iloc[[0, 2]], "30m")
    assert (gap.check, gap.details["missing"]) == ("gap", 3)
    liq = pd.DataFrame({"ts": ts, "side": ["long", "sideways", "short"], "price": [100.0, 100.0, 0.0],
                        "amount": [1.0, 1.0, 1.0], "value": [None, None, None], "liq_id": ["", "", "x"]})
    v = validate_liquidations(liq)
    assert v.rejected["reason"].tolist() == ["bad_side", "non_positive_price"]
    assert v.clean["value"].tolist() == [100.0] and v.clean["liq_id"].iloc[0].startswith("sha256:")
    sent = pd.DataFrame({"ts": ts, "score": [0.5, 1.5, -0.2], "magnitude": [0.1, 0.1, -0.1], "n_items": [1, 2, 3]})
    assert validate_sentiment(sent).rejected["reason"].tolist() == ["out_of_range", "negative_value"]
