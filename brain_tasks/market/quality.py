"""Data-quality checks of market data batches: each problem becomes one `Finding`.

``validate_*`` splits a batch into the rows fit to store and the rejected ones (with the findings that
explain why); ``check_*`` returns every finding of a batch, gaps and staleness included.  Pure: the
Brain side (`brain_tasks.brain.findings`) stores the findings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from brain_tasks.market.frames import conform, empty_frame, timeframe_delta
from brain_tasks.timekeeping import parse_utc

SEVERITIES = ("info", "warning", "error")
CANDLE_VALUES = ("open", "high", "low", "close", "volume")
# Checks that describe the state of the stored series rather than a defect of the input batch.
SERIES_CHECKS = frozenset({"gap", "stale", "coverage"})
_EXAMPLES = 5
# Magnitudes whose square overflows float64 (about 1.3e154): variances, products and returns built on
# them are infinite, so nothing downstream could use such a value.
OVERFLOW_LIMIT = float(np.sqrt(np.finfo("float64").max))
# The default of BRAIN_MAX_BAR_RATIO (settings.py): a price 100x away from the bars before it is no trade.
DEFAULT_MAX_BAR_RATIO = 100.0
JUMP_WINDOW = 9  # bars whose median close a bar is compared with (odd: one spike never moves it)


@dataclass(frozen=True)
class Finding:
    """One data-quality problem over ``[ts_start, ts_end]``; (data_kind, check, ts_start) identifies it."""

    data_kind: str
    check: str
    severity: str
    ts_start: pd.Timestamp
    ts_end: pd.Timestamp | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, pd.Timestamp]:
        return (self.data_kind, self.check, self.ts_start)

    @property
    def is_defect(self) -> bool:
        """True when the input itself was bad (as opposed to a gap or stale series)."""
        return self.check not in SERIES_CHECKS

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe view (timestamps as ISO strings)."""
        return {"data_kind": self.data_kind, "check": self.check, "severity": self.severity,
                "ts_start": self.ts_start.isoformat(),
                "ts_end": None if self.ts_end is None else self.ts_end.isoformat(),
                "details": self.details}


@dataclass
class Validated:
    """A batch split into rows fit to store (`clean`) and `rejected` rows (with a `reason` column)."""

    kind: str
    clean: pd.DataFrame
    rejected: pd.DataFrame
    findings: list[Finding]
    withheld: int = 0  # bars not closed yet: neither stored nor a defect

    @property
    def defects(self) -> list[Finding]:
        return [f for f in self.findings if f.is_defect]


