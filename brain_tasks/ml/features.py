"""Causal features from candles, optionally joined with funding, open interest, liquidations and sentiment.

A feature at the bar stamped ``ts`` may use anything known at that bar's close (``ts + timeframe``):
the bar's own OHLCV and any external event stamped strictly before the close (a snapshot stamped at
the close itself may be published after it).  External series are joined as-of on the close time,
backward only, so millisecond jitter on settlement stamps needs no rounding.
Windows are counted in bars (sentiment's, hourly rows, in hours).
"""

from __future__ import annotations

import hashlib
import json

import ccxt
import numpy as np
import pandas as pd

from brain_tasks.errors import DataError
from brain_tasks.market.quality import DEFAULT_MAX_BAR_RATIO, OVERFLOW_LIMIT, implausible_jumps

FEATURE_SET_VERSION = "1"

CANDLE_COLUMNS = ("ts", "open", "high", "low", "close", "volume")

RETURN_HORIZONS = (1, 3, 6, 12, 24, 48, 96)
VOL_WINDOWS = (12, 48, 288)

CANDLE_FEATURES: tuple[str, ...] = (
    *(f"ret_{h}" for h in RETURN_HORIZONS),
    *(f"rv_{w}" for w in VOL_WINDOWS),
    "rv_ratio_12_48",
    "range_hl",
    "atr_14",
    "rsi_14",
    "close_pos",
    "ma_dev_48",
    "ma_dev_288",
    "vol_z_48",
    "vol_z_288",
    "tod_sin",
    "tod_cos",
    "dow_sin",
    "dow_cos",
)
FUNDING_FEATURES = ("funding_rate", "funding_change", "funding_mean_3", "funding_z_21")
OI_FEATURES = ("oi_change_1", "oi_change_12", "oi_change_288", "oi_z_288")
LIQUIDATION_FEATURES = (
    "liq_intensity_12",
    "liq_intensity_288",
    "liq_momentum",
    "liq_imbalance_12",
    "liq_imbalance_288",
    "liq_cascade_12",
    "liq_run_length",
    "liq_cluster_dist",
)

# Sentiment (hourly rows of `brain_tasks.market.sentiment`): levels and change over trailing hours, the
# strength of wording, and how unusual the number of items is.  Windows are in hours, not bars.
SENTIMENT_FEATURES = ("sent_level_6h", "sent_level_24h", "sent_change_24h", "sent_magnitude_24h",
                      "sent_count_surprise")

# A bar is a liquidation "spike" (one step of a cascade) when its liquidated value exceeds this many
# times the trailing mean per bar.
CASCADE_MULTIPLE = 3.0


def timeframe_seconds(timeframe: str) -> int:
    """Length of a ccxt timeframe string in seconds ('5m' -> 300)."""
    try:
        seconds = int(ccxt.Exchange.parse_timeframe(timeframe))
    except Exception as exc:  # ccxt raises bare Exceptions for unknown units
        raise DataError(f"unknown timeframe {timeframe!r}") from exc
    if seconds <= 0:
        raise DataError(f"timeframe {timeframe!r} has no positive length")
    return seconds


