"""What the pages and the API show, shaped from the Brain's read models (no SQL here: brain/ owns it).

The overview is built for every symbol from a handful of grouped queries, then filtered, sorted and
paginated in the server, so a browser never receives 1,000 rows.  Chart series are cut to at most
`MAX_POINTS` points, keeping each bucket's last equity and its deepest drawdown, so a year of 5m bars
draws as fast as a week.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel

from brain_tasks.brain import dashboard_views as dv
from brain_tasks.brain import registry, store
from brain_tasks.brain.registry import finite
from brain_tasks.ml.metrics import bars_per_year, loses_to_flat, strategy_metrics
from brain_tasks.ml.regimes import REGIMES
from brain_tasks.settings import Settings
from brain_tasks.timekeeping import now
from brain_tasks.vocabulary import LOSES_TO_FLAT, OPEN, ChampionStatus

MAX_POINTS = 2000
# Permutation leads: its out-of-sample drop in R^2 is what a feature is worth for prediction; mean |SHAP|
# is how much the model leans on it, noise included (docs/statistics.md).
IMPORTANCE_METHODS = ("permutation", "shap", "correlation", "variance")
TOP_FEATURES = 15
PER_PAGE = 50
QUERY_THREADS = 4
MAX_PER_PAGE = 500




# --- the overview --------------------------------------------------------------------------------

@dataclass
class OverviewRow:
    """One symbol in the overview.  Performance figures are the champion's out-of-sample walk-forward
    ones; buy-and-hold is the market over the same out-of-sample bars."""

    symbol: str
    champion: str | None = None
    champion_as_of: dt.date | None = None
    champion_since: dt.datetime | None = None
    champion_verdict: str | None = None     # LOSES_TO_FLAT when its out-of-sample result is worse than flat
    sharpe: float | None = None
    live_sharpe: float | None = None
    total_return: float | None = None
    max_drawdown: float | None = None
    bh_total_return: float | None = None
    bh_max_drawdown: float | None = None
    bh_sharpe: float | None = None
    excess_return: float | None = None
    tradeable: Literal["trades", "flat", "none"] = "none"
    tradeable_regimes: int = 0
    chosen_regimes: int = 0
    regime_now: str | None = None
    last_bar: dt.datetime | None = None
    data_age_seconds: float | None = None
    stale: bool = False
    drifted_features: int | None = None
    drift_features: int | None = None
    open_findings: int = 0
    run_state: str | None = None
    run_id: str | None = None
    run_error: str | None = None


class OverviewPage(BaseModel):
    total: int
    matched: int
    page: int
    per_page: int
    pages: int
    sort: str
    order: Literal["asc", "desc"]
    signals_table: bool
    age_seconds: float  # how long ago the rows were read from the Brain (the overview keeps them briefly)
    rows: list[OverviewRow]


SortKey = Literal["symbol", "champion", "sharpe", "live_sharpe", "total_return", "max_drawdown", "bh_total_return",
                  "bh_max_drawdown", "excess_return", "tradeable", "regime_now", "data_age_seconds",
                  "drifted_features", "open_findings", "run_state"]
SORT_KEYS: tuple[str, ...] = get_args(SortKey)
_BENCH_KEYS = {"bh_total_return", "bh_max_drawdown", "bh_sharpe", "excess_return"}


class _OosCache:
    """Values computed from an out-of-sample artifact, by its sha256 (LRU): artifacts never change, so
    an entry is never stale."""

    def __init__(self, size: int = 4096) -> None:
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, digest: str, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if digest in self._data:
                self._data.move_to_end(digest)
                return self._data[digest]
        value = compute()
        with self._lock:
            self._data[digest] = value
            while len(self._data) > self._size:
                self._data.popitem(last=False)
        return value


_BENCHMARKS = _OosCache()


def buy_and_hold(engine: sa.Engine, digest: str, timeframe: str) -> dict[str, float]:
    """Metrics of holding the market over the out-of-sample bars stored under `digest`."""
    def compute() -> dict[str, float]:
        oos = registry.oos_frame(engine, digest)
        if "bar_return" not in oos.columns:
            return {}
        return strategy_metrics(oos["bar_return"], bars_per_year(timeframe))
    return _BENCHMARKS.get(digest, compute)


def ask_at_once(questions: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Each question's answer, asked concurrently over the engine's connection pool."""
    with ThreadPoolExecutor(max_workers=QUERY_THREADS, thread_name_prefix="brain-read") as pool:
        futures = {name: pool.submit(ask) for name, ask in questions.items()}
        return {name: future.result() for name, future in futures.items()}


