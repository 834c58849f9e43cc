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

import numpy as np
import pandas as pd

from brain_tasks.errors import DataError
from brain_tasks.timekeeping import timeframe_seconds
from brain_tasks.market.quality import DEFAULT_MAX_BAR_RATIO, OVERFLOW_LIMIT, implausible_jumps

# 2: every rolling statistic and EWM window-exact (see "window-exact rolling statistics" below): values
# moved in their last bits, ATR and RSI by up to about 1e-9 (their EWMs now span 288 bars); external
# series older than EXTERNAL_MAX_AGE are no longer joined, funding windows count a week's settlements,
# liq_run_length stops at LIQ_RUN_CAP.
FEATURE_SET_VERSION = "2"

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

# External series older than this at a bar's close are not joined to it (see `_asof`).
EXTERNAL_MAX_AGE = pd.Timedelta(days=1)
# Funding windows count settlements, but only those of the last week (21 settlements at 8 hours).
FUNDING_HISTORY = pd.Timedelta(days=7)
# Window-exact features: ATR and RSI smooth over the last EWM_TAPS bars (the weight left out,
# (13/14)^288, is 5e-10), a run of bars with liquidations is counted up to LIQ_RUN_CAP bars.
EWM_TAPS = 288
LIQ_RUN_CAP = 288
# Candle rows a feature row depends on, the bar itself included: rv_288 and the EWMs read 288 returns
# (289 closes); the liquidation cascade counts 12 spikes each judged on the 288 bars before it (300
# bars), plus one bar whose bucket may hold events from before the window.
FEATURE_ROWS = 301
# External events read before the first candle of a window: funding's history plus the join's age limit.
EVENT_LOOKBACK = EXTERNAL_MAX_AGE + FUNDING_HISTORY
# Hours of sentiment a feature row depends on: the 168-hour z-score of 6-hour counts (173 hours), and
# the hour a row becomes known (up to 2 hours after its stamp).
SENTIMENT_HISTORY = pd.Timedelta(hours=176)

# A bar is a liquidation "spike" (one step of a cascade) when its liquidated value exceeds this many
# times the trailing mean per bar.
CASCADE_MULTIPLE = 3.0



