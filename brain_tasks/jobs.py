"""The work behind each task, as plain functions: an engine and ids in, a small JSON-safe dict out.

Celery knows nothing of this module's internals and this module knows nothing of Celery: `tasks.py`
wraps each function in a few lines, the CLI's sequential path and `bench/fanout.py` call them
directly.  Every function is idempotent on its natural key: finished work is found and returned,
not redone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import time
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import sqlalchemy as sa

from brain_tasks import __version__
from brain_tasks.brain import store
from brain_tasks.brain.locks import claim
from brain_tasks.brain.models import (DataQualityLog, FeatureDrift, FeatureImportance, ModelArtifact,
                                      ModelComparison, ModelManifest, ModelMetric, ModelRegistry,
                                      RollbackLog, TrainingRun)
from brain_tasks.errors import DataError, IntegrityError
from brain_tasks.runs import RUN_SUMMARY_SYMBOL
from brain_tasks.settings import Settings

OK, FAILED, SKIPPED = "succeeded", "failed", "skipped"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _day_end(as_of: dt.date) -> dt.datetime:
    """Data visible on an as-of date: everything strictly before the next UTC midnight."""
    return dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- configuration -------------------------------------------------------------------------------

def train_config(settings: Settings) -> Any:
    from brain_tasks.ml.pipeline import TrainConfig

    return TrainConfig(timeframe=settings.timeframe, seed=settings.seed)


# --- reading market data -------------------------------------------------------------------------

def load_market(engine: sa.Engine, settings: Settings, symbol: str, end: dt.datetime | None = None,
                start: dt.datetime | None = None) -> dict[str, pd.DataFrame | None]:
    """Candles and whatever funding / open interest / liquidations the Brain holds for `symbol`."""
    ex = settings.exchange
    candles = store.read_candles(engine, ex, symbol, settings.timeframe, start=start, end=end)
    if candles.empty:
        raise DataError(f"no {settings.timeframe} candles stored for {symbol!r} on {ex!r}"
                        + (f" before {end:%Y-%m-%d %H:%M}" if end else ""))
    extra: dict[str, pd.DataFrame | None] = {}
    for key, reader in (("funding", store.read_funding), ("open_interest", store.read_open_interest),
                        ("liquidations", store.read_liquidations)):
        frame = reader(engine, ex, symbol, start=start, end=end)
        extra[key] = frame if len(frame) else None
    return {"candles": candles, **extra}


# --- artifacts -----------------------------------------------------------------------------------

def put_artifact(conn: sa.Connection, data: bytes, artifact_format: str) -> str:
    digest = sha256(data)
    stmt = _insert(conn, ModelArtifact).values(sha256=digest, artifact_format=artifact_format, data=data,
                                                size_bytes=len(data), created_at=now())
    conn.execute(stmt.on_conflict_do_nothing())
    return digest


def get_artifact(engine: sa.Engine, digest: str) -> tuple[str, bytes]:
    """The artifact's format and bytes, refusing bytes whose sha256 does not match."""
    row = _first(engine, sa.select(ModelArtifact.artifact_format, ModelArtifact.data)
                 .where(ModelArtifact.sha256 == digest))
    if row is None:
        raise IntegrityError(f"artifact {digest} is missing from model_artifacts")
    data = bytes(row.data)
    if sha256(data) != digest:
        raise IntegrityError(f"artifact {digest} is corrupted: its bytes hash to {sha256(data)}")
    return row.artifact_format, data


def _insert(conn: sa.Connection, model: type) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model)