class TtlCache:
    """The overview's rows for a few seconds: sorting, filtering and paging through 1,000 symbols
    reuse one read of the Brain instead of repeating its queries on every click.  The facts it holds
    change once a bar or a run at most; the page says how old they are."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._lock = threading.Lock()
        self._value: tuple[float, Any] | None = None

    def get(self, compute: Callable[[], Any]) -> tuple[Any, float]:
        """(value, its age in seconds); one caller computes while the others wait for its result."""
        with self._lock:
            clock = time.monotonic()
            if self._value is None or clock - self._value[0] > self.ttl:
                self._value = (clock, compute())
            return self._value[1], time.monotonic() - self._value[0]


def overview_rows(engine: sa.Engine, settings: Settings) -> list[OverviewRow]:
    """Every symbol the Brain knows, with its stored facts (no out-of-sample artifact is read)."""
    stamp = now()
    # Independent questions, asked at once over the connection pool: the overview waits for the
    # slowest query, not for their sum.
    questions: dict[str, Callable[[], Any]] = {
        "bars": lambda: dv.last_bars(engine, settings.exchange, settings.timeframe),
        "champions": lambda: dv.champion_rows(engine), "wf": lambda: dv.champion_metrics(engine, "walk_forward"),
        "live": lambda: dv.champion_metrics(engine, "live"),
        "bench": lambda: dv.benchmark_rows(engine, dv.BUY_AND_HOLD),
        "choices": lambda: dv.regime_choice_counts(engine), "signals": lambda: dv.latest_signals(engine) or {},
        "drift": lambda: dv.drift_counts(engine), "quality": lambda: dv.open_findings(engine),
        "runs": lambda: dv.last_run_states(engine), "versioned": lambda: dv.symbols_with_versions(engine)}
    answers = ask_at_once(questions)
    bars, champions, wf, live, bench, choices, signals, drift, quality, runs = (answers[k] for k in (
        "bars", "champions", "wf", "live", "bench", "choices", "signals", "drift", "quality", "runs"))
    universe = sorted(set().union(bars, champions, drift, quality, runs, answers["versioned"]))
    rows = []
    for symbol in universe:
        row = OverviewRow(symbol=symbol)
        champ = champions.get(symbol)
        if champ is not None:
            row.champion, row.champion_as_of = f"{champ.model_type} v{champ.version}", champ.as_of
            row.champion_since = champ.updated_at
            m = wf.get(symbol, {})
            row.sharpe, row.total_return = finite(m.get("sharpe")), finite(m.get("total_return"))
            row.max_drawdown = finite(m.get("max_drawdown"))
            row.champion_verdict = LOSES_TO_FLAT if loses_to_flat(m) else None
            row.live_sharpe = finite(live.get(symbol, {}).get("sharpe"))
        if symbol in bench:
            _set_benchmark(row, bench[symbol])
        row.chosen_regimes, row.tradeable_regimes = choices.get(symbol, (0, 0))
        if row.chosen_regimes:
            row.tradeable = "trades" if row.tradeable_regimes else "flat"
        elif champ is not None:
            # No per-regime choice: the champion is every regime's fallback, unless it loses to flat.
            row.tradeable = "flat" if row.champion_verdict else "trades"
        sig = signals.get(symbol)
        if sig is not None:
            row.regime_now = getattr(sig, "regime", None)
            if getattr(sig, "tradeable", None) is not None:
                row.tradeable = "trades" if sig.tradeable else "flat"
        last = bars.get(symbol)
        row.stale = True  # no data at all is not fresh data
        if last is not None:
            row.last_bar, row.data_age_seconds = last, (stamp - last).total_seconds()
            row.stale = row.data_age_seconds > settings.max_data_age
        if symbol in drift:
            row.drifted_features, row.drift_features = drift[symbol][0], drift[symbol][1]
        row.open_findings = sum(quality.get(symbol, {}).values())
        run = runs.get(symbol)
        if run is not None:
            row.run_state, row.run_id, row.run_error = run.state, run.run_id, run.error
        rows.append(row)
    return rows


def _set_benchmark(row: OverviewRow, metrics: dict[str, Any]) -> None:
    row.bh_total_return = finite(metrics.get("total_return"))
    row.bh_max_drawdown = finite(metrics.get("max_drawdown"))
    row.bh_sharpe = finite(metrics.get("sharpe"))
    if row.total_return is not None and row.bh_total_return is not None:
        row.excess_return = row.total_return - row.bh_total_return


def fill_benchmarks(engine: sa.Engine, settings: Settings, rows: Iterable[OverviewRow]) -> None:
    """Buy-and-hold from the champion's out-of-sample bars where no comparison row stores it."""
    missing = [r for r in rows if r.bh_total_return is None and r.champion is not None]
    if not missing:
        return
    champions = dv.champion_rows(engine)
    for row in missing:
        champ = champions.get(row.symbol)
        if champ is not None:
            _set_benchmark(row, buy_and_hold(engine, champ.oos_sha256, settings.timeframe))