def _json_safe(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if np.isfinite(v) else str(v)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is None or value is pd.NaT or isinstance(value, (str, int, bool)):
        return value if value is not pd.NaT else None
    return str(value)


class _Rows:
    """Rejects rows check by check; the first failing check is a row's reason."""

    def __init__(self, df: pd.DataFrame, kind: str, fallback_ts: pd.Timestamp) -> None:
        self.df = df
        self.raw = df.copy()  # examples show the values as received, before coercion
        self.kind = kind
        self.fallback = fallback_ts
        self.reason = pd.Series([None] * len(df), index=df.index, dtype=object)
        self.findings: list[Finding] = []

    @property
    def alive(self) -> pd.Series:
        return self.reason.isna()

    def flag(self, check: str, mask: pd.Series, message: str, *, severity: str = "error",
             columns: tuple[str, ...] = ()) -> None:
        hit = mask.fillna(False).astype(bool) & self.alive
        if not hit.any():
            return
        self.reason[hit] = check
        self.findings.append(self.finding(check, hit, message, severity=severity, columns=columns))

    def finding(self, check: str, hit: pd.Series, message: str, *, severity: str,
                columns: tuple[str, ...] = ()) -> Finding:
        rows = self.raw[hit]
        ts = self.df.loc[hit, "ts"].dropna()
        examples = []
        for _, row in rows.head(_EXAMPLES).iterrows():
            examples.append({c: _json_safe(row[c]) for c in ("ts", *columns) if c in row.index})
        return Finding(self.kind, check, severity,
                       ts.min() if len(ts) else self.fallback, ts.max() if len(ts) else None,
                       {"message": message, "rows": int(hit.sum()), "examples": examples})


def _coerce_numeric(rows: _Rows, columns: tuple[str, ...]) -> None:
    """Numbers in text are accepted; anything that is not a number is a wrong-type row."""
    df = rows.df
    bad = pd.Series(False, index=df.index)
    for col in columns:
        raw = df[col]
        if pd.api.types.is_bool_dtype(raw.dtype):
            bad |= raw.notna()
            df[col] = np.nan
            continue
        if pd.api.types.is_numeric_dtype(raw.dtype):
            df[col] = raw.astype("float64")
            continue
        num = pd.to_numeric(raw, errors="coerce")
        is_bool = raw.map(lambda v: isinstance(v, (bool, np.bool_)))
        bad |= (raw.notna() & num.isna()) | is_bool
        df[col] = num.where(~is_bool).astype("float64")
    rows.flag("wrong_type", bad, f"values that are not numbers in {list(columns)}", columns=columns)


def _not_finite(df: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    return ~np.isfinite(df[list(columns)].astype("float64")).all(axis=1)


def _dedupe(rows: _Rows, key: list[str], columns: tuple[str, ...]) -> pd.DataFrame:
    """Exact duplicates keep one row; rows that share a key but disagree are all rejected."""
    df = rows.df
    live = df[rows.alive]
    dup = live.duplicated(subset=key, keep=False)
    if not dup.any():
        return live
    d = live[dup]
    distinct = d.groupby(key, dropna=False)[list(columns)].nunique(dropna=False)
    bad_keys = distinct.index[(distinct > 1).any(axis=1).to_numpy()]
    row_keys = pd.MultiIndex.from_frame(d[key]) if len(key) > 1 else pd.Index(d[key[0]])
    conflict = pd.Series(False, index=df.index)
    conflict[d.index[row_keys.isin(bad_keys)]] = True
    rows.flag("duplicate_conflict", conflict, f"rows share {key} but disagree: none of them can be trusted",
              columns=columns)
    live = df[rows.alive]
    exact = live.duplicated(subset=key, keep="first")
    if not exact.any():
        return live
    mask = pd.Series(False, index=df.index)
    mask[exact[exact].index] = True
    # Repaired, not rejected: the kept copy carries the same values.
    rows.findings.append(rows.finding("duplicate", mask, f"identical rows repeated on {key}: one kept",
                                      severity="warning", columns=columns))
    return live[~exact]


def _sort(rows: _Rows, clean: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    ts = clean["ts"]
    if len(ts) > 1 and not ts.is_monotonic_increasing:
        back = int((ts.diff() < pd.Timedelta(0)).sum())
        rows.findings.append(Finding(rows.kind, "unordered", "warning", ts.min(), ts.max(),
                                     {"message": "timestamps out of order: sorted", "backward_steps": back}))
    return clean.sort_values(key, kind="stable").reset_index(drop=True)


def _start(rows: _Rows, df: pd.DataFrame, now: pd.Timestamp | None) -> None:
    rows.flag("bad_timestamp", df["ts"].isna(), "timestamps missing or unreadable")
    if now is not None:
        rows.flag("future", df["ts"] > now, f"timestamps after now ({now.isoformat()})")


def _finish(rows: _Rows, clean: pd.DataFrame, kind: str, withheld: int = 0) -> Validated:
    rejected = rows.df[~rows.alive].assign(reason=rows.reason[~rows.alive])
    return Validated(kind, clean.reset_index(drop=True), rejected.reset_index(drop=True), rows.findings, withheld)


def _fallback(df: pd.DataFrame, now: pd.Timestamp | None, fallback_ts: Any) -> pd.Timestamp:
    if fallback_ts is not None:
        return parse_utc(fallback_ts)
    ts = df["ts"].dropna() if "ts" in df else pd.Series([], dtype="datetime64[ns, UTC]")
    if len(ts):
        return ts.min()
    return (now or pd.Timestamp("1970-01-01", tz="UTC")).floor("D")


def implausible_jumps(prices: pd.DataFrame, max_ratio: float, *, before: Sequence[float] = (),
                      window: int = JUMP_WINDOW) -> np.ndarray:
    """True for each bar (rows sorted by time; positive finite prices) whose open, high, low or close is
    more than ``max_ratio`` times above or below the median close of the ``window`` bars before it.

    ``before`` are the closes stored just before these bars (oldest first), so a batch of one bar is
    judged like a bar inside a long batch.  The first bars of a series, with fewer than ``window`` bars
    before them, are compared with the median of the series' first ``window`` closes instead: a bad
    first bar must not make every good bar after it look like a jump.
    """
    cols = ["open", "high", "low", "close"]
    logp = np.log(prices[cols].to_numpy(dtype="float64"))
    logc = np.concatenate([np.log(np.asarray(before, dtype="float64")), logp[:, 3]])
    prior = pd.Series(logc).rolling(window, min_periods=window).median().shift(1).to_numpy(copy=True)
    prior[np.isnan(prior)] = np.median(logc[:window]) if len(logc) else np.nan
    prior = prior[len(before):]
    return (np.abs(logp - prior[:, None]) > np.log(max_ratio)).any(axis=1)


def validate_candles(df: pd.DataFrame, timeframe: str, *, now: Any = None, fallback_ts: Any = None,
                     max_bar_ratio: float | None = DEFAULT_MAX_BAR_RATIO,
                     reference_closes: Sequence[float] = ()) -> Validated:
    """Split OHLCV rows into storable and rejected; bars still open at ``now`` are withheld.

    Besides malformed rows, values no computation can use are rejected: magnitudes that overflow float
    arithmetic, and prices more than ``max_bar_ratio`` times away from the bars before them (None: no
    such check); ``reference_closes`` are the stored closes just before the batch (see
    `implausible_jumps`)."""
    step = timeframe_delta(timeframe)
    now = parse_utc(now)
    df = conform(df, "candles").copy()
    rows = _Rows(df, "candles", _fallback(df, now, fallback_ts))
    prices = ("open", "high", "low", "close")
    _coerce_numeric(rows, prices + ("volume",))
    _start(rows, df, now)
    rows.flag("nan", _not_finite(df, prices + ("volume",)), "NaN or infinite prices or volume",
              columns=prices + ("volume",))
    rows.flag("overflow", (df[list(CANDLE_VALUES)].abs() >= OVERFLOW_LIMIT).any(axis=1),
              f"values of {OVERFLOW_LIMIT:.3g} or more overflow float arithmetic", columns=CANDLE_VALUES)
    if step <= pd.Timedelta(days=1):
        epoch = df["ts"] - pd.Timestamp(0, tz="UTC")
        rows.flag("misaligned", (epoch % step) != pd.Timedelta(0), f"timestamps not on {timeframe} bar boundaries")
    rows.flag("non_positive_price", (df[list(prices)] <= 0).any(axis=1), "prices at or below zero",
              columns=prices)
    bad_ohlc = (df["high"] < df[["open", "close", "low"]].max(axis=1)) | (df["low"] > df[["open", "close"]].min(axis=1))
    rows.flag("ohlc_inconsistent", bad_ohlc, "high below open/close/low or low above open/close", columns=prices)
    rows.flag("negative_volume", df["volume"] < 0, "negative volume", columns=("volume",))
    if max_bar_ratio is not None:
        alive = df[rows.alive].sort_values("ts", kind="stable")
        jump = pd.Series(False, index=df.index)
        if len(alive):
            jump[alive.index[implausible_jumps(alive, max_bar_ratio, before=reference_closes)]] = True
        rows.flag("implausible_jump", jump, f"prices more than {max_bar_ratio:g}x away from the median close of "
                  f"the {JUMP_WINDOW} bars before", columns=prices)
    clean = _sort(rows, _dedupe(rows, ["ts"], CANDLE_VALUES), ["ts"])
    withheld = 0
    if now is not None:
        open_bar = clean["ts"] + step > now
        withheld = int(open_bar.sum())
        clean = clean[~open_bar]
    return _finish(rows, clean, "candles", withheld)


def validate_funding(df: pd.DataFrame, *, interval: str = "8h", now: Any = None, max_abs_rate: float = 0.1,
                     tolerance: pd.Timedelta = pd.Timedelta(minutes=1), fallback_ts: Any = None) -> Validated:
    """Funding settlements; timestamps within ``tolerance`` of an ``interval`` boundary snap to it.

    Exchanges stamp settlements a few milliseconds late (Binance ``fundingTime``), which would never
    join with bar timestamps; a rate above ``max_abs_rate`` per interval is no real funding rate.
    """
    step = timeframe_delta(interval)
    now = parse_utc(now)
    df = conform(df, "funding").copy()
    rows = _Rows(df, "funding", _fallback(df, now, fallback_ts))
    _coerce_numeric(rows, ("rate", "mark_price"))
    rounded = df["ts"].dt.round(step)
    near = (df["ts"] - rounded).abs() <= tolerance
    df.loc[near, "ts"] = rounded[near]
    _start(rows, df, now)
    rows.flag("nan", ~np.isfinite(df["rate"]) | np.isinf(df["mark_price"]), "NaN or infinite funding rate",
              columns=("rate", "mark_price"))
    rows.flag("misaligned", ~near & df["ts"].notna(), f"settlements not within {tolerance} of a {interval} boundary")
    rows.flag("out_of_range", df["rate"].abs() > max_abs_rate, f"|rate| above {max_abs_rate} per interval",
              columns=("rate",))
    rows.flag("non_positive_price", df["mark_price"] <= 0, "mark price at or below zero", columns=("mark_price",))
    clean = _sort(rows, _dedupe(rows, ["ts"], ("rate", "mark_price")), ["ts"])
    return _finish(rows, clean, "funding")


def validate_open_interest(df: pd.DataFrame, *, now: Any = None, fallback_ts: Any = None) -> Validated:
    """Open-interest snapshots: base amount required and non-negative, quote value optional."""
    now = parse_utc(now)
    df = conform(df, "open_interest").copy()
    rows = _Rows(df, "open_interest", _fallback(df, now, fallback_ts))
    cols = ("open_interest", "open_interest_value")
    _coerce_numeric(rows, cols)
    _start(rows, df, now)
    rows.flag("nan", ~np.isfinite(df["open_interest"]) | np.isinf(df["open_interest_value"]),
              "NaN or infinite open interest", columns=cols)
    rows.flag("negative_value", (df[list(cols)] < 0).any(axis=1), "negative open interest", columns=cols)
    clean = _sort(rows, _dedupe(rows, ["ts"], cols), ["ts"])
    return _finish(rows, clean, "open_interest")


def liquidation_digest(ts: pd.Timestamp, side: str, price: float, amount: float) -> str:
    """A stable id for a liquidation without an exchange id: the digest of its fields."""
    text = json.dumps([ts.isoformat(), side, repr(float(price)), repr(float(amount))])
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:40]


def validate_liquidations(df: pd.DataFrame, *, now: Any = None, fallback_ts: Any = None) -> Validated:
    """Liquidation events; a missing id becomes a digest and a missing quote value price x amount."""
    now = parse_utc(now)
    df = conform(df, "liquidations").copy()
    rows = _Rows(df, "liquidations", _fallback(df, now, fallback_ts))
    cols = ("price", "amount", "value")
    _coerce_numeric(rows, cols)
    _start(rows, df, now)
    rows.flag("nan", ~np.isfinite(df[["price", "amount"]]).all(axis=1) | np.isinf(df["value"]),
              "NaN or infinite price or amount", columns=cols)
    rows.flag("bad_side", ~df["side"].isin(["long", "short"]), "side must be 'long' or 'short'", columns=("side",))
    rows.flag("non_positive_price", df["price"] <= 0, "price at or below zero", columns=("price",))
    rows.flag("non_positive_amount", df["amount"] <= 0, "amount at or below zero", columns=("amount",))
    df["value"] = df["value"].fillna(df["price"] * df["amount"])
    ids = df["liq_id"].astype(object)
    missing = ids.isna() | (ids.astype(str).str.strip() == "")
    alive = rows.alive
    for i in df.index[missing & alive]:
        ids[i] = liquidation_digest(df.at[i, "ts"], df.at[i, "side"], df.at[i, "price"], df.at[i, "amount"])
    df["liq_id"] = ids.astype(str).str.slice(0, 128)
    clean = _sort(rows, _dedupe(rows, ["ts", "liq_id"], ("side", "price", "amount")), ["ts", "liq_id"])
    return _finish(rows, clean, "liquidations")


def validate_sentiment(df: pd.DataFrame, *, now: Any = None, fallback_ts: Any = None) -> Validated:
    """Sentiment scores in [-1, 1] with a non-negative magnitude and item count."""
    now = parse_utc(now)
    df = conform(df, "sentiment").copy()
    rows = _Rows(df, "sentiment", _fallback(df, now, fallback_ts))
    cols = ("score", "magnitude", "n_items")
    _coerce_numeric(rows, cols)
    _start(rows, df, now)
    rows.flag("nan", ~np.isfinite(df["score"]) | np.isinf(df["magnitude"]), "NaN or infinite score", columns=cols)
    rows.flag("out_of_range", df["score"].abs() > 1, "score outside [-1, 1]", columns=("score",))
    rows.flag("negative_value", (df[["magnitude", "n_items"]] < 0).any(axis=1), "negative magnitude or count",
              columns=cols)
    clean = _sort(rows, _dedupe(rows, ["ts"], cols), ["ts"])
    return _finish(rows, clean, "sentiment")


def find_gaps(ts: pd.Series, step: pd.Timedelta | str, kind: str) -> list[Finding]:
    """One finding per run of missing bars between consecutive timestamps (interior gaps only)."""
    step = timeframe_delta(step) if isinstance(step, str) else step
    ts = pd.Series(ts).dropna().drop_duplicates().sort_values().reset_index(drop=True)
    if len(ts) < 2:
        return []
    diffs = ts.diff()
    out = []
    for i in np.flatnonzero((diffs > step).to_numpy()):
        before, after = ts.iloc[i - 1], ts.iloc[i]
        missing = int((after - before) / step) - 1
        if missing < 1:
            continue  # a step that is longer but not by a whole bar: misalignment, not a gap
        out.append(Finding(kind, "gap", "warning", before + step, after - step,
                           {"message": f"{missing} missing interval(s) of {step}", "missing": missing,
                            "after": before.isoformat(), "before": after.isoformat()}))
    return out


def stale_finding(last_ts: pd.Timestamp | None, step: pd.Timedelta | str, kind: str, *, now: Any,
                  after: int = 3) -> list[Finding]:
    """A finding when the newest row is more than ``after`` intervals older than ``now``."""
    step = timeframe_delta(step) if isinstance(step, str) else step
    now = parse_utc(now)
    if last_ts is None or now - last_ts <= step * after:
        return []
    lag = now - last_ts
    return [Finding(kind, "stale", "warning", last_ts + step, None,
                    {"message": f"newest row is {lag} old", "newest": last_ts.isoformat(),
                     "lag_seconds": float(lag.total_seconds())})]


def check_candles(df: pd.DataFrame, timeframe: str, *, now: Any = None,
                  stale_after: int | None = None) -> list[Finding]:
    """Every finding of a candle batch: row defects, gaps and (with ``stale_after`` bars) staleness."""
    v = validate_candles(df, timeframe, now=now)
    findings = v.findings + find_gaps(v.clean["ts"], timeframe, "candles")
    if stale_after is not None and now is not None and len(v.clean):
        findings += stale_finding(v.clean["ts"].iloc[-1], timeframe, "candles", now=now, after=stale_after)
    return findings


def check_funding(df: pd.DataFrame, *, interval: str = "8h", now: Any = None) -> list[Finding]:
    """Every finding of a funding batch, gaps between settlements included."""
    v = validate_funding(df, interval=interval, now=now)
    return v.findings + find_gaps(v.clean["ts"], interval, "funding")


def check_open_interest(df: pd.DataFrame, timeframe: str, *, now: Any = None) -> list[Finding]:
    """Every finding of an open-interest batch sampled every ``timeframe``."""
    v = validate_open_interest(df, now=now)
    return v.findings + find_gaps(v.clean["ts"], timeframe, "open_interest")


def check_liquidations(df: pd.DataFrame, *, now: Any = None) -> list[Finding]:
    """Every finding of a liquidation batch (events: no gaps)."""
    return validate_liquidations(df, now=now).findings


def check_sentiment(df: pd.DataFrame, *, now: Any = None) -> list[Finding]:
    """Every finding of a sentiment batch."""
    return validate_sentiment(df, now=now).findings


def coverage(df: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Per UTC day: bars expected between the first and last bar, bars present, and their ratio."""
    step = timeframe_delta(timeframe)
    cols = ["day", "expected", "present", "ratio"]
    ts = pd.Series(df["ts"] if "ts" in df else [], dtype="datetime64[ns, UTC]").dropna().drop_duplicates()
    if ts.empty:
        return pd.DataFrame({c: pd.Series([], dtype="datetime64[ns, UTC]" if c == "day" else "float64")
                             for c in cols})
    first, last = ts.min(), ts.max()
    days = pd.date_range(first.floor("D"), last.floor("D"), freq="D")
    present = ts.dt.floor("D").value_counts()
    rows = []
    for day in days:
        lo, hi = max(day, first), min(day + pd.Timedelta(days=1), last + step)
        expected = max(int(np.ceil((hi - lo) / step)), 1)
        n = int(present.get(day, 0))
        rows.append((day, expected, n, min(n / expected, 1.0)))
    out = pd.DataFrame(rows, columns=cols)
    out["day"] = out["day"].astype("datetime64[ns, UTC]")
    return out


VALIDATORS = {"candles": validate_candles, "funding": validate_funding, "open_interest": validate_open_interest,
              "liquidations": validate_liquidations, "sentiment": validate_sentiment}
__all__ = ["DEFAULT_MAX_BAR_RATIO", "OVERFLOW_LIMIT", "Finding", "Validated", "check_candles", "check_funding",
           "check_liquidations", "check_open_interest", "check_sentiment", "coverage", "empty_frame", "find_gaps",
           "implausible_jumps", "stale_finding", "validate_candles", "validate_funding", "validate_liquidations",
           "validate_open_interest", "validate_sentiment"]
