"""The work behind each task, as plain functions: an engine and ids in, a small JSON-safe dict out.

Celery knows nothing of this module's internals and this module knows nothing of Celery: `tasks.py`
wraps each function in a few lines, the CLI's sequential path and `bench/fanout.py` call them
directly.  Every function is idempotent on its natural key: finished work is found and returned,
not redone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any, Sequence

import numpy as np
import pandas as pd
import sqlalchemy as sa

from brain_tasks import __version__
from brain_tasks.brain import registry, runs, store
from brain_tasks.brain.locks import claim
from brain_tasks.brain.models import ModelManifest
from brain_tasks.errors import DataError
from brain_tasks.settings import Settings

# Chain statuses: `stale` ends a symbol's chain like a failure (no promotion) but says why.
OK, FAILED, SKIPPED, STALE = "succeeded", "failed", "skipped", "stale"
now = registry.now


def _day_end(as_of: dt.date) -> dt.datetime:
    """Data visible on an as-of date: everything strictly before the next UTC midnight."""
    return dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)


# --- configuration -------------------------------------------------------------------------------

def train_config(settings: Settings) -> Any:
    from brain_tasks.ml.pipeline import TrainConfig

    return TrainConfig(timeframe=settings.timeframe, seed=settings.seed)


# --- reading market data -------------------------------------------------------------------------

def load_market(engine: sa.Engine, settings: Settings, symbol: str, end: dt.datetime | None = None,
                start: dt.datetime | None = None) -> dict[str, pd.DataFrame | None]:
    """Candles and whatever funding / open interest / liquidations / sentiment the Brain holds for `symbol`.

    On PostgreSQL each frame is read column-wise (`store` packs the rows server-side): 0.2-0.4 s for a
    year of 5m bars with funding, open interest and liquidations, 3-4x faster than row by row.  The
    few reads of one symbol's chain (one per model type, one in rollback) are not cached: checking
    that the stored rows are unchanged would itself cost about a quarter of a read, and a chain's
    tasks mostly run in different processes (bench/profile_symbol.py prints the figures).  One
    connection serves the five reads.
    """
    ex = settings.exchange
    with engine.connect() as conn:
        candles = store.read_candles(conn, ex, symbol, settings.timeframe, start=start, end=end)
        if candles.empty:
            raise DataError(f"no {settings.timeframe} candles stored for {symbol!r} on {ex!r}"
                            + (f" before {end:%Y-%m-%d %H:%M}" if end else ""))
        extra: dict[str, pd.DataFrame | None] = {}
        for key, reader in (("funding", store.read_funding), ("open_interest", store.read_open_interest),
                            ("liquidations", store.read_liquidations)):
            frame = reader(conn, ex, symbol, start=start, end=end)
            extra[key] = frame if len(frame) else None
        # Hourly news sentiment of the symbol's base asset, when any feed covers it (ml.features adds its
        # features only then, so the feature hash says which case a version is).
        sentiment = store.read_sentiment(conn, symbol, start=start, end=end)
    extra["sentiment"] = sentiment if len(sentiment) else None
    return {"candles": candles, **extra}


def _market_kwargs(market: dict[str, pd.DataFrame | None]) -> dict[str, pd.DataFrame | None]:
    return {k: v for k, v in market.items() if k != "candles"}


# --- artifacts (kept under these names for callers of the first round) ---------------------------

get_artifact = registry.load_artifact
oos_frame = registry.oos_frame
find_version = registry.find_version


def load_version(engine: sa.Engine, manifest: ModelManifest) -> Any:
    from brain_tasks.ml.models import load_model

    fmt, data = registry.load_artifact(engine, manifest.artifact_sha256)
    return load_model(fmt, data)


# --- train ---------------------------------------------------------------------------------------

def _stale(settings: Settings, candles: pd.DataFrame, as_of: dt.date) -> str | None:
    """Why the newest bar is too old to train on as of `as_of`, or None when it is fresh enough."""
    newest = pd.Timestamp(candles["ts"].iloc[-1]).to_pydatetime()
    age = _day_end(as_of) - newest
    if age.total_seconds() <= settings.max_data_age:
        return None
    return (f"the newest stored bar ({newest:%Y-%m-%d %H:%M} UTC) is {age.total_seconds() / 86400:.1f} days "
            f"older than the end of {as_of.isoformat()}; more than the allowed {settings.max_data_age} s "
            "(BRAIN_MAX_DATA_AGE): collect fresh data or retrain as of an earlier day")


def train_symbol(engine: sa.Engine, settings: Settings, symbol: str, model_type: str,
                 as_of: dt.date) -> dict[str, Any]:
    """Walk-forward train one (symbol, model type, as-of) and register the new version.

    Identity = (symbol, model type, as-of, config hash): a finished identity is returned as it is; a
    claim makes a concurrent copy wait and then find the finished one (the claim covers every training
    of the (symbol, model type), which share one sequence of version numbers).  Inputs identical to an
    earlier version's (same config, same dataset digest) return that version: nothing new is learnt
    from the same data.  Data older than `settings.max_data_age` at the as-of day's end is `stale`.
    """
    from brain_tasks.ml.pipeline import build_dataset, dataset_digest, train_and_evaluate

    started, cpu_started = time.perf_counter(), time.process_time()
    config = train_config(settings)
    chash = config.config_hash()
    base = {"symbol": symbol, "model_type": model_type, "as_of": as_of.isoformat(), "config_hash": chash}

    def answer(version: ModelManifest, trained: bool, reason: str, **extra: Any) -> dict[str, Any]:
        return {**base, "status": OK, "version": version.version, "trained": trained, "reason": reason,
                **extra, "seconds": round(time.perf_counter() - started, 4)}

    done = registry.find_version(engine, symbol, model_type, as_of, chash)
    if done is not None:
        return answer(done, False, f"{model_type} v{done.version} was already trained for this as-of date and config")
    with claim(engine, f"train:{symbol}:{model_type}"):
        done = registry.find_version(engine, symbol, model_type, as_of, chash)
        if done is not None:
            return answer(done, False, f"{model_type} v{done.version} was trained meanwhile by another copy")
        market = load_market(engine, settings, symbol, end=_day_end(as_of))
        stale = _stale(settings, market["candles"], as_of)
        if stale:
            registry.record_finding(engine, source=settings.exchange, symbol=symbol, timeframe=settings.timeframe,
                                    data_kind="candles", check="stale", day=as_of, details={"error": stale},
                                    severity="warning")
            return {**base, "status": STALE, "error": stale, "seconds": round(time.perf_counter() - started, 4)}
        dataset = build_dataset(market["candles"], config, **_market_kwargs(market))
        same = registry.find_same_inputs(engine, symbol, model_type, chash, dataset_digest(*dataset[:2]))
        if same is not None:
            return answer(same, False, f"inputs unchanged: {model_type} v{same.version} (as of {same.as_of}) was "
                          "trained on the same data with the same config", reused_as_of=same.as_of.isoformat())
        # Importance is computed here, out of sample: each fold's model on its own test block.
        result = train_and_evaluate(market["candles"], model_type, config, **_market_kwargs(market),
                                    with_importance=True, dataset=dataset, device=settings.device)
        version = registry.register_version(engine, symbol, model_type, as_of, config=config.to_dict(),
                                            config_hash=chash, result=result, code_version=__version__,
                                            seed=config.seed)
    # CPU seconds: the whole task (reads and writes included), and of it the walk-forward without the
    # importance and the importance alone, so a fan-out can tell what importance costs next to training.
    return {**base, "status": OK, "version": version, "trained": True, "reason": "trained",
            "seconds": round(time.perf_counter() - started, 4), "cpu_s": round(time.process_time() - cpu_started, 4),
            "train_cpu_s": round(result.train_cpu_s, 4), "importance_cpu_s": round(result.importance_cpu_s, 4)}


# --- compare -------------------------------------------------------------------------------------

def _results(train_results: Any) -> list[dict[str, Any]]:
    items = train_results if isinstance(train_results, list) else [train_results]
    return [r for r in items if isinstance(r, dict)]


def compare_models(engine: sa.Engine, settings: Settings, train_results: Any, symbol: str,
                   as_of: dt.date) -> dict[str, Any]:
    """Rank this run's versions of `symbol` by composite score; name the best candidate.

    When every model type came back with a version of an earlier day on identical inputs, nothing is
    new: the chain goes on as `unchanged` and writes nothing."""
    from brain_tasks.ml.metrics import bars_per_year, composite_score
    from brain_tasks.ml.regimes import benchmark_metrics

    results = _results(train_results)
    failures = {r.get("model_type", "?"): r.get("error", "failed") for r in results if r.get("status") != OK}
    chash = train_config(settings).config_hash()
    base = {"symbol": symbol, "as_of": as_of.isoformat(), "config_hash": chash, "failed_models": failures}
    stale = [r for r in results if r.get("status") == STALE]
    if stale:
        return {**base, "status": STALE, "error": stale[0]["error"]}
    done = [r for r in results if r.get("status") == OK]
    if not done:
        errors = "; ".join(f"{m}: {e}" for m, e in failures.items()) or "no model was trained"
        return {**base, "status": FAILED, "error": errors}
    versions = [registry.manifest(engine, symbol, r["model_type"], int(r["version"])) for r in done]
    scored = []
    for v in versions:
        overall = registry.metrics_of(engine, symbol, v.model_type, v.version).get("all", {})
        scored.append((composite_score(overall), v, overall))
    scored.sort(key=lambda item: (-item[0], item[1].model_type))
    best = scored[0][1]
    out = {**base, "status": OK, "best": {"model_type": best.model_type, "version": best.version},
           "ranking": [v.model_type for _, v, _ in scored],
           "versions": {v.model_type: v.version for v in versions}}
    if all(r.get("reused_as_of") for r in done):
        return {**out, "unchanged": True}
    rows = [dict(model_type=v.model_type, version=v.version, composite_score=float(score), is_best=v is best,
                 metrics=store.jsonable(overall)) for score, v, overall in scored]
    # Flat and buy-and-hold on the best candidate's out-of-sample bars: what a model must beat.
    bench = benchmark_metrics(registry.oos_frame(engine, best.oos_sha256), bars_per_year(settings.timeframe))
    rows += [dict(model_type=name, version=0, composite_score=float(m["composite"]), is_best=False,
                  metrics=store.jsonable(m)) for name, m in bench.items()]
    rows.sort(key=lambda r: (-r["composite_score"], not r["is_best"], r["model_type"]))
    registry.write_comparisons(engine, [dict(symbol=symbol, as_of=as_of, config_hash=chash, rank=i + 1, **r)
                                        for i, r in enumerate(rows)])
    return {**out, "benchmarks": {name: round(float(m["composite"]), 6) for name, m in bench.items()}}


def _run_versions(engine: sa.Engine, symbol: str, prev: dict[str, Any]) -> list[ModelManifest]:
    return [registry.manifest(engine, symbol, m, int(v)) for m, v in sorted(prev.get("versions", {}).items())]


# --- importance ----------------------------------------------------------------------------------

def _rebuild(engine: sa.Engine, settings: Settings, manifest: ModelManifest) -> tuple[dict[str, Any], tuple]:
    """The market window a version was trained on and its `build_dataset` result, refused unless the
    digest proves it is the very training set of the manifest."""
    from brain_tasks.ml.pipeline import TrainConfig, build_dataset, dataset_digest

    market = load_market(engine, settings, manifest.symbol, start=manifest.data_start,
                         end=manifest.data_end + dt.timedelta(microseconds=1))
    dataset = build_dataset(market["candles"], TrainConfig.from_dict(manifest.config), **_market_kwargs(market))
    X, y, _bar = dataset
    if list(X.columns) != list(manifest.feature_names) or dataset_digest(X, y) != manifest.dataset_digest:
        raise DataError(f"{manifest.symbol} {manifest.model_type} v{manifest.version}: the stored data no longer "
                        "rebuilds the training set recorded in its manifest")
    return market, dataset


def dataset_for(engine: sa.Engine, settings: Settings, manifest: ModelManifest) -> tuple[pd.DataFrame, pd.Series]:
    """The feature matrix and label a version was trained on, rebuilt from the Brain (the digest
    proves it is the same data)."""
    _market, (X, y, _bar) = _rebuild(engine, settings, manifest)
    return X, y


def compute_importance(engine: sa.Engine, settings: Settings, prev: dict[str, Any], symbol: str,
                       as_of: dt.date) -> dict[str, Any]:
    """Make sure every version of this run has its out-of-sample importance.  Training stores it; a
    version without it (trained before importance moved out of sample, or by an older worker) gets it
    by re-running its walk-forward on the rebuilt, digest-checked dataset (deterministic, so the same
    folds and models)."""
    from brain_tasks.ml.pipeline import TrainConfig, train_and_evaluate

    if prev.get("status") != OK or prev.get("unchanged"):
        return prev
    written = {}
    for manifest in _run_versions(engine, symbol, prev):
        have = registry.importance_count(engine, symbol, manifest.model_type, manifest.version)
        if not have:
            market, dataset = _rebuild(engine, settings, manifest)
            result = train_and_evaluate(market["candles"], manifest.model_type, TrainConfig.from_dict(manifest.config),
                                        **_market_kwargs(market), with_importance=True, dataset=dataset)
            rows = registry.importance_rows(symbol, manifest.model_type, manifest.version, manifest.as_of,
                                            result.importance)
            registry.write_importance(engine, rows)
            have = len(rows)
        written[manifest.model_type] = int(have)
    return {**prev, "importance_rows": written}


# --- rollback ------------------------------------------------------------------------------------

def out_of_time_returns(engine: sa.Engine, settings: Settings, manifest: ModelManifest, start: dt.datetime,
                        end: dt.datetime) -> pd.Series:
    """A version's strategy returns on the bars in (start, end]: features rebuilt with its own stored
    config, predictions from its own artifact, its own costs and execution lag."""
    from brain_tasks.ml.features import timeframe_seconds
    from brain_tasks.ml.metrics import strategy_returns
    from brain_tasks.ml.pipeline import TrainConfig, build_dataset

    config = TrainConfig.from_dict(manifest.config)
    # Enough earlier bars for every rolling feature and the regime lookback to be warm at `start`.
    warmup = dt.timedelta(seconds=timeframe_seconds(config.timeframe) * (config.regime_lookback + 2 * 288))
    market = load_market(engine, settings, manifest.symbol, start=start - warmup, end=end)
    try:
        X, _y, bar = build_dataset(market["candles"], dataclasses.replace(config, min_rows=1),
                                   **_market_kwargs(market))
    except DataError:
        return pd.Series(dtype=float)
    keep = X.index > pd.Timestamp(start)
    X, bar = X[keep], bar[keep]
    if X.empty:
        return pd.Series(dtype=float)
    pred = load_version(engine, manifest).predict(X.reindex(columns=manifest.feature_names))
    return pd.Series(strategy_returns(pd.Series(pred, index=X.index), bar, config.cost_bps).to_numpy(),
                     index=X.index)


def recent_returns(engine: sa.Engine, settings: Settings, candidate: ModelManifest,
                   champion: ModelManifest) -> tuple[pd.Series, pd.Series]:
    """Strategy returns of candidate and champion on the same recent window, out of time for both.

    The window is the candidate's walk-forward out-of-sample bars that come after everything the
    champion was trained on (bars the champion saw would flatter it).
    """
    from brain_tasks.ml.metrics import strategy_returns

    oos = registry.oos_frame(engine, candidate.oos_sha256)
    oos = oos[pd.to_datetime(oos["ts"], utc=True) > pd.Timestamp(champion.data_end)]
    if oos.empty:
        empty = pd.Series(dtype=float)
        return empty, empty
    X, _y = dataset_for(engine, settings, candidate)
    X = X.loc[X.index.isin(pd.DatetimeIndex(pd.to_datetime(oos["ts"], utc=True)))]
    champion_X = X.reindex(columns=champion.feature_names)
    champion_pred = load_version(engine, champion).predict(champion_X)
    cost = float(candidate.config.get("cost_bps", 0.0))
    indexed = oos.set_index(pd.DatetimeIndex(pd.to_datetime(oos["ts"], utc=True)))
    bar = indexed["bar_return"].loc[X.index]
    champ = strategy_returns(pd.Series(champion_pred, index=X.index), bar, cost)
    cand = indexed["strategy_return"].loc[X.index]
    return cand, champ


def _label(m: Any) -> str:
    return f"{m.model_type} v{m.version}"


def check_rollback(engine: sa.Engine, settings: Settings, prev: dict[str, Any], symbol: str,
                   as_of: dt.date) -> dict[str, Any]:
    """Decide whether this run's best version (the candidate) replaces the champion.

    - no champion yet: promote;
    - the candidate is already the champion, or nothing changed: nothing to decide;
    - trained as of a day before the champion's (a backfill): recorded, never promoted;
    - otherwise both trade the candidate's out-of-sample bars after the champion's training data, and
      the candidate is promoted unless it is significantly worse there (keep) or there are too few such
      bars to tell (insufficient_evidence: the champion stays).
    A claim per symbol orders concurrent decisions; the decision's log row makes a repeat a no-op.
    """
    from brain_tasks.ml.rollback import promotion_decision

    if prev.get("status") != OK:
        return prev
    if prev.get("unchanged"):
        return {**prev, "rollback": {"action": "unchanged", "reason": "inputs unchanged since the versions of "
                                     "an earlier day: nothing to decide"}}
    chash = prev["config_hash"]
    with claim(engine, f"champion:{symbol}"):
        logged = registry.logged_decision(engine, symbol, as_of, chash)
        if logged is None:
            logged = registry.apply_decision(engine, _decide(engine, settings, prev, symbol, as_of,
                                                             promotion_decision))
    return {**prev, "rollback": {"action": logged.action, "reason": logged.reason}}


def _decide(engine: sa.Engine, settings: Settings, prev: dict[str, Any], symbol: str, as_of: dt.date,
            rule: Any) -> registry.Decision:
    best = prev["best"]
    candidate = registry.manifest(engine, symbol, best["model_type"], int(best["version"]))
    current = registry.champion(engine, symbol)

    def decision(action: str, reason: str, stats: dict[str, Any] | None = None) -> registry.Decision:
        return registry.Decision(symbol=symbol, as_of=as_of, config_hash=prev["config_hash"], action=action,
                                 model_type=candidate.model_type, version=candidate.version,
                                 champion=(current.model_type, current.version) if current else None,
                                 reason=reason, stats=stats or {})

    if current is None:
        return decision("promote", f"{_label(candidate)} becomes the first champion of {symbol}")
    if (current.model_type, current.version) == (candidate.model_type, candidate.version):
        return decision("keep", f"{_label(candidate)} is already the champion")
    if as_of < current.as_of:
        return decision("backfill", f"{_label(candidate)} was trained as of {as_of}, before the champion "
                        f"{_label(current)} (as of {current.as_of}): recorded as a backfill, not promoted")
    cand_r, champ_r = recent_returns(engine, settings, candidate, current)
    verdict = rule(cand_r, champ_r, alpha=0.05, min_samples=settings.min_evidence_bars)
    subject = {"promote": f"{_label(candidate)} replaces {_label(current)}",
               "keep": f"{_label(current)} stays champion over {_label(candidate)}",
               "insufficient_evidence": f"{_label(current)} stays champion; {_label(candidate)} is not promoted"}
    return decision(verdict.action, f"{subject[verdict.action]}: {verdict.reason}", store.jsonable(verdict.stats))


# --- select --------------------------------------------------------------------------------------

def select_model(engine: sa.Engine, settings: Settings, prev: dict[str, Any], symbol: str,
                 as_of: dt.date) -> dict[str, Any]:
    """Pick what to trade in each volatility regime (and overall) among this run's versions that were
    not rejected, buy-and-hold and flat: a candidate is chosen only when its deflated Sharpe ratio over
    every trial reaches `settings.dsr_level`, else the choice is flat (not tradeable, with the reason).
    A backfill or an unchanged run leaves the current choice alone."""
    from brain_tasks.ml.metrics import bars_per_year
    from brain_tasks.ml.regimes import select_per_regime

    action = (prev.get("rollback") or {}).get("action")
    current = registry.regime_choice(engine, symbol)
    if current and min(c["as_of"] for c in current.values()) >= as_of:
        # Selected already for this day (a repeated step) or for a later one: finished work stands.
        prev = {**prev, "selection": {k: v["model_type"] for k, v in current.items()},
                "tradeable": sorted(k for k, v in current.items() if v["tradeable"])}
    elif prev.get("status") == OK and action not in ("backfill", "unchanged"):
        rows = {(r.model_type, r.version): r for r in registry.registry_rows(engine, symbol)}
        versions = [v for v in _run_versions(engine, symbol, prev)
                    if rows[(v.model_type, v.version)].status not in (registry.REJECTED, registry.BACKFILL)]
        oos = {v.model_type: registry.oos_frame(engine, v.oos_sha256) for v in versions}
        by_type = {v.model_type: v.version for v in versions}
        # Every configuration tried for the symbol counts as trials of the deflated Sharpe ratio.
        configs = len({m.config_hash for m in registry.manifests(engine, symbol)})
        n_trials = None if configs <= 1 else configs * (len(oos) + 1) * 5
        choice = select_per_regime(oos, periods_per_year=bars_per_year(settings.timeframe), n_trials=n_trials,
                                   dsr_level=settings.dsr_level, previous=registry.previous_choice(engine, symbol))
        registry.write_regime_choice(engine, symbol, as_of, {
            regime: {**{k: v for k, v in c.items() if k not in ("model",)}, "model_type": c["model"],
                     "version": by_type.get(c["model"])}
            for regime, c in choice.items()})
        prev = {**prev, "selection": {k: v["model"] for k, v in choice.items()},
                "tradeable": sorted(k for k, v in choice.items() if v["tradeable"])}
    return prev


# --- runs ----------------------------------------------------------------------------------------

def start_attempt(engine: sa.Engine, settings: Settings, kind: str, run_id: str, attempt_id: str, as_of: dt.date,
                  symbols: Sequence[str], models: Sequence[str]) -> None:
    """The attempt's rows, every symbol pending (`brain.runs.start_attempt`)."""
    deadline = now() + dt.timedelta(seconds=settings.stall_timeout)
    runs.start_attempt(engine, run_id, attempt_id, kind, as_of, symbols, models, deadline)