def _matches(row: OverviewRow, q: str | None, tradeable: str | None, run_state: str | None, stale: bool | None,
             drifted: bool | None, findings: bool | None) -> bool:
    if q and q.lower() not in row.symbol.lower():
        return False
    if tradeable and row.tradeable != tradeable:
        return False
    if run_state and (row.run_state or "none") != run_state:
        return False
    if stale is not None and row.stale != stale:
        return False
    if drifted is not None and bool(row.drifted_features) != drifted:
        return False
    return findings is None or bool(row.open_findings) == findings


def overview_page(engine: sa.Engine, settings: Settings, *, q: str | None = None, tradeable: str | None = None,
                  run_state: str | None = None, stale: bool | None = None, drifted: bool | None = None,
                  findings: bool | None = None, sort: str = "symbol", order: str = "asc", page: int = 1,
                  per_page: int = PER_PAGE, cache: TtlCache | None = None) -> OverviewPage:
    """One page of the overview, filtered and sorted in the server; missing values sort last."""
    sort = sort if sort in SORT_KEYS else "symbol"
    order = "desc" if order == "desc" else "asc"
    per_page = max(1, min(int(per_page), MAX_PER_PAGE))
    if cache is None:
        rows, age = overview_rows(engine, settings), 0.0
    else:
        rows, age = cache.get(lambda: overview_rows(engine, settings))
    matched = [r for r in rows if _matches(r, q, tradeable, run_state, stale, drifted, findings)]
    if sort in _BENCH_KEYS:
        fill_benchmarks(engine, settings, matched)
    present = [r for r in matched if getattr(r, sort) is not None]
    absent = [r for r in matched if getattr(r, sort) is None]
    present.sort(key=lambda r: (getattr(r, sort), r.symbol), reverse=order == "desc")
    absent.sort(key=lambda r: r.symbol)
    ordered = present + absent
    pages = max(1, math.ceil(len(ordered) / per_page))
    page = max(1, min(int(page), pages))
    shown = ordered[(page - 1) * per_page:page * per_page]
    fill_benchmarks(engine, settings, shown)
    return OverviewPage(total=len(rows), matched=len(matched), page=page, per_page=per_page, pages=pages,
                        sort=sort, order=order, signals_table=dv.has_table(engine, dv.SIGNALS_TABLE),
                        age_seconds=round(age, 3), rows=shown)


# --- one symbol ----------------------------------------------------------------------------------