def _check_ts(frame: pd.DataFrame, what: str) -> None:
    if "ts" not in frame.columns:
        raise DataError(f"{what}: missing column 'ts'")
    ts = frame["ts"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise DataError(f"{what}: 'ts' must be tz-aware UTC datetimes, got {ts.dtype}")
    if ts.isna().any():
        raise DataError(f"{what}: 'ts' has missing values")


def validate_candles(candles: pd.DataFrame) -> None:
    """Raise DataError unless ``candles`` follows the team's candle frame convention."""
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise DataError(f"candles: missing columns {missing}")
    _check_ts(candles, "candles")
    if len(candles) == 0:
        raise DataError("candles: empty frame")
    ts = candles["ts"]
    if not ts.is_monotonic_increasing or ts.duplicated().any():
        raise DataError("candles: 'ts' must be sorted and unique")
    prices = candles[["open", "high", "low", "close"]].to_numpy(dtype="float64")
    if not np.isfinite(prices).all():
        raise DataError("candles: NaN or infinite prices")
    if (prices <= 0).any():
        raise DataError("candles: non-positive prices")
    volume = candles["volume"].to_numpy(dtype="float64")
    if not np.isfinite(volume).all() or (volume < 0).any():
        raise DataError("candles: NaN, infinite or negative volume")
    if np.unique(candles["close"].to_numpy()).size < 2:
        raise DataError("candles: constant close price, nothing to learn")


def usable_candles(candles: pd.DataFrame, max_bar_ratio: float = DEFAULT_MAX_BAR_RATIO) -> pd.DataFrame:
    """``candles`` without the bars no computation can use: non-finite or non-positive prices,
    non-finite or negative volume, magnitudes that overflow float arithmetic, and prices more than
    ``max_bar_ratio`` times away from the bars before them.

    Collection rejects such bars; a stored one (written before that check, or by hand) is skipped
    here, so one bad print cannot make every later training of its symbol fail.  The same frame comes
    back when every bar is usable.
    """
    if any(c not in candles.columns for c in CANDLE_COLUMNS) or len(candles) == 0:
        return candles  # validate_candles says what is wrong
    values = candles[["open", "high", "low", "close", "volume"]].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(values).all(axis=1) & (np.abs(values) < OVERFLOW_LIMIT).all(axis=1)
        keep &= (values[:, :4] > 0).all(axis=1) & (values[:, 4] >= 0)
    if keep.any():
        sane = candles[keep]
        jump = implausible_jumps(sane, max_bar_ratio)
        keep[np.flatnonzero(keep)[jump]] = False
    return candles if keep.all() else candles[keep].reset_index(drop=True)


def _zscore(x: pd.Series, window: int, min_periods: int | None = None) -> pd.Series:
    roll = x.rolling(window, min_periods=min_periods or window)
    mean, std = roll.mean(), roll.std()
    z = (x - mean) / std.where(std > 0)
    # A flat window carries no surprise: z = 0 rather than NaN keeps warm-up rows the only NaNs.
    return z.where(std.isna() | (std > 0), 0.0)


def _candle_features(c: pd.DataFrame, ts: pd.DatetimeIndex) -> dict[str, pd.Series]:
    close = c["close"].astype("float64")
    high = c["high"].astype("float64")
    low = c["low"].astype("float64")
    logc = np.log(close)
    r1 = logc.diff()
    out: dict[str, pd.Series] = {}
    for h in RETURN_HORIZONS:
        out[f"ret_{h}"] = logc.diff(h)
    for w in VOL_WINDOWS:
        out[f"rv_{w}"] = r1.rolling(w, min_periods=w).std()
    rv48 = out["rv_48"]
    out["rv_ratio_12_48"] = (out["rv_12"] / rv48.where(rv48 > 0)).where(rv48 != 0, 1.0)
    out["range_hl"] = np.log(high / low)
    prev_close = close.shift(1)
    true_range = pd.concat([high - low, (high - prev_close).abs(), (low - prev_close).abs()], axis=1).max(
        axis=1, skipna=False
    )
    # Wilder's smoothing (alpha = 1/14), the usual ATR and RSI definition.
    out["atr_14"] = true_range.ewm(alpha=1 / 14, adjust=False, min_periods=14).mean() / close
    gain = r1.clip(lower=0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    loss = (-r1).clip(lower=0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    total = gain + loss
    out["rsi_14"] = (100.0 * gain / total.where(total > 0)).where(total != 0, 50.0)
    span = high - low
    out["close_pos"] = ((close - low) / span.where(span > 0)).fillna(0.5)
    for w in (48, 288):
        out[f"ma_dev_{w}"] = logc - np.log(close.rolling(w, min_periods=w).mean())
    logv = np.log1p(c["volume"].astype("float64"))
    for w in (48, 288):
        out[f"vol_z_{w}"] = _zscore(logv, w)
    seconds = (ts.hour * 3600 + ts.minute * 60 + ts.second).to_numpy(dtype="float64")
    day_angle = 2 * np.pi * seconds / 86400.0
    week_angle = 2 * np.pi * (ts.day_of_week.to_numpy(dtype="float64") * 86400.0 + seconds) / (7 * 86400.0)
    out["tod_sin"] = pd.Series(np.sin(day_angle), index=c.index)
    out["tod_cos"] = pd.Series(np.cos(day_angle), index=c.index)
    out["dow_sin"] = pd.Series(np.sin(week_angle), index=c.index)
    out["dow_cos"] = pd.Series(np.cos(week_angle), index=c.index)
    return out


def _asof(close_time: pd.Series, right: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Values of ``right`` last known at each close time (backward as-of join)."""
    # Both sides in ns so sub-second settlement jitter is never truncated by a coarser unit.
    left = pd.DataFrame({"_t": pd.DatetimeIndex(close_time).as_unit("ns")})
    r = right[["ts", *columns]].rename(columns={"ts": "_t"})
    r["_t"] = pd.DatetimeIndex(r["_t"]).tz_convert("UTC").as_unit("ns")
    joined = pd.merge_asof(left, r, on="_t", direction="backward", allow_exact_matches=False)
    return joined[columns]


def _sorted_events(frame: pd.DataFrame, what: str, columns: list[str]) -> pd.DataFrame:
    _check_ts(frame, what)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what}: missing columns {missing}")
    return frame[["ts", *columns]].sort_values("ts", kind="stable").reset_index(drop=True)


def _funding_features(funding: pd.DataFrame, close_time: pd.Series) -> dict[str, pd.Series]:
    f = _sorted_events(funding, "funding", ["rate"]).drop_duplicates("ts", keep="last")
    rate = f["rate"].astype("float64")
    f = pd.DataFrame(
        {
            "ts": f["ts"],
            "funding_rate": rate,
            "funding_change": rate.diff(),
            "funding_mean_3": rate.rolling(3, min_periods=1).mean(),
            "funding_z_21": _zscore(rate, 21, min_periods=6),  # six settlements = two days
        }
    )
    joined = _asof(close_time, f, list(FUNDING_FEATURES))
    return {k: joined[k] for k in FUNDING_FEATURES}


def _oi_features(open_interest: pd.DataFrame, close_time: pd.Series) -> dict[str, pd.Series]:
    oi = _sorted_events(open_interest, "open_interest", ["open_interest"]).drop_duplicates("ts", keep="last")
    joined = _asof(close_time, oi, ["open_interest"])["open_interest"].astype("float64")
    log_oi = np.log(joined.where(joined > 0))
    out = {f"oi_change_{k}": log_oi.diff(k) for k in (1, 12, 288)}
    out["oi_z_288"] = _zscore(joined, 288)
    return out


def _liquidation_features(
    liquidations: pd.DataFrame, close_time: pd.Series, close: pd.Series, volume: pd.Series
) -> dict[str, pd.Series]:
    liq = _sorted_events(liquidations, "liquidations", ["side", "price", "value"])
    n = len(close_time)
    ct = pd.DatetimeIndex(close_time).as_unit("ns").asi8
    et = pd.DatetimeIndex(liq["ts"]).as_unit("ns").asi8
    # An event belongs to the first bar whose close is after it: inside a bar it is that bar, inside a
    # candle gap it is the next bar; either way it is known at that bar's close.
    bar = np.searchsorted(ct, et, side="right")
    keep = bar < n
    bar = bar[keep]
    value = liq["value"].to_numpy(dtype="float64")[keep]
    price = liq["price"].to_numpy(dtype="float64")[keep]
    side = liq["side"].astype(str).str.lower().to_numpy()[keep]
    bad_side = ~np.isin(side, ["long", "short"])
    if bad_side.any():
        raise DataError(f"liquidations: side must be 'long' or 'short', got {sorted(set(side[bad_side]))[:3]}")
    good = np.isfinite(value) & (value >= 0) & np.isfinite(price) & (price > 0)
    bar, value, price, side = bar[good], value[good], price[good], side[good]
    is_long = side == "long"
    idx = close.index
    long_v = pd.Series(np.bincount(bar[is_long], weights=value[is_long], minlength=n), index=idx)
    short_v = pd.Series(np.bincount(bar[~is_long], weights=value[~is_long], minlength=n), index=idx)
    count = pd.Series(np.bincount(bar, minlength=n).astype("float64"), index=idx)
    pv = pd.Series(np.bincount(bar, weights=price * value, minlength=n), index=idx)
    total = long_v + short_v
    quote_volume = close * volume

    def rsum(s: pd.Series, w: int) -> pd.Series:
        return s.rolling(w, min_periods=1).sum()

    def ratio(num: pd.Series, den: pd.Series) -> pd.Series:
        return (num / den.where(den > 0)).fillna(0.0)

    out: dict[str, pd.Series] = {}
    for w in (12, 288):
        out[f"liq_intensity_{w}"] = ratio(rsum(total, w), rsum(quote_volume, w))
    recent, base = rsum(total, 12), rsum(total, 48) / 4.0
    out["liq_momentum"] = ratio(recent - base, recent + base)
    out["liq_imbalance_12"] = ratio(rsum(long_v, 12) - rsum(short_v, 12), rsum(total, 12))
    out["liq_imbalance_288"] = ratio(rsum(long_v, 288) - rsum(short_v, 288), rsum(total, 288))
    trailing_mean = total.shift(1).rolling(288, min_periods=12).mean()
    spike = (total > CASCADE_MULTIPLE * trailing_mean) & (count >= 2)
    out["liq_cascade_12"] = rsum(spike.astype("float64"), 12)
    has = (count > 0).astype("int64")
    run_id = (has == 0).cumsum()
    out["liq_run_length"] = has.groupby(run_id).cumsum().astype("float64")
    vwap = rsum(pv, 288) / rsum(total, 288).where(rsum(total, 288) > 0)
    out["liq_cluster_dist"] = np.log(close / vwap)
    return out


def _sentiment_features(sentiment: pd.DataFrame, close_time: pd.Series,
                        first_bar: pd.Timestamp) -> dict[str, pd.Series]:
    """Sentiment known at each bar's close, pooled over sources (weighted by their item counts).

    A row stamped ``ts`` summarises items published in ``[ts, ts + 1h)`` and is known from ``ts + 1h``
    (rounded up to the hour for a row not on the hour); a bar sees it when that is at or before its
    close, so every item behind a feature was published before the close.  Hours without rows count
    as hours without items, up to the last close; levels are NaN over windows without items.  Rows from
    before the first bar are ignored: like the candle windows, sentiment windows warm up inside the
    candle range, so the same candles rebuild the same features however far back sentiment was read.
    """
    optional = [c for c in ("magnitude", "n_items") if c in sentiment.columns]
    s = _sorted_events(sentiment, "sentiment", ["score", *optional])
    s = s[s["ts"] >= first_bar].reset_index(drop=True)
    score = s["score"].astype("float64")
    nan = pd.Series(np.nan, index=s.index)
    weight = s.get("n_items", nan).astype("float64").fillna(1.0).clip(lower=0.0)
    magnitude = s.get("magnitude", nan).astype("float64").fillna(score.abs())
    ok = np.isfinite(score) & np.isfinite(magnitude)
    hour = pd.Timedelta(hours=1)
    known = (pd.DatetimeIndex(s["ts"]).tz_convert("UTC") + hour).ceil("h").as_unit("ns")
    per_hour = pd.DataFrame({"known": known[ok.to_numpy()], "n": weight[ok].to_numpy(),
                             "sw": (score * weight)[ok].to_numpy(), "mw": (magnitude * weight)[ok].to_numpy()})
    n = len(close_time)
    if per_hour.empty:
        return {k: pd.Series(np.nan, index=range(n)) for k in SENTIMENT_FEATURES}
    per_hour = per_hour.groupby("known").sum()
    last_close = pd.Timestamp(pd.DatetimeIndex(close_time).max()).tz_convert("UTC").floor("h")
    grid = pd.date_range(per_hour.index.min(), max(per_hour.index.max(), last_close), freq="h").as_unit("ns")
    per_hour = per_hour.reindex(grid, fill_value=0.0)

    def level(column: str, hours: int) -> pd.Series:
        total = per_hour["n"].rolling(hours, min_periods=1).sum()
        return per_hour[column].rolling(hours, min_periods=1).sum() / total.where(total > 0)

    level_24 = level("sw", 24)
    count_6 = np.log1p(per_hour["n"].rolling(6, min_periods=1).sum())
    feats = pd.DataFrame({
        "ts": grid,
        "sent_level_6h": level("sw", 6),
        "sent_level_24h": level_24,
        "sent_change_24h": level_24 - level_24.shift(24),
        "sent_magnitude_24h": level("mw", 24),
        # How unusual the last 6 hours' item count is against the trailing week (a day of history at least).
        "sent_count_surprise": _zscore(count_6, 168, min_periods=24),
    })
    left = pd.DataFrame({"_t": pd.DatetimeIndex(close_time).tz_convert("UTC").as_unit("ns")})
    joined = pd.merge_asof(left, feats.rename(columns={"ts": "_t"}), on="_t", direction="backward",
                           allow_exact_matches=True)
    return {k: joined[k] for k in SENTIMENT_FEATURES}


def make_features(
    candles: pd.DataFrame,
    *,
    timeframe: str,
    funding: pd.DataFrame | None = None,
    open_interest: pd.DataFrame | None = None,
    liquidations: pd.DataFrame | None = None,
    sentiment: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Feature frame indexed by the candles' ts; optional sources add their own columns.

    Rows at the start are NaN while a window warms up (``CANDLE_FEATURES`` are NaN only there);
    external-source columns are NaN before that source's first event.  ``sentiment`` is the hourly
    rows of ``sentiment_scores`` (ts, score, optional magnitude and n_items, any number of sources).
    """
    validate_candles(candles)
    step = pd.Timedelta(seconds=timeframe_seconds(timeframe))
    c = candles.reset_index(drop=True)
    ts = pd.DatetimeIndex(c["ts"])
    close_time = c["ts"] + step
    cols = _candle_features(c, ts)
    if funding is not None:
        cols.update(_funding_features(funding, close_time))
    if open_interest is not None:
        cols.update(_oi_features(open_interest, close_time))
    if liquidations is not None:
        cols.update(
            _liquidation_features(liquidations, close_time, c["close"].astype("float64"), c["volume"].astype("float64"))
        )
    # No rows: no columns, so the feature names (and the feature-set hash) say sentiment was not used.
    if sentiment is not None and len(sentiment):
        cols.update(_sentiment_features(sentiment, close_time, c["ts"].iloc[0]))
    frame = pd.DataFrame({k: np.asarray(v, dtype="float64") for k, v in cols.items()}, index=ts)
    frame.index.name = "ts"
    # Infinite values would silently poison tree splits and the linear baseline alike.
    return frame.replace([np.inf, -np.inf], np.nan)


def feature_set_hash(names: list[str]) -> str:
    """Stable sha256 hex of the feature-set version and the ordered feature names."""
    payload = json.dumps({"version": FEATURE_SET_VERSION, "names": list(names)}, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