def summarize_attempt(engine: sa.Engine, results: Any, run_id: str, attempt_id: str | None) -> dict[str, Any]:
    """Close the attempt from its rows once the fan-out's chord is done.  An outcome the chord delivered
    that its row lacks (its last step could not write it) is written first; a symbol with neither is
    failed with the reason, since nothing of it is left to run."""
    attempt_id = attempt_id or runs.latest_attempt(engine, run_id)
    if attempt_id is None:
        return {"run_id": run_id, "attempt_id": None, "state": "unknown"}
    delivered = {r["symbol"]: r for r in (results if isinstance(results, list) else [results])
                 if isinstance(r, dict) and isinstance(r.get("symbol"), str)}
    for row in runs.open_symbols(engine, attempt_id):
        if row.symbol in delivered:
            runs.record_symbol_state(engine, attempt_id, row.symbol, delivered[row.symbol])
        else:
            runs.fail_symbol(engine, attempt_id, row.symbol, "the fan-out finished without this symbol's outcome")
    return runs.close_attempt(engine, attempt_id) or {"run_id": run_id, "attempt_id": attempt_id, "state": "unknown"}


# --- failures ------------------------------------------------------------------------------------

def record_task_failure(engine: sa.Engine, settings: Settings, symbol: str, data_kind: str, check: str,
                        error: BaseException | str, as_of: dt.date | None = None) -> None:
    """A domain error as a data-quality row: logged once per (symbol, check, day), never retried."""
    registry.record_finding(engine, source=settings.exchange, symbol=printable(symbol)[:64],
                            timeframe=settings.timeframe, data_kind=data_kind, check=check,
                            day=as_of or now().date(), details={"error": printable(str(error))[:2000]})