def _check_ts(frame: pd.DataFrame, what: str) -> None:
    if "ts" not in frame.columns:
        raise DataError(f"{what}: missing column 'ts'")
    ts = frame["ts"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise DataError(f"{what}: 'ts' must be tz-aware UTC datetimes, got {ts.dtype}")
    if ts.isna().any():
        raise DataError(f"{what}: 'ts' has missing values")


def validate_candles(candles: pd.DataFrame, *, allow_constant: bool = False) -> None:
    """Raise DataError unless ``candles`` follows the team's candle frame convention.  A constant close
    is refused (nothing to learn) unless ``allow_constant``: a window of a longer history that is a
    quiet market (serving), not a series to train on."""
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise DataError(f"candles: missing columns {missing}")
    _check_ts(candles, "candles")
    if len(candles) == 0:
        raise DataError("candles: empty frame")
    stamps = pd.DatetimeIndex(candles["ts"]).asi8
    if (np.diff(stamps) <= 0).any():  # strictly increasing: sorted and unique
        raise DataError("candles: 'ts' must be sorted and unique")
    prices = np.column_stack([candles[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close")])
    if not np.isfinite(prices).all():
        raise DataError("candles: NaN or infinite prices")
    if (prices <= 0).any():
        raise DataError("candles: non-positive prices")
    volume = candles["volume"].to_numpy(dtype="float64")
    if not np.isfinite(volume).all() or (volume < 0).any():
        raise DataError("candles: NaN, infinite or negative volume")
    if not allow_constant and (prices[:, 3] == prices[0, 3]).all():
        raise DataError("candles: constant close price, nothing to learn")


def sane_candles(candles: pd.DataFrame) -> np.ndarray:
    """True for the bars whose values arithmetic can use (finite, not overflowing, positive prices,
    non-negative volume): the bars `usable_candles` then judges for implausible jumps."""
    values = candles[["open", "high", "low", "close", "volume"]].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(values).all(axis=1) & (np.abs(values) < OVERFLOW_LIMIT).all(axis=1)
        keep &= (values[:, :4] > 0).all(axis=1) & (values[:, 4] >= 0)
    return keep


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
    keep = sane_candles(candles)
    if keep.any():
        sane = candles[keep]
        jump = implausible_jumps(sane, max_bar_ratio)
        keep[np.flatnonzero(keep)[jump]] = False
    return candles if keep.all() else candles[keep].reset_index(drop=True)


# --- window-exact rolling statistics ---------------------------------------------------------------
#
# pandas' rolling sums, means and standard deviations and its EWMs carry a running state from bar to
# bar, so a bar's value depends in its last bits on where the computation started: serving a bar bit
# for bit as training computed it then needs the whole training window.  These kernels compute each
# bar's value from its own window alone, with a fixed sequence of elementwise IEEE operations, so the
# same window gives the same bits wherever the frame starts.  A window of w values is cut into w / b
# blocks of b (b a divisor of w near sqrt(w)); blocks are summed in a fixed order and merged oldest
# first: about 2 sqrt(w) array operations per statistic instead of w.


def _block_size(w: int) -> int:
    """The divisor of ``w`` with the fewest array operations (terms per block plus blocks per window)."""
    return min((d for d in range(1, w + 1) if w % d == 0), key=lambda d: (d + w // d, d))


def _windows(n: int, w: int) -> int:
    return max(n - w + 1, 0)


def _window_sum(x: np.ndarray, w: int) -> np.ndarray:
    """Sum of each bar's last ``w`` values; NaN before ``w`` values exist or when one of them is NaN."""
    out = np.full(len(x), np.nan)
    m = _windows(len(x), w)
    if m:
        b = _block_size(w)
        nb = _windows(len(x), b)
        blocks = x[:nb].copy()
        for j in range(1, b):
            blocks += x[j:j + nb]
        acc = blocks[:m].copy()
        for k in range(1, w // b):
            acc += blocks[k * b:k * b + m]
        out[w - 1:] = acc
    return out


def _window_stats(x: np.ndarray, w: int, *, std: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (NaN unless ``std``) of each bar's last ``w`` values; NaN as
    in `_window_sum`.

    Each block is summed relative to its own last value and blocks are merged with Chan's pairwise
    update, so a constant window has exactly its value as mean and exactly 0 as deviation, and a large
    level with small moves (open interest) loses nothing to cancellation.
    """
    n = len(x)
    mean, dev = np.full(n, np.nan), np.full(n, np.nan)
    m = _windows(n, w)
    if not m:
        return mean, dev
    b = _block_size(w)
    nb = _windows(n, b)
    ref = x[b - 1:]
    local = x[:nb] - ref
    for j in range(1, b):
        local += x[j:j + nb] - ref
    local /= b
    block_mean = ref + local
    if std:
        block_m2 = np.zeros(nb)
        for j in range(b):
            e = (x[j:j + nb] - ref) - local
            block_m2 += e * e
    acc = block_mean[:m].copy()
    m2 = block_m2[:m].copy() if std else None
    for k in range(1, w // b):
        delta = block_mean[k * b:k * b + m] - acc
        acc += delta * (b / ((k + 1) * b))
        if m2 is not None:
            m2 += block_m2[k * b:k * b + m] + delta * delta * (k * b * b / ((k + 1) * b))
    mean[w - 1:] = acc
    if m2 is not None and w > 1:
        dev[w - 1:] = np.sqrt(m2 / (w - 1))
    return mean, dev


def _head(x: np.ndarray, w: int, min_periods: int | None) -> pd.core.window.Rolling | None:
    """pandas' rolling window over the bars before the first full window (None if it has no values):
    those values depend on where the data starts whatever the method, so pandas' semantics serve."""
    if min_periods is None or min_periods >= w:
        return None
    return pd.Series(x[:max(min(len(x), w - 1), 0)]).rolling(w, min_periods=min_periods)


def window_sum(x: pd.Series | np.ndarray, w: int, min_periods: int | None = None) -> np.ndarray:
    """Window-exact ``rolling(w, min_periods).sum()`` (full windows: NaN if a value is NaN)."""
    v = np.asarray(x, dtype="float64")
    out = _window_sum(v, w)
    head = _head(v, w, min_periods)
    if head is not None:
        out[:len(head.obj)] = head.sum().to_numpy()
    return out


def window_mean_std(x: pd.Series | np.ndarray, w: int, min_periods: int | None = None,
                      *, std: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Window-exact ``rolling(w, min_periods)`` mean and std (full windows: NaN if a value is NaN)."""
    v = np.asarray(x, dtype="float64")
    mean, dev = _window_stats(v, w, std=std)
    head = _head(v, w, min_periods)
    if head is not None:
        mean[:len(head.obj)] = head.mean().to_numpy()
        if std:
            dev[:len(head.obj)] = head.std().to_numpy()
    return mean, dev


def _ewm(x: pd.Series | np.ndarray, alpha: float, taps: int) -> np.ndarray:
    """Exponentially weighted mean over each bar's last ``taps`` values only (weights (1 - alpha)^j,
    normalised): a fixed convolution, NaN before ``taps`` values exist or when one of them is NaN.

    Weights are products of a within-block and a between-block power, a fixed set of floats: the
    bits of a value depend on its window alone.
    """
    v = np.asarray(x, dtype="float64")
    out = np.full(len(v), np.nan)
    m = _windows(len(v), taps)
    if not m:
        return out
    b = _block_size(taps)
    q = taps // b
    decay = 1.0 - alpha
    inner = decay ** np.arange(b - 1, -1, -1, dtype="float64")     # oldest value of a block first
    outer = decay ** (b * np.arange(q - 1, -1, -1, dtype="float64"))  # oldest block first
    nb = _windows(len(v), b)
    blocks = v[:nb] * inner[0]
    for j in range(1, b):
        blocks += v[j:j + nb] * inner[j]
    acc = blocks[:m] * outer[0]
    for k in range(1, q):
        acc += blocks[k * b:k * b + m] * outer[k]
    out[taps - 1:] = acc / (float(inner.sum()) * float(outer.sum()))
    return out


def _z(v: np.ndarray, window: int, min_periods: int | None = None) -> np.ndarray:
    mean, std = window_mean_std(v, window, min_periods)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (v - mean) / np.where(std > 0, std, np.nan)
    # A flat window carries no surprise: z = 0 rather than NaN keeps warm-up rows the only NaNs.
    return np.where(std == 0, 0.0, z)


def _zscore(x: pd.Series, window: int, min_periods: int | None = None) -> pd.Series:
    return pd.Series(_z(x.to_numpy(dtype="float64"), window, min_periods), index=x.index)


def _lagged(x: np.ndarray, k: int) -> np.ndarray:
    """x shifted k bars later (NaN for the first k)."""
    out = np.full(len(x), np.nan)
    if k < len(x):
        out[k:] = x[:len(x) - k]
    return out


def _candle_features(c: pd.DataFrame, ts: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    # numpy rather than pandas Series: serving computes these on a few hundred rows per bar, where
    # pandas' per-operation overhead was most of the time.
    close = c["close"].to_numpy(dtype="float64")
    high = c["high"].to_numpy(dtype="float64")
    low = c["low"].to_numpy(dtype="float64")
    logc = np.log(close)
    r1 = logc - _lagged(logc, 1)
    out: dict[str, np.ndarray] = {}
    for h in RETURN_HORIZONS:
        out[f"ret_{h}"] = logc - _lagged(logc, h)
    for w in VOL_WINDOWS:
        out[f"rv_{w}"] = window_mean_std(r1, w)[1]
    rv48 = out["rv_48"]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["rv_ratio_12_48"] = np.where(rv48 == 0, 1.0, out["rv_12"] / np.where(rv48 > 0, rv48, np.nan))
        out["range_hl"] = np.log(high / low)
        prev_close = _lagged(close, 1)
        true_range = np.maximum(high - low, np.maximum(np.abs(high - prev_close), np.abs(low - prev_close)))
        # Wilder's smoothing (alpha = 1/14), the usual ATR and RSI definition, over the last EWM_TAPS bars.
        out["atr_14"] = _ewm(true_range, 1 / 14, EWM_TAPS) / close
        gain = _ewm(np.maximum(r1, 0.0), 1 / 14, EWM_TAPS)
        loss = _ewm(np.maximum(-r1, 0.0), 1 / 14, EWM_TAPS)
        total = gain + loss
        out["rsi_14"] = np.where(total == 0, 50.0, 100.0 * gain / np.where(total > 0, total, np.nan))
        span = high - low
        pos = (close - low) / np.where(span > 0, span, np.nan)
        out["close_pos"] = np.where(np.isnan(pos), 0.5, pos)
        for w in (48, 288):
            out[f"ma_dev_{w}"] = logc - np.log(window_mean_std(close, w, std=False)[0])
    logv = np.log1p(c["volume"].to_numpy(dtype="float64"))
    for w in (48, 288):
        out[f"vol_z_{w}"] = _z(logv, w)
    seconds = (ts.hour * 3600 + ts.minute * 60 + ts.second).to_numpy(dtype="float64")
    day_angle = 2 * np.pi * seconds / 86400.0
    week_angle = 2 * np.pi * (ts.day_of_week.to_numpy(dtype="float64") * 86400.0 + seconds) / (7 * 86400.0)
    out["tod_sin"] = np.sin(day_angle)
    out["tod_cos"] = np.cos(day_angle)
    out["dow_sin"] = np.sin(week_angle)
    out["dow_cos"] = np.cos(week_angle)
    return out


def _asof(close_time: pd.Series, right: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Values of ``right`` last known at each close time (backward as-of join), if stamped at most
    ``EXTERNAL_MAX_AGE`` before it: a feed that stopped is missing, not its last value forever (which
    would make a bar's features depend on events any distance back)."""
    # Both sides in ns so sub-second settlement jitter is never truncated by a coarser unit.
    left = pd.DataFrame({"_t": pd.DatetimeIndex(close_time).as_unit("ns")})
    r = right[["ts", *columns]].rename(columns={"ts": "_t"})
    r["_t"] = pd.DatetimeIndex(r["_t"]).tz_convert("UTC").as_unit("ns")
    joined = pd.merge_asof(left, r, on="_t", direction="backward", allow_exact_matches=False,
                           tolerance=EXTERNAL_MAX_AGE)
    return joined[columns]


def _sorted_events(frame: pd.DataFrame, what: str, columns: list[str]) -> pd.DataFrame:
    _check_ts(frame, what)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what}: missing columns {missing}")
    return frame[["ts", *columns]].sort_values("ts", kind="stable").reset_index(drop=True)


def _funding_features(funding: pd.DataFrame, close_time: pd.Series) -> dict[str, pd.Series]:
    """Per settlement: the rate, its change, and its mean and z-score over the last 3 and 21
    settlements, counting only settlements of the last ``FUNDING_HISTORY`` (a window of settlements
    would otherwise reach any distance back over a gap in the feed); joined as-of on the bar close."""
    f = _sorted_events(funding, "funding", ["rate"]).drop_duplicates("ts", keep="last")
    f = f[np.isfinite(f["rate"].astype("float64"))].reset_index(drop=True)  # a missing rate says nothing
    if f.empty:  # no settlement (in the window read): nothing known
        return {k: pd.Series(np.nan, index=range(len(close_time))) for k in FUNDING_FEATURES}
    rate = f["rate"].to_numpy(dtype="float64")
    t = pd.DatetimeIndex(f["ts"]).tz_convert("UTC").as_unit("ns")
    # Settlements in (ts - FUNDING_HISTORY, ts] at each settlement, itself included.
    known = np.arange(len(t)) - np.searchsorted(t.asi8, (t - FUNDING_HISTORY).asi8, side="right") + 1
    width = 21
    # last[e, j]: the settlement j - (width - 1) places before e; j = width - 1 is e itself.
    last = np.lib.stride_tricks.sliding_window_view(np.concatenate([np.full(width - 1, np.nan), rate]), width)

    def mean_std(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, sample std and count of the last min(known, k) settlements, summed in a fixed order
        relative to the latest rate (a constant rate: mean exactly it, std exactly 0)."""
        count = np.minimum(known, k).astype("float64")
        cols = range(width - k, width)
        use = [width - 1 - j < count for j in cols]
        s = np.zeros(len(rate))
        for j, u in zip(cols, use):
            s += np.where(u, last[:, j] - rate, 0.0)
        local = s / count
        m2 = np.zeros(len(rate))
        for j, u in zip(cols, use):
            e = np.where(u, (last[:, j] - rate) - local, 0.0)
            m2 += e * e
        with np.errstate(invalid="ignore", divide="ignore"):
            return rate + local, np.sqrt(m2 / (count - 1)), count

    mean_3, _, _ = mean_std(3)
    mean_21, std_21, n_21 = mean_std(21)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(std_21 > 0, (rate - mean_21) / np.where(std_21 > 0, std_21, 1.0), 0.0)
    previous = np.concatenate([[np.nan], rate[:-1]])
    f = pd.DataFrame(
        {
            "ts": f["ts"],
            "funding_rate": rate,
            "funding_change": np.where(known >= 2, rate - previous, np.nan),
            "funding_mean_3": mean_3,
            "funding_z_21": np.where(n_21 >= 6, z, np.nan),  # six settlements = two days
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
        return pd.Series(window_sum(s, w, min_periods=1), index=idx)

    def ratio(num: pd.Series, den: pd.Series) -> pd.Series:
        return (num / den.where(den > 0)).fillna(0.0)

    out: dict[str, pd.Series] = {}
    for w in (12, 288):
        out[f"liq_intensity_{w}"] = ratio(rsum(total, w), rsum(quote_volume, w))
    recent, base = rsum(total, 12), rsum(total, 48) / 4.0
    out["liq_momentum"] = ratio(recent - base, recent + base)
    out["liq_imbalance_12"] = ratio(rsum(long_v, 12) - rsum(short_v, 12), rsum(total, 12))
    out["liq_imbalance_288"] = ratio(rsum(long_v, 288) - rsum(short_v, 288), rsum(total, 288))
    trailing_mean = pd.Series(window_mean_std(total.shift(1), 288, min_periods=12, std=False)[0], index=idx)
    spike = (total > CASCADE_MULTIPLE * trailing_mean) & (count >= 2)
    out["liq_cascade_12"] = rsum(spike.astype("float64"), 12)
    has = (count > 0).astype("int64")
    run_id = (has == 0).cumsum()
    # Capped, so a bar's value depends on its last LIQ_RUN_CAP bars only.
    out["liq_run_length"] = has.groupby(run_id).cumsum().clip(upper=LIQ_RUN_CAP).astype("float64")
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
    # The hours from the first bar on, whatever rows exist: an hour has the same value on every grid
    # that holds it, so the windows below are the same wherever the candles start.
    grid = pd.date_range(pd.Timestamp(first_bar).tz_convert("UTC").ceil("h"), last_close, freq="h").as_unit("ns")
    per_hour = per_hour.reindex(grid, fill_value=0.0)

    def hourly_sum(column: str, hours: int) -> pd.Series:
        return pd.Series(window_sum(per_hour[column], hours, min_periods=1), index=grid)

    def level(column: str, hours: int) -> pd.Series:
        total = hourly_sum("n", hours)
        return hourly_sum(column, hours) / total.where(total > 0)

    level_24 = level("sw", 24)
    count_6 = np.log1p(hourly_sum("n", 6))
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
    allow_constant: bool = False,
) -> pd.DataFrame:
    """Feature frame indexed by the candles' ts; optional sources add their own columns.

    Rows at the start are NaN while a window warms up (``CANDLE_FEATURES`` are NaN only there);
    external-source columns are NaN before that source's first event.  ``sentiment`` is the hourly
    rows of ``sentiment_scores`` (ts, score, optional magnitude and n_items, any number of sources).
    ``allow_constant``: see `validate_candles`.
    """
    validate_candles(candles, allow_constant=allow_constant)
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
    values = np.column_stack([np.asarray(v, dtype="float64") for v in cols.values()])
    # Infinite values would silently poison tree splits and the linear baseline alike.
    values[np.isinf(values)] = np.nan
    return pd.DataFrame(values, index=ts.rename("ts"), columns=list(cols))


def required_history(timeframe: str, *, sentiment: bool = False) -> int:
    """Candle rows, the bar itself included, that a bar's feature row depends on.

    Computed from at least that many rows up to the bar (and the external events stamped from
    ``EVENT_LOOKBACK`` before the first of them), the row equals, bit for bit, the row computed from
    any earlier first bar: every rolling statistic and EWM reads a fixed window (`_window_stats`,
    `_ewm`), every look-back into external series is bounded.  Rows are counted, not time, since
    windows are; ``sentiment`` adds its hours (a gap in the candles only lengthens the time covered).
    """
    rows = FEATURE_ROWS
    if sentiment:
        rows = max(rows, -(-int(SENTIMENT_HISTORY.total_seconds()) // timeframe_seconds(timeframe)) + 1)
    return rows


def feature_set_hash(names: list[str]) -> str:
    """Stable sha256 hex of the feature-set version and the ordered feature names."""
    payload = json.dumps({"version": FEATURE_SET_VERSION, "names": list(names)}, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def events_from(first_bar: pd.Timestamp, close: pd.Timestamp) -> pd.Timestamp:
    """The earliest external event a window of candles starting at ``first_bar`` and deciding the bar
    that closes at ``close`` depends on (see `required_history`): funding's history before the close,
    the join's age limit before the first bar."""
    return min(pd.Timestamp(first_bar) - EXTERNAL_MAX_AGE, pd.Timestamp(close) - EVENT_LOOKBACK)