def _first(engine: sa.Engine, stmt: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(stmt).first()


def _all(engine: sa.Engine, stmt: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def oos_frame(engine: sa.Engine, digest: str) -> pd.DataFrame:
    fmt, data = get_artifact(engine, digest)
    if fmt != "oos-parquet":
        raise IntegrityError(f"artifact {digest} is {fmt}, not out-of-sample predictions")
    return pd.read_parquet(io.BytesIO(data))


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(buf, index=False, compression="zstd")
    return buf.getvalue()


# --- train ---------------------------------------------------------------------------------------

def find_version(engine: sa.Engine, symbol: str, model_type: str, as_of: dt.date,
                 config_hash: str) -> ModelManifest | None:
    with sa.orm.Session(engine) as session:
        return session.scalars(sa.select(ModelManifest).where(
            ModelManifest.symbol == symbol, ModelManifest.model_type == model_type,
            ModelManifest.as_of == as_of, ModelManifest.config_hash == config_hash)).first()


def train_symbol(engine: sa.Engine, settings: Settings, symbol: str, model_type: str,
                 as_of: dt.date) -> dict[str, Any]:
    """Walk-forward train one (symbol, model type, as-of) and register the new version.

    Identity = (symbol, model type, as-of, config hash): a finished identity is returned as it is;
    a claim makes a concurrent copy wait and then find the finished one.  The claim covers every
    training of (symbol, model type), since those share one sequence of version numbers.
    """
    from brain_tasks.ml.pipeline import train_and_evaluate

    started = time.perf_counter()
    config = train_config(settings)
    chash = config.config_hash()
    base = {"symbol": symbol, "model_type": model_type, "as_of": as_of.isoformat(), "config_hash": chash}
    done = find_version(engine, symbol, model_type, as_of, chash)
    if done is None:
        with claim(engine, f"train:{symbol}:{model_type}"):
            done = find_version(engine, symbol, model_type, as_of, chash)
            if done is None:
                market = load_market(engine, settings, symbol, end=_day_end(as_of))
                result = train_and_evaluate(market["candles"], model_type, config,
                                            funding=market["funding"],
                                            open_interest=market["open_interest"],
                                            liquidations=market["liquidations"], with_importance=False,
                                            device=settings.device)
                _register(engine, symbol, model_type, as_of, config, result)
                done = find_version(engine, symbol, model_type, as_of, chash)
                return {**base, "status": OK, "version": done.version, "trained": True,
                        "seconds": round(time.perf_counter() - started, 4)}
    return {**base, "status": OK, "version": done.version, "trained": False,
            "seconds": round(time.perf_counter() - started, 4)}


def _register(engine: sa.Engine, symbol: str, model_type: str, as_of: dt.date, config: Any,
              result: Any) -> None:
    """Write artifact, OOS predictions, metrics, manifest and registry row in one transaction."""
    stamp = now()
    with engine.begin() as conn:
        art = put_artifact(conn, result.artifact, result.artifact_format)
        oos = put_artifact(conn, _parquet_bytes(result.oos), "oos-parquet")
        version = 1 + (conn.execute(sa.select(sa.func.max(ModelManifest.version)).where(
            ModelManifest.symbol == symbol, ModelManifest.model_type == model_type)).scalar() or 0)
        chash = config.config_hash()
        conn.execute(sa.insert(ModelManifest).values(
            symbol=symbol, model_type=model_type, version=version, as_of=as_of, config_hash=chash,
            artifact_sha256=art, oos_sha256=oos, hyperparameters=store.jsonable(result.params),
            config=store.jsonable(config.to_dict()), feature_names=list(result.feature_names),
            feature_hash=result.feature_hash, dataset_digest=result.dataset_digest,
            data_start=result.data_start, data_end=result.data_end, n_rows=int(result.n_rows),
            code_version=__version__, seed=int(config.seed), created_at=stamp))
        conn.execute(sa.insert(ModelRegistry).values(
            symbol=symbol, model_type=model_type, version=version, as_of=as_of, config_hash=chash,
            artifact_sha256=art, status="candidate", composite_score=_f(result.metrics.get("composite")),
            selected_regimes={}, created_at=stamp, updated_at=stamp))
        rows = [dict(symbol=symbol, model_type=model_type, version=version, evaluation="walk_forward",
                     regime=regime, metric=name, value=_f(value), as_of=as_of)
                for regime, metrics in [("all", result.metrics), *result.regime_metrics.items()]
                for name, value in metrics.items() if _is_number(value)]
        if rows:
            conn.execute(sa.insert(ModelMetric), rows)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _f(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if np.isfinite(v) else None


# --- compare -------------------------------------------------------------------------------------

def versions_of(engine: sa.Engine, symbol: str, as_of: dt.date, config_hash: str) -> list[ModelManifest]:
    with sa.orm.Session(engine) as session:
        return list(session.scalars(sa.select(ModelManifest).where(
            ModelManifest.symbol == symbol, ModelManifest.as_of == as_of,
            ModelManifest.config_hash == config_hash).order_by(ModelManifest.model_type)))


def metrics_of(engine: sa.Engine, symbol: str, model_type: str, version: int,
               evaluation: str = "walk_forward") -> dict[str, dict[str, float]]:
    """{regime: {metric: value}} of one version."""
    out: dict[str, dict[str, float]] = {}
    for row in _all(engine, sa.select(ModelMetric.regime, ModelMetric.metric, ModelMetric.value).where(
            ModelMetric.symbol == symbol, ModelMetric.model_type == model_type,
            ModelMetric.version == version, ModelMetric.evaluation == evaluation)):
        out.setdefault(row.regime, {})[row.metric] = row.value
    return out


def compare_models(engine: sa.Engine, settings: Settings, train_results: Any, symbol: str,
                   as_of: dt.date) -> dict[str, Any]:
    """Rank this run's versions of `symbol` by composite score; name the best candidate."""
    from brain_tasks.ml.metrics import composite_score

    results = train_results if isinstance(train_results, list) else [train_results]
    failures = {r.get("model_type", "?"): r.get("error", "failed") for r in results
                if isinstance(r, dict) and r.get("status") == FAILED}
    chash = train_config(settings).config_hash()
    versions = versions_of(engine, symbol, as_of, chash)
    base = {"symbol": symbol, "as_of": as_of.isoformat(), "config_hash": chash, "failed_models": failures}
    if not versions:
        errors = "; ".join(f"{m}: {e}" for m, e in failures.items()) or "no model was trained"
        return {**base, "status": FAILED, "error": errors}
    scored = []
    for v in versions:
        overall = metrics_of(engine, symbol, v.model_type, v.version).get("all", {})
        scored.append((composite_score(overall), v, overall))
    scored.sort(key=lambda item: (-item[0], item[1].model_type))
    rows = [dict(symbol=symbol, as_of=as_of, config_hash=chash, model_type=v.model_type, version=v.version,
                 composite_score=float(score), rank=i + 1, is_best=(i == 0), metrics=store.jsonable(overall))
            for i, (score, v, overall) in enumerate(scored)]
    store.upsert(engine, ModelComparison.__table__, rows)
    best = scored[0][1]
    return {**base, "status": OK, "best": {"model_type": best.model_type, "version": best.version},
            "ranking": [r["model_type"] for r in rows]}


# --- importance ----------------------------------------------------------------------------------

def dataset_for(engine: sa.Engine, settings: Settings, manifest: ModelManifest) -> tuple[pd.DataFrame, pd.Series]:
    """The feature matrix and label a version was trained on, rebuilt from the Brain (the digest
    proves it is the same data)."""
    from brain_tasks.ml.pipeline import TrainConfig, build_dataset, dataset_digest

    market = load_market(engine, settings, manifest.symbol, start=manifest.data_start,
                         end=manifest.data_end + dt.timedelta(microseconds=1))
    config = TrainConfig.from_dict(manifest.config)
    X, y, _bar = build_dataset(market["candles"], config, funding=market["funding"],
                               open_interest=market["open_interest"], liquidations=market["liquidations"])
    if list(X.columns) != list(manifest.feature_names) or dataset_digest(X, y) != manifest.dataset_digest:
        raise DataError(f"{manifest.symbol} {manifest.model_type} v{manifest.version}: the stored data no longer "
                        "rebuilds the training set recorded in its manifest")
    return X, y


def load_version(engine: sa.Engine, manifest: ModelManifest) -> Any:
    from brain_tasks.ml.models import load_model

    fmt, data = get_artifact(engine, manifest.artifact_sha256)
    return load_model(fmt, data)


def compute_importance(engine: sa.Engine, settings: Settings, prev: dict[str, Any], symbol: str,
                       as_of: dt.date) -> dict[str, Any]:
    """Feature importance (every method the model supports) of each version of this run."""
    from brain_tasks.ml.pipeline import TrainConfig, explain

    if prev.get("status") != OK:
        return prev
    chash = prev["config_hash"]
    written = {}
    datasets: dict[str, tuple[pd.DataFrame, pd.Series]] = {}  # the run's model types share one dataset
    for manifest in versions_of(engine, symbol, as_of, chash):
        have = _first(engine, sa.select(sa.func.count()).select_from(FeatureImportance).where(
            FeatureImportance.symbol == symbol, FeatureImportance.model_type == manifest.model_type,
            FeatureImportance.version == manifest.version))[0]
        if not have:
            if manifest.dataset_digest not in datasets:
                datasets[manifest.dataset_digest] = dataset_for(engine, settings, manifest)
            X, y = datasets[manifest.dataset_digest]
            frame = explain(load_version(engine, manifest), manifest.model_type, X, y,
                            TrainConfig.from_dict(manifest.config))
            rows = [dict(symbol=symbol, model_type=manifest.model_type, version=manifest.version,
                         method=r.method, feature=r.feature, importance=_f(r.importance) or 0.0,
                         rank=int(r.rank), as_of=as_of) for r in frame.itertuples()]
            store.upsert(engine, FeatureImportance.__table__, rows)
            have = len(rows)
        written[manifest.model_type] = int(have)
    return {**prev, "importance_rows": written}


# --- rollback ------------------------------------------------------------------------------------

def _registry(engine: sa.Engine, symbol: str, **where: Any) -> list[ModelRegistry]:
    with sa.orm.Session(engine) as session:
        stmt = sa.select(ModelRegistry).where(ModelRegistry.symbol == symbol)
        for key, value in where.items():
            stmt = stmt.where(getattr(ModelRegistry, key) == value)
        return list(session.scalars(stmt.order_by(ModelRegistry.as_of, ModelRegistry.model_type)))


def _manifest(engine: sa.Engine, symbol: str, model_type: str, version: int) -> ModelManifest:
    with sa.orm.Session(engine) as session:
        return session.get_one(ModelManifest, (symbol, model_type, version))


def recent_returns(engine: sa.Engine, settings: Settings, candidate: ModelManifest,
                   champion: ModelManifest) -> tuple[pd.Series, pd.Series]:
    """Strategy returns of candidate and champion on the same recent window, out of time for both.

    The window is the candidate's walk-forward out-of-sample bars that come after everything the
    champion was trained on (bars the champion saw would flatter it).
    """
    from brain_tasks.ml.metrics import strategy_returns

    oos = oos_frame(engine, candidate.oos_sha256)
    oos = oos[pd.to_datetime(oos["ts"], utc=True) > pd.Timestamp(champion.data_end)]
    if oos.empty:
        empty = pd.Series(dtype=float)
        return empty, empty
    X, _y = dataset_for(engine, settings, candidate)
    X = X.loc[X.index.isin(pd.DatetimeIndex(pd.to_datetime(oos["ts"], utc=True)))]
    champion_X = X.reindex(columns=champion.feature_names)
    champion_pred = load_version(engine, champion).predict(champion_X)
    cost = float(candidate.config.get("cost_bps", 0.0))
    bar = oos.set_index(pd.DatetimeIndex(pd.to_datetime(oos["ts"], utc=True)))["bar_return"].loc[X.index]
    champ = strategy_returns(pd.Series(champion_pred, index=X.index), bar, cost)
    cand = oos.set_index(pd.DatetimeIndex(pd.to_datetime(oos["ts"], utc=True)))["strategy_return"].loc[X.index]
    return cand, champ


def check_rollback(engine: sa.Engine, settings: Settings, prev: dict[str, Any], symbol: str,
                   as_of: dt.date) -> dict[str, Any]:
    """Promote this run's best version, or keep / restore the previous champion."""
    from brain_tasks.ml.rollback import rollback_decision

    if prev.get("status") != OK:
        return prev
    chash = prev["config_hash"]
    logged = _first(engine, sa.select(RollbackLog).where(
        RollbackLog.symbol == symbol, RollbackLog.as_of == as_of, RollbackLog.config_hash == chash))
    if logged is not None:
        return {**prev, "rollback": {"action": logged.action, "reason": logged.reason}}
    best = prev["best"]
    candidate = _manifest(engine, symbol, best["model_type"], best["version"])
    champions = [r for r in _registry(engine, symbol, status="champion") if r.as_of < as_of]
    stamp = now()
    if not champions:
        action, reason, stats, from_v = "promote", "no champion yet: the best candidate becomes champion", {}, None
        champion_row = None
    else:
        champion_row = champions[-1]
        champion = _manifest(engine, symbol, champion_row.model_type, champion_row.version)
        cand_r, champ_r = recent_returns(engine, settings, candidate, champion)
        decision = rollback_decision(cand_r, champ_r, margin=0.0, min_samples=288, alpha=0.05)
        stats = store.jsonable(decision.stats)
        from_v = champion_row.version
        if decision.action == "rollback":
            action = "rollback"
            reason = (f"kept {champion_row.model_type} v{champion_row.version}: the new "
                      f"{candidate.model_type} v{candidate.version} was worse on the same recent window. "
                      + decision.reason)
        else:
            action = "promote"
            reason = (f"{candidate.model_type} v{candidate.version} replaces {champion_row.model_type} "
                      f"v{champion_row.version}: " + decision.reason)
    with engine.begin() as conn:
        if action == "promote":
            if champion_row is not None:
                _set_status(conn, champion_row, "previous", stamp)
            _set_status(conn, candidate, "champion", stamp)
        else:
            _set_status(conn, candidate, "rejected", stamp)
        conn.execute(sa.insert(RollbackLog).values(
            symbol=symbol, as_of=as_of, config_hash=chash, action=action, model_type=candidate.model_type,
            from_version=from_v, to_version=candidate.version if action == "promote" else from_v,
            reason=reason, stats=stats, created_at=stamp))
    return {**prev, "rollback": {"action": action, "reason": reason}}


def _set_status(conn: sa.Connection, row: Any, status: str, stamp: dt.datetime) -> None:
    conn.execute(sa.update(ModelRegistry).where(
        ModelRegistry.symbol == row.symbol, ModelRegistry.model_type == row.model_type,
        ModelRegistry.version == row.version).values(status=status, updated_at=stamp))


# --- select --------------------------------------------------------------------------------------

def select_model(engine: sa.Engine, settings: Settings, prev: dict[str, Any], symbol: str, as_of: dt.date,
                 run_id: str | None = None) -> dict[str, Any]:
    """Pick the model to trade in each volatility regime, with hysteresis against the last choice."""
    from brain_tasks.ml.regimes import select_per_regime

    if prev.get("status") == OK:
        chash = prev["config_hash"]
        rows = [r for r in _registry(engine, symbol, as_of=as_of, config_hash=chash) if r.status != "rejected"]
        candidates = {r.model_type: metrics_of(engine, symbol, r.model_type, r.version) for r in rows}
        earlier = [r for r in _registry(engine, symbol) if r.as_of < as_of and r.selected_regimes]
        last_choice = {regime: r.model_type for r in earlier for regime in r.selected_regimes}
        choice = select_per_regime(candidates, min_bars=200, champion=last_choice or None)
        stamp = now()
        with engine.begin() as conn:
            for r in rows:
                mine = {regime: store.jsonable(c) for regime, c in choice.items() if c.get("model") == r.model_type}
                conn.execute(sa.update(ModelRegistry).where(
                    ModelRegistry.symbol == symbol, ModelRegistry.model_type == r.model_type,
                    ModelRegistry.version == r.version).values(selected_regimes=mine, updated_at=stamp))
        prev = {**prev, "selection": {k: v.get("model") for k, v in choice.items()}}
    if run_id:
        record_symbol_state(engine, run_id, symbol, as_of, prev)
    return prev


# --- runs ----------------------------------------------------------------------------------------

def start_run(engine: sa.Engine, run_id: str, as_of: dt.date, symbols: Sequence[str],
              models: Sequence[str]) -> None:
    """Mark a run and its symbols pending.  A re-run of the same run id resets their states, and its
    steps (which find their finished work) write the same outcomes back; started_at keeps the first."""
    stamp = now()
    rows = [dict(run_id=run_id, symbol=s, as_of=as_of, state="pending", models=list(models), error=None,
                 details={}, started_at=stamp, finished_at=None) for s in [RUN_SUMMARY_SYMBOL, *symbols]]
    store.upsert(engine, TrainingRun.__table__, rows, update_columns=["state", "error", "details", "finished_at"])


def record_symbol_state(engine: sa.Engine, run_id: str, symbol: str, as_of: dt.date,
                        outcome: dict[str, Any]) -> None:
    state = OK if outcome.get("status") == OK else FAILED
    details = {k: store.jsonable(outcome[k]) for k in ("best", "selection", "rollback", "failed_models")
               if k in outcome}
    stamp = now()
    store.upsert(engine, TrainingRun.__table__, [dict(
        run_id=run_id, symbol=symbol, as_of=as_of, state=state, models=[],
        error=outcome.get("error"), details=details, started_at=stamp, finished_at=stamp)],
        update_columns=["state", "error", "details", "finished_at"])


def summarize_run(engine: sa.Engine, results: Iterable[Any], run_id: str) -> dict[str, Any]:
    """The run's own row: how many symbols succeeded, which failed and why."""
    results = [r for r in (results if isinstance(results, list) else [results]) if isinstance(r, dict)]
    failed = {r.get("symbol", "?"): r.get("error", "failed") for r in results if r.get("status") != OK}
    ok = sorted(r["symbol"] for r in results if r.get("status") == OK)
    state = OK if not failed else ("partial" if ok else FAILED)
    summary = {"run_id": run_id, "state": state, "succeeded": ok, "failed": failed,
               "n_symbols": len(results)}
    stamp = now()
    store.upsert(engine, TrainingRun.__table__, [dict(
        run_id=run_id, symbol=RUN_SUMMARY_SYMBOL, as_of=_run_as_of(engine, run_id), state=state, models=[],
        error=None if not failed else f"{len(failed)} of {len(results)} symbols failed",
        details={"succeeded": ok, "failed": failed}, started_at=stamp, finished_at=stamp)],
        update_columns=["state", "error", "details", "finished_at"])
    return summary


def _run_as_of(engine: sa.Engine, run_id: str) -> dt.date:
    row = _first(engine, sa.select(TrainingRun.as_of).where(TrainingRun.run_id == run_id))
    return row.as_of if row else now().date()


def run_status(engine: sa.Engine, run_id: str) -> dict[str, Any]:
    rows = _all(engine, sa.select(TrainingRun).where(TrainingRun.run_id == run_id))
    symbols = {r.symbol: {"state": r.state, "error": r.error} for r in rows if r.symbol != RUN_SUMMARY_SYMBOL}
    head = next((r for r in rows if r.symbol == RUN_SUMMARY_SYMBOL), None)
    counts: dict[str, int] = {}
    for v in symbols.values():
        counts[v["state"]] = counts.get(v["state"], 0) + 1
    return {"run_id": run_id, "state": head.state if head else "unknown",
            "details": head.details if head else {}, "counts": counts, "symbols": symbols}


# --- failures ------------------------------------------------------------------------------------

def record_task_failure(engine: sa.Engine, settings: Settings, symbol: str, data_kind: str, check: str,
                        error: BaseException | str, as_of: dt.date | None = None) -> None:
    """A domain error as a data-quality row: logged once per (symbol, check, day), never retried."""
    stamp = now()
    day = as_of or stamp.date()
    ts = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    store.upsert(engine, DataQualityLog.__table__, [dict(
        source=settings.exchange, symbol=symbol[:64], timeframe=settings.timeframe, data_kind=data_kind,
        check=check, ts_start=ts, ts_end=None, severity="error",
        details={"error": str(error)[:2000]}, first_seen=stamp,
        last_seen=stamp, resolved=False, resolved_at=None)],
        update_columns=["details", "last_seen"])


# --- nightly -------------------------------------------------------------------------------------

def champion_of(engine: sa.Engine, symbol: str) -> ModelManifest | None:
    rows = _registry(engine, symbol, status="champion")
    return _manifest(engine, symbol, rows[-1].model_type, rows[-1].version) if rows else None


# Calendar features are uniform over a week by construction: a recent window shorter than a week
# "drifts" in them whatever the market does, so they are not tested.
CALENDAR_FEATURES = ("tod_sin", "tod_cos", "dow_sin", "dow_cos")
RECENT_WINDOW = dt.timedelta(days=7)  # at most; see analyse_symbol


def analyse_symbol(engine: sa.Engine, settings: Settings, symbol: str, as_of: dt.date) -> dict[str, Any]:
    """Feature drift of the champion's features (its training window vs the most recent week) and
    the importance trend of its model type over the last runs."""
    from brain_tasks.ml.drift import feature_drift
    from brain_tasks.ml.features import make_features
    from brain_tasks.ml.importance import rank_changes

    champion = champion_of(engine, symbol)
    if champion is None:
        return {"symbol": symbol, "status": SKIPPED, "reason": "no champion model yet"}
    market = load_market(engine, settings, symbol, end=_day_end(as_of))
    feats = make_features(market["candles"], timeframe=settings.timeframe, funding=market["funding"],
                          open_interest=market["open_interest"], liquidations=market["liquidations"])
    names = [f for f in champion.feature_names if f in feats.columns and f not in CALENDAR_FEATURES]
    feats = feats[names].dropna(axis=1, how="all").dropna()
    if feats.empty:
        raise DataError(f"{symbol}: no complete feature rows to test for drift")
    # The most recent week, or the last quarter of a shorter history, against what came before it.
    recent_start = max(feats.index[-1] - RECENT_WINDOW, feats.index[len(feats) * 3 // 4])
    current = feats[feats.index >= recent_start]
    reference = feats[(feats.index >= pd.Timestamp(champion.data_start)) & (feats.index < recent_start)]
    if len(current) < 50 or len(reference) < 100:
        raise DataError(f"{symbol}: not enough bars for drift ({len(reference)} reference, {len(current)} recent)")
    drift = feature_drift(reference, current, seed=settings.seed)
    drift = drift[np.isfinite(drift["psi_threshold"].astype(float))]  # a constant feature has nothing to test
    rows = [dict(symbol=symbol, as_of=as_of, feature=r.feature, psi=float(r.psi),
                 psi_threshold=float(r.psi_threshold), ks_stat=float(r.ks_stat), ks_pvalue=float(r.ks_pvalue),
                 drifted=bool(r.drifted), reference_start=reference.index[0].to_pydatetime(),
                 reference_end=reference.index[-1].to_pydatetime(),
                 current_start=current.index[0].to_pydatetime(), current_end=current.index[-1].to_pydatetime(),
                 n_reference=len(reference), n_current=len(current)) for r in drift.itertuples()]
    store.upsert(engine, FeatureDrift.__table__, rows)
    history = store.read_table(engine, FeatureImportance.__table__, where={"symbol": symbol,
                                                                           "model_type": champion.model_type})
    movers: list[dict[str, Any]] = []
    if len(history):
        trend = rank_changes(history)
        moved = trend[trend["rank_change"] != 0]
        movers = store.jsonable(moved.reindex(moved["rank_change"].abs().sort_values(ascending=False).index)
                           .head(5).to_dict("records"))
    return {"symbol": symbol, "status": OK, "drifted": sorted(r["feature"] for r in rows if r["drifted"]),
            "n_features": len(rows), "importance_movers": movers}


def summarize_nightly(engine: sa.Engine, results: Any, run_id: str, as_of: dt.date) -> dict[str, Any]:
    results = [r for r in (results if isinstance(results, list) else [results]) if isinstance(r, dict)]
    open_findings = _all(engine, sa.select(DataQualityLog.severity, sa.func.count()).where(
        DataQualityLog.resolved.is_(False)).group_by(DataQualityLog.severity))
    quality = {sev: int(n) for sev, n in open_findings}
    failed = {r.get("symbol", "?"): r.get("error", r.get("reason", "")) for r in results
              if r.get("status") == FAILED}
    drift = {r["symbol"]: r.get("drifted", []) for r in results if r.get("status") == OK}
    details = {"drifted": drift, "failed": failed, "open_quality_findings": quality,
               "skipped": sorted(r["symbol"] for r in results if r.get("status") == SKIPPED)}
    stamp = now()
    state = OK if not failed else "partial"
    store.upsert(engine, TrainingRun.__table__, [dict(
        run_id=run_id, symbol=RUN_SUMMARY_SYMBOL, as_of=as_of, state=state, models=[], error=None,
        details=store.jsonable(details), started_at=stamp, finished_at=stamp)],
        update_columns=["state", "details", "finished_at"])
    return {"run_id": run_id, "state": state, **details}