def _bucket_edges(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Start index of each bucket when `n` points are cut to at most `max_points`."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n, max_points, endpoint=False).astype(int))


def _iso(ts: pd.Series | pd.DatetimeIndex) -> list[str]:
    return [t.isoformat() for t in pd.DatetimeIndex(ts)]


def _clean(values: Iterable[Any]) -> list[float | None]:
    return [None if v is None or not math.isfinite(float(v)) else round(float(v), 6) for v in values]


def performance_series(oos: pd.DataFrame, timeframe: str) -> dict[str, Any]:
    """Equity of the strategy and of buy-and-hold, their underwater curves, rolling Sharpe, fold
    boundaries and regime segments over the out-of-sample bars, cut to at most MAX_POINTS points."""
    oos = oos.sort_values("ts", kind="stable").drop_duplicates("ts", keep="last").reset_index(drop=True)
    ts = pd.to_datetime(oos["ts"], utc=True)
    strat = pd.to_numeric(oos["strategy_return"], errors="coerce").fillna(0.0).to_numpy()
    market = pd.to_numeric(oos.get("bar_return", pd.Series(0.0, index=oos.index)), errors="coerce") \
        .fillna(0.0).to_numpy()
    equity, bh = np.cumprod(1.0 + strat), np.cumprod(1.0 + market)
    under = equity / np.maximum.accumulate(equity) - 1.0
    bh_under = bh / np.maximum.accumulate(bh) - 1.0
    ppy = bars_per_year(timeframe)
    per_day = max(2, int(round(ppy / 365)))
    window = int(min(per_day, max(2, len(strat) // 4)))
    roll = pd.Series(strat).rolling(window, min_periods=window)
    rolling_sharpe = (roll.mean() / roll.std(ddof=1) * math.sqrt(ppy)).replace([np.inf, -np.inf], np.nan).to_numpy()
    starts = _bucket_edges(len(ts))
    ends = np.append(starts[1:], len(ts)) - 1
    # Each bucket keeps its last equity and its deepest drawdown (a cut must never hide a drawdown).
    under_min = np.minimum.reduceat(under, starts) if len(starts) else under
    bh_under_min = np.minimum.reduceat(bh_under, starts) if len(starts) else bh_under
    out: dict[str, Any] = {
        "ts": _iso(ts.iloc[ends]), "equity": _clean(equity[ends]), "buy_and_hold": _clean(bh[ends]),
        "underwater": _clean(under_min), "bh_underwater": _clean(bh_under_min),
        "rolling_sharpe": _clean(rolling_sharpe[ends]), "rolling_window_bars": window, "n_bars": int(len(ts)),
        "strategy": strategy_metrics(strat, ppy), "benchmark": strategy_metrics(market, ppy),
    }
    out["folds"] = []
    if "fold" in oos.columns and len(oos):
        first = oos.groupby("fold", sort=False)["ts"].min().sort_values()
        out["folds"] = [{"fold": int(f), "start": pd.Timestamp(t).tz_convert("UTC").isoformat()}
                        for f, t in first.items()]
    out["regimes"] = _regime_segments(ts, oos["regime"].astype(str).to_numpy()) if "regime" in oos.columns else []
    return out


def _regime_segments(ts: pd.Series, regime: np.ndarray, max_segments: int = 600) -> list[dict[str, str]]:
    """Runs of one regime as (start, end, regime); very short runs merge into their neighbour when
    there are more than `max_segments`, so the strip stays readable and light."""
    if len(regime) == 0:
        return []
    change = np.flatnonzero(np.r_[True, regime[1:] != regime[:-1]])
    if len(change) > max_segments:
        keep = _bucket_edges(len(regime), max_segments)
        change = np.unique(np.r_[0, keep])
    times = pd.DatetimeIndex(ts)
    stops = np.append(change[1:], len(regime))
    step = times[-1] - times[-2] if len(times) > 1 else pd.Timedelta(minutes=5)
    segments = []
    for a, b in zip(change, stops):
        end = times[b] if b < len(times) else times[-1] + step
        segments.append({"start": times[a].isoformat(), "end": end.isoformat(), "regime": str(regime[a])})
    return segments


def importance_matrix(rows: list[Any], focus: tuple[str, int] | None) -> dict[str, Any]:
    """Features x versions: each version's share of total absolute importance, by its preferred
    method; features are the focus version's top ones (else the most important on average)."""
    by_version: dict[tuple[str, int], dict[str, list[Any]]] = {}
    for r in rows:
        by_version.setdefault((r.model_type, r.version), {}).setdefault(r.method, []).append(r)
    order = {m: i for i, m in enumerate(IMPORTANCE_METHODS)}
    shares: dict[tuple[str, int], dict[str, float]] = {}
    methods: dict[tuple[str, int], str] = {}
    for key, per_method in by_version.items():
        method = min(per_method, key=lambda m: (order.get(m, len(order)), m))
        # A negative permutation drop (shuffling helped) is no importance at all, not a large one.
        kept = {r.feature: max(0.0, float(r.importance)) for r in per_method[method]}
        total = sum(kept.values()) or 1.0
        shares[key] = {f: v / total for f, v in kept.items()}
        methods[key] = method
    if not shares:
        return {"features": [], "versions": [], "z": [], "methods": []}
    versions = sorted(shares, key=lambda k: (k[0], k[1]))
    if focus in shares:
        ranked = sorted(shares[focus], key=lambda f: -shares[focus][f])
    else:
        mean = pd.DataFrame(shares).fillna(0.0).mean(axis=1)
        ranked = list(mean.sort_values(ascending=False).index)
    features = ranked[:TOP_FEATURES]
    return {"features": features, "versions": [f"{t} v{v}" for t, v in versions],
            "methods": [methods[k] for k in versions],
            "z": [[_round(shares[k].get(f)) for k in versions] for f in features]}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 5)


def _dump(row: Any, names: Iterable[str]) -> dict[str, Any]:
    return {n: getattr(row, n, None) for n in names}


def _series_of(engine: sa.Engine, digest: str, timeframe: str) -> dict[str, Any] | None:
    oos = registry.oos_frame(engine, digest)
    if not len(oos) or not {"ts", "strategy_return"} <= set(oos.columns):
        return None
    return performance_series(oos, timeframe)


# Chart series by artifact: an artifact never changes, so neither do its series (a year of 5m bars
# takes a few hundred milliseconds to read, check and cut; the cached series a few microseconds).
_SERIES = _OosCache(size=64)


def symbol_detail(engine: sa.Engine, settings: Settings, symbol: str) -> dict[str, Any] | None:
    """Everything the symbol page shows; None when the Brain knows nothing of `symbol`."""
    versions = dv.versions(engine, symbol)
    runs = dv.symbol_runs(engine, symbol)
    total, findings = dv.findings(engine, symbol=symbol, limit=100)
    drift = dv.drift_history(engine, symbol)
    last = store.last_timestamp(engine, "candles", exchange=settings.exchange, symbol=symbol,
                                timeframe=settings.timeframe)
    if not (versions or runs or findings or drift or last is not None):
        return None
    champion = next((v for v in versions if v.status == ChampionStatus.CHAMPION), None)
    from brain_tasks.ml.sizing import SIZERS  # here: gymnasium is not worth importing for the overview

    comparisons = dv.latest_comparisons(engine, symbol)
    # The sizer's rows (ppo_sizer and the two rules it is judged against) rank sizing rules of one
    # version, not models: they are a table of their own.
    models_compared = [c for c in comparisons if c.model_type not in SIZERS]
    sizers_compared = [c for c in comparisons if c.model_type in SIZERS]
    focus = champion
    if focus is None and versions:
        best = next((c for c in models_compared if c.is_best), None)
        focus = next((v for v in versions if best is not None and (v.model_type, v.version) ==
                      (best.model_type, best.version)), versions[-1])
    metrics = dv.version_metrics(engine, symbol)
    champion_wf = {} if champion is None else metrics.get((champion.model_type, champion.version), {}).get(
        "walk_forward", {})
    detail: dict[str, Any] = {
        "symbol": symbol,
        "champion": None if champion is None else {"model_type": champion.model_type, "version": champion.version,
                                                   "as_of": champion.as_of, "since": champion.updated_at,
                                                   "verdict": LOSES_TO_FLAT if loses_to_flat(champion_wf) else None,
                                                   "sharpe": finite(champion_wf.get("sharpe")),
                                                   "total_return": finite(champion_wf.get("total_return"))},
        "focus": None if focus is None else {"model_type": focus.model_type, "version": focus.version,
                                             "as_of": focus.as_of, "status": focus.status},
        "last_bar": last, "data_age_seconds": None if last is None else (now() - last).total_seconds(),
        "versions": [dict(_dump(v, ("model_type", "version", "as_of", "status", "composite_score", "created_at",
                                    "updated_at", "data_start", "data_end", "n_rows")),
                          metrics=metrics.get((v.model_type, v.version), {})) for v in reversed(versions)],
        "events": dv.version_events(engine, symbol),
        "comparisons": [dict(_dump(c, ("as_of", "model_type", "version", "composite_score", "is_best", "metrics")),
                             rank=i + 1) for i, c in enumerate(models_compared)],
        "sizing": [dict(_dump(c, ("as_of", "model_type", "version", "composite_score", "is_best", "metrics")),
                        rank=i + 1) for i, c in enumerate(sizers_compared)],
        "regime_choice": [_dump(c, ("regime", "model_type", "version", "confidence", "tradeable", "reason", "as_of"))
                          for c in sorted(dv.regime_choices(engine, symbol),
                                          key=lambda c: (REGIMES.index(c.regime) if c.regime in REGIMES else 99))],
        "drift": [_dump(d, ("feature", "as_of", "psi", "psi_threshold", "ks_stat", "ks_pvalue", "drifted",
                            "effect_size", "n_reference", "n_current")) for d in drift],
        "importance": importance_matrix(dv.importance_by_version(engine, symbol),
                                        None if focus is None else (focus.model_type, focus.version)),
        "findings_open": sum(1 for f in findings if not f.resolved), "findings_total": total,
        "findings": [_dump(f, ("source", "data_kind", "check", "severity", "ts_start", "ts_end", "resolved",
                               "first_seen", "last_seen", "details")) for f in findings],
        "runs": [_dump(r, ("run_id", "as_of", "state", "error", "started_at", "finished_at")) for r in runs],
        "performance": None,
    }
    signals = dv.signals_of(engine, symbol)
    detail["signals_table"] = signals is not None
    # The decision context is for the audit, not for reading.
    detail["signals"] = ([{k: v for k, v in r._mapping.items() if k != "context"} for r in signals]
                         if signals is not None else [])
    detail["latest_signal"] = latest_signal_facts(detail["signals"][0] if detail["signals"] else None, settings)
    detail["audit"] = audit_panel(engine, symbol)
    if focus is not None:
        detail["performance"] = _SERIES.get(f"{focus.oos_sha256}:{settings.timeframe}",
                                            lambda: _series_of(engine, focus.oos_sha256, settings.timeframe))
    return detail


def latest_signal_facts(row: dict[str, Any] | None, settings: Settings) -> dict[str, Any] | None:
    """The newest signal's gates as the symbol page shows them: its distribution status and its model's
    age against BRAIN_MODEL_MAX_AGE (None before the first signal; `judged` False for rows served
    before the gates)."""
    if row is None:
        return None
    age = row.get("model_age_seconds")
    limit = settings.model_max_age
    version = row.get("version")
    return {"ts": row.get("ts"), "model": f"{row.get('model_type')} v{version}" if version else row.get("model_type"),
            "tradeable": bool(row.get("tradeable")), "judged": row.get("in_distribution") is not None,
            "in_distribution": row.get("in_distribution") is not False,
            "dissimilarity": row.get("dissimilarity"), "model_age_seconds": age, "max_age_seconds": limit,
            "expired": bool(limit and age is not None and age > limit)}


def audit_panel(engine: sa.Engine, symbol: str) -> dict[str, Any] | None:
    """The nightly audit of the symbol's served signals: counts and the newest verdicts, mismatches
    first (None while the `signal_audits` table does not exist)."""
    from brain_tasks.brain import audits

    if not dv.has_table(engine, "signal_audits"):
        return None
    rows = audits.listing(engine, symbol, mismatches=True, limit=20) + audits.listing(engine, symbol, limit=20)
    seen, shown = set(), []
    for r in rows:
        key = (r["ts"], r["model_type"], r["version"])
        if key not in seen:
            seen.add(key)
            shown.append({k: r[k] for k in ("ts", "model_type", "version", "same", "audited_at", "note")})
    return {**audits.counts(engine, symbol), "rows": shown[:20]}


# --- runs and quality ----------------------------------------------------------------------------

def runs_overview(engine: sa.Engine, limit: int = 50) -> dict[str, Any]:
    return {"runs": dv.recent_runs(engine, limit), "failures": dv.failed_symbol_runs(engine, limit=100)}


def run_detail(engine: sa.Engine, run_id: str) -> dict[str, Any] | None:
    attempts = dv.run_attempts(engine, run_id)
    if not attempts:
        return None
    latest = attempts[0]
    total = len(latest["symbols"])
    done = sum(n for state, n in latest["counts"].items() if state not in OPEN)
    return {"run_id": run_id, "state": latest["state"], "total": total, "done": done,
            "finished": latest["state"] not in OPEN, "attempts": attempts}


def quality_page(engine: sa.Engine, *, status: str = "open", symbol: str | None = None, page: int = 1,
                 per_page: int = 100) -> dict[str, Any]:
    resolved = {"open": False, "resolved": True}.get(status)
    per_page = max(1, min(int(per_page), MAX_PER_PAGE))
    total, rows = dv.findings(engine, resolved=resolved, symbol=symbol or None, limit=per_page,
                              offset=(max(1, int(page)) - 1) * per_page)
    return {"status": status if resolved is not None else "all", "symbol": symbol, "total": total,
            "page": max(1, int(page)), "per_page": per_page, "pages": max(1, math.ceil(total / per_page)),
            "findings": [_dump(f, ("source", "symbol", "timeframe", "data_kind", "check", "severity", "ts_start",
                                   "ts_end", "resolved", "resolved_at", "first_seen", "last_seen", "details"))
                         for f in rows]}