def printable(text: str) -> str:
    """`text` with control characters escaped: a NUL byte must not stop a failure from being recorded."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# --- nightly -------------------------------------------------------------------------------------

def champion_of(engine: sa.Engine, symbol: str) -> ModelManifest | None:
    return registry.champion(engine, symbol)


# Calendar features are uniform over a week by construction: a recent window shorter than a week
# "drifts" in them whatever the market does, so they are not tested.
CALENDAR_FEATURES = ("tod_sin", "tod_cos", "dow_sin", "dow_cos")
RECENT_WINDOW = dt.timedelta(days=7)  # at most; see analyse_symbol


def analyse_symbol(engine: sa.Engine, settings: Settings, symbol: str, as_of: dt.date) -> dict[str, Any]:
    """The nightly look at one symbol: the live metrics of the signals it served, the champion's
    out-of-time check against the previous champion (and automatic rollback), drift of its features
    (the last day against the days before) and its importance trend."""
    champion = registry.champion(engine, symbol)
    if champion is None:
        return {"symbol": symbol, "status": SKIPPED, "reason": "no champion model yet"}
    from brain_tasks.publish import track_live

    # What the served signals earned on the bars that followed them (evaluation 'live').
    served = track_live(engine, settings, as_of, [symbol]).get(symbol, {})
    live = live_check(engine, settings, symbol, as_of)
    champion = registry.champion(engine, symbol) or champion  # a rollback changed it
    drift = _drift(engine, settings, champion, as_of)
    movers: list[dict[str, Any]] = []
    history = registry.importance_history(engine, symbol, champion.model_type)
    if len(history):
        from brain_tasks.ml.importance import rank_changes

        trend = rank_changes(history)
        moved = trend[trend["rank_change"] != 0]
        movers = store.jsonable(moved.reindex(moved["rank_change"].abs().sort_values(ascending=False).index)
                                .head(5).to_dict("records"))
    return {"symbol": symbol, "status": OK, "live": live, "live_bars": served, **drift, "importance_movers": movers}


def _drift(engine: sa.Engine, settings: Settings, champion: ModelManifest, as_of: dt.date) -> dict[str, Any]:
    """The champion's features over the last day (at least 168 bars) against the four times as many
    bars before it (`ml.drift.drift_windows`), tested with the autocorrelation taken into account."""
    from brain_tasks.ml.drift import drift_windows, feature_drift
    from brain_tasks.ml.features import make_features, usable_candles

    symbol = champion.symbol
    market = load_market(engine, settings, symbol, end=_day_end(as_of))
    feats = make_features(usable_candles(market["candles"]), timeframe=settings.timeframe, **_market_kwargs(market))
    names = [f for f in champion.feature_names if f in feats.columns and f not in CALENDAR_FEATURES]
    feats = feats[names].dropna(axis=1, how="all").dropna()
    if feats.empty:
        raise DataError(f"{symbol}: no complete feature rows to test for drift")
    ref_mask, cur_mask = drift_windows(pd.DatetimeIndex(feats.index), settings.timeframe)
    reference, current = feats[ref_mask], feats[cur_mask]
    if len(current) < 50 or len(reference) < 100:
        raise DataError(f"{symbol}: not enough bars for drift ({len(reference)} reference, {len(current)} recent)")
    drift = feature_drift(reference, current, seed=settings.seed)
    drift = drift[np.isfinite(drift["psi_threshold"].astype(float))]  # a constant feature has nothing to test
    rows = [dict(symbol=symbol, as_of=as_of, feature=r.feature, psi=float(r.psi),
                 psi_threshold=float(r.psi_threshold), ks_stat=float(r.ks_stat), ks_pvalue=float(r.ks_pvalue),
                 drifted=bool(r.drifted), reference_start=reference.index[0].to_pydatetime(),
                 reference_end=reference.index[-1].to_pydatetime(),
                 current_start=current.index[0].to_pydatetime(), current_end=current.index[-1].to_pydatetime(),
                 n_reference=len(reference), n_current=len(current), pvalue=registry.finite(r.pvalue),
                 effect_size=registry.finite(r.effect_size), n_eff_reference=registry.finite(r.n_eff_reference),
                 n_eff_current=registry.finite(r.n_eff_current)) for r in drift.itertuples()]
    registry.write_drift(engine, rows)
    drifted = sorted((r for r in rows if r["drifted"]), key=lambda r: -abs(r["effect_size"] or 0.0))
    return {"drifted": [r["feature"] for r in drifted], "n_features": len(rows),
            "drift_size": {r["feature"]: round(r["effect_size"] or 0.0, 3) for r in drifted}}



def live_check(engine: sa.Engine, settings: Settings, symbol: str, as_of: dt.date) -> dict[str, Any]:
    """The champion against the previous champion on the bars it has met since it was trained (out of
    time for both); a significantly worse champion is rolled back to the previous one, logged with the
    statistics.  Both versions' out-of-time metrics are stored (evaluation 'out_of_time')."""
    from brain_tasks.ml.metrics import bars_per_year, strategy_metrics
    from brain_tasks.ml.rollback import live_rollback_decision

    current = registry.champion(engine, symbol)
    previous = registry.previous_champion(engine, symbol)
    if current is None or previous is None:
        return {"action": "none", "reason": "no previous champion to compare with"}
    start, end = current.data_end, _day_end(as_of)
    ours = out_of_time_returns(engine, settings, current, start, end)
    theirs = out_of_time_returns(engine, settings, previous, start, end)
    ppy = bars_per_year(settings.timeframe)
    for m, r in ((current, ours), (previous, theirs)):
        if len(r):
            registry.write_metrics(engine, symbol, m.model_type, m.version, "out_of_time", as_of,
                                   {"all": strategy_metrics(r, ppy)})
    config_hash = "live"  # the nightly decision's key in rollback_logs, beside the retrains' config hashes
    with claim(engine, f"champion:{symbol}"):
        logged = registry.logged_decision(engine, symbol, as_of, config_hash)
        if logged is None:
            verdict = live_rollback_decision(ours, theirs, alpha=0.05, min_samples=settings.min_evidence_bars)
            if verdict.action != "rollback":
                return {"action": verdict.action, "reason": f"{_label(current)} stays champion: {verdict.reason}"}
            logged = registry.apply_decision(engine, registry.Decision(
                symbol=symbol, as_of=as_of, config_hash=config_hash, action="rollback",
                model_type=previous.model_type, version=previous.version,
                champion=(current.model_type, current.version),
                reason=f"{_label(current)} rolled back to {_label(previous)}: {verdict.reason}",
                stats=store.jsonable(verdict.stats)))
    return {"action": logged.action, "reason": logged.reason}


