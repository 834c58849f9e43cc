"""The model registry: the one place that reads and writes versions, statuses, metrics, artifacts,
comparisons, importance, decisions and the champion.

Vocabulary (the same in code, tables and messages):
- a *version* is one trained (symbol, model type) model, numbered 1, 2, ... per (symbol, model type);
- the *candidate* is the best version of a retrain, the *champion* the one version per symbol that
  trades (a partial unique index makes a second champion impossible);
- registry statuses: ``candidate`` -> ``champion`` | ``rejected`` (the champion stayed) | ``backfill``
  (trained as of a date before the champion's: recorded, never promoted); ``champion`` -> ``previous``
  (superseded by a promotion) | ``rolled_back`` (the nightly live check restored the previous champion);
- decisions (``rollback_logs.action``): ``promote``, ``keep``, ``insufficient_evidence``, ``backfill``,
  ``unchanged`` at retrain time; ``rollback`` at night.  Every change of champion also lands in
  ``champion_history`` with its reason and evidence.

Other modules call these named functions; no SQL is written outside ``brain/``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from brain_tasks.brain import store
from brain_tasks.brain.tables import (ChampionHistory, DataQualityLog, FeatureDrift, FeatureImportance, ModelArtifact,
                                      ModelComparison, ModelManifest, ModelMetric, ModelRegistry, RegimeChoice,
                                      RollbackLog)
from brain_tasks.errors import IntegrityError
from brain_tasks.timekeeping import now
from brain_tasks.vocabulary import Action, ChampionStatus, Origin

# The decisions a retrain or a nightly logs (a pin is an operator's, written to the history only).
DECISIONS = tuple(a for a in Action if a not in (Action.PIN, Action.NONE))




def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _insert(conn: sa.Connection, model: Any) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model)


def _scalars(engine: sa.Engine, stmt: Any) -> list[Any]:
    with Session(engine) as session:
        return list(session.scalars(stmt))


def _first(engine: sa.Engine, stmt: Any) -> Any:
    with Session(engine) as session:
        return session.scalars(stmt).first()


def _rows(engine: sa.Engine, stmt: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(stmt))


# --- artifacts -----------------------------------------------------------------------------------

def put_artifact(conn: sa.Connection, data: bytes, artifact_format: str) -> str:
    """Store bytes under their sha256 (once) and return the digest."""
    digest = sha256(data)
    conn.execute(_insert(conn, ModelArtifact).values(
        sha256=digest, artifact_format=artifact_format, data=data, size_bytes=len(data),
        created_at=now()).on_conflict_do_nothing())
    return digest


def load_artifact(engine: sa.Engine, digest: str) -> tuple[str, bytes]:
    """The artifact's format and bytes, refusing bytes whose sha256 does not match."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(ModelArtifact.artifact_format, ModelArtifact.data)
                           .where(ModelArtifact.sha256 == digest)).first()
    if row is None:
        raise IntegrityError(f"artifact {digest} is missing from model_artifacts")
    data = bytes(row.data)
    if sha256(data) != digest:
        raise IntegrityError(f"artifact {digest} is corrupted: its bytes hash to {sha256(data)}")
    return row.artifact_format, data


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(buf, index=False, compression="zstd")
    return buf.getvalue()


def oos_frame(engine: sa.Engine, digest: str) -> pd.DataFrame:
    """A version's walk-forward out-of-sample predictions (one sha256 check)."""
    fmt, data = load_artifact(engine, digest)
    if fmt != "oos-parquet":
        raise IntegrityError(f"artifact {digest} is {fmt}, not out-of-sample predictions")
    return pd.read_parquet(io.BytesIO(data))


DISTRIBUTION_FORMAT = "distribution-json"


def distribution_bytes(description: Mapping[str, Any]) -> bytes:
    """A version's input description (`ml.distribution`) as canonical JSON (sorted keys), so the same
    description is one artifact."""
    import json

    return json.dumps(description, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def distribution(engine: sa.Engine, digest: str) -> dict[str, Any]:
    """A version's input description (one sha256 check)."""
    import json

    fmt, data = load_artifact(engine, digest)
    if fmt != DISTRIBUTION_FORMAT:
        raise IntegrityError(f"artifact {digest} is {fmt}, not an input description")
    return json.loads(data)


# --- versions ------------------------------------------------------------------------------------

def manifest(engine: sa.Engine, symbol: str, model_type: str, version: int) -> ModelManifest:
    with Session(engine) as session:
        return session.get_one(ModelManifest, (symbol, model_type, version))


def find_version(engine: sa.Engine, symbol: str, model_type: str, as_of: dt.date,
                 config_hash: str) -> ModelManifest | None:
    """The version trained for exactly this identity, if any."""
    return _first(engine, sa.select(ModelManifest).where(
        ModelManifest.symbol == symbol, ModelManifest.model_type == model_type, ModelManifest.as_of == as_of,
        ModelManifest.config_hash == config_hash))


def find_same_inputs(engine: sa.Engine, symbol: str, model_type: str, config_hash: str,
                     dataset_digest: str) -> ModelManifest | None:
    """The newest version trained with the same configuration on the very same dataset."""
    return _first(engine, sa.select(ModelManifest).where(
        ModelManifest.symbol == symbol, ModelManifest.model_type == model_type,
        ModelManifest.config_hash == config_hash, ModelManifest.dataset_digest == dataset_digest)
        .order_by(ModelManifest.version.desc()))


def register_version(engine: sa.Engine, symbol: str, model_type: str, as_of: dt.date, *, config: Mapping[str, Any],
                     config_hash: str, result: Any, code_version: str, seed: int,
                     origin: str = Origin.RETRAIN) -> int:
    """Write artifact, OOS predictions, metrics, manifest, registry row and (if computed) importance
    of a new version in one transaction; returns its version number.  The caller holds the claim on
    (symbol, model type), which serialises version numbers.  `origin`: what trained it (`Origin`)."""
    stamp = now()
    with engine.begin() as conn:
        art = put_artifact(conn, result.artifact, result.artifact_format)
        oos = put_artifact(conn, parquet_bytes(result.oos), "oos-parquet")
        described = getattr(result, "distribution", None)
        distribution = None if described is None else put_artifact(conn, distribution_bytes(described),
                                                                    DISTRIBUTION_FORMAT)
        version = 1 + (conn.execute(sa.select(sa.func.max(ModelManifest.version)).where(
            ModelManifest.symbol == symbol, ModelManifest.model_type == model_type)).scalar() or 0)
        conn.execute(sa.insert(ModelManifest).values(
            symbol=symbol, model_type=model_type, version=version, as_of=as_of, config_hash=config_hash,
            artifact_sha256=art, oos_sha256=oos, hyperparameters=store.jsonable(result.params),
            config=store.jsonable(dict(config)), feature_names=list(result.feature_names),
            feature_hash=result.feature_hash, dataset_digest=result.dataset_digest,
            data_start=result.data_start, data_end=result.data_end, n_rows=int(result.n_rows),
            code_version=code_version, seed=int(seed), created_at=stamp, distribution_sha256=distribution))
        conn.execute(sa.insert(ModelRegistry).values(
            symbol=symbol, model_type=model_type, version=version, as_of=as_of, config_hash=config_hash,
            artifact_sha256=art, status=ChampionStatus.CANDIDATE,
            composite_score=finite(result.metrics.get("composite")),
            created_at=stamp, updated_at=stamp, origin=str(origin)))
        rows = [dict(symbol=symbol, model_type=model_type, version=version, evaluation="walk_forward",
                     regime=regime, metric=name, value=finite(value), as_of=as_of)
                for regime, metrics in [("all", result.metrics), *result.regime_metrics.items()]
                for name, value in metrics.items() if _is_number(value) and finite(value) is not None]
        if rows:
            conn.execute(sa.insert(ModelMetric), rows)
        if getattr(result, "importance", None) is not None and len(result.importance):
            conn.execute(sa.insert(FeatureImportance), importance_rows(
                symbol, model_type, version, as_of, result.importance))
    return version


def importance_rows(symbol: str, model_type: str, version: int, as_of: dt.date,
                    frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [dict(symbol=symbol, model_type=model_type, version=version, method=r.method, feature=r.feature,
                 importance=finite(r.importance) or 0.0, rank=int(r.rank), as_of=as_of)
            for r in frame.itertuples()]


def write_importance(engine: sa.Engine, rows: Sequence[Mapping[str, Any]]) -> None:
    store.upsert(engine, FeatureImportance.__table__, list(rows))


def importance_count(engine: sa.Engine, symbol: str, model_type: str, version: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(FeatureImportance).where(
            FeatureImportance.symbol == symbol, FeatureImportance.model_type == model_type,
            FeatureImportance.version == version)).scalar() or 0)


def importance_history(engine: sa.Engine, symbol: str, model_type: str) -> pd.DataFrame:
    return store.read_table(engine, FeatureImportance.__table__, where={"symbol": symbol, "model_type": model_type})


def importance_of(engine: sa.Engine, symbol: str, model_type: str, version: int) -> list[FeatureImportance]:
    return _scalars(engine, sa.select(FeatureImportance).where(
        FeatureImportance.symbol == symbol, FeatureImportance.model_type == model_type,
        FeatureImportance.version == version).order_by(FeatureImportance.method, FeatureImportance.rank))


def _is_number(value: Any) -> bool:
    import numpy as np

    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def finite(value: Any) -> float | None:
    """`value` as a float, or None when it is missing, not a number, NaN or infinite (what a double
    column and a JSON payload can hold)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def metrics_of(engine: sa.Engine, symbol: str, model_type: str, version: int,
               evaluation: str = "walk_forward") -> dict[str, dict[str, float]]:
    """{regime: {metric: value}} of one version."""
    out: dict[str, dict[str, float]] = {}
    for row in _rows(engine, sa.select(ModelMetric.regime, ModelMetric.metric, ModelMetric.value).where(
            ModelMetric.symbol == symbol, ModelMetric.model_type == model_type,
            ModelMetric.version == version, ModelMetric.evaluation == evaluation)):
        out.setdefault(row.regime, {})[row.metric] = row.value
    return out


def loses_to_flat(engine: sa.Engine, version: Any) -> bool:
    """Whether a version's walk-forward result over every bar (regime 'all') is worse than never trading
    (`ml.metrics.loses_to_flat`).  The rule every fallback to the champion applies (serving, the replay's
    brain policy, `current_choice`, the report): such a champion is served flat.  Those metrics are
    written with the version and never again, so callers may cache the answer."""
    from brain_tasks.ml.metrics import loses_to_flat as worse_than_flat

    return worse_than_flat(metrics_of(engine, version.symbol, version.model_type, int(version.version)).get("all", {}))


def write_metrics(engine: sa.Engine, symbol: str, model_type: str, version: int, evaluation: str,
                  as_of: dt.date, metrics: Mapping[str, Mapping[str, Any]]) -> None:
    """Upsert {regime: {metric: value}} of one version under `evaluation` (e.g. 'live')."""
    rows = [dict(symbol=symbol, model_type=model_type, version=version, evaluation=evaluation, regime=regime,
                 metric=name, value=finite(value), as_of=as_of)
            for regime, values in metrics.items() for name, value in values.items()
            if _is_number(value) and finite(value) is not None]
    if rows:
        store.upsert(engine, ModelMetric.__table__, rows)


def registry_rows(engine: sa.Engine, symbol: str | None = None, **where: Any) -> list[ModelRegistry]:
    stmt = sa.select(ModelRegistry)
    if symbol is not None:
        stmt = stmt.where(ModelRegistry.symbol == symbol)
    for key, value in where.items():
        stmt = stmt.where(getattr(ModelRegistry, key) == value)
    return _scalars(engine, stmt.order_by(ModelRegistry.symbol, ModelRegistry.as_of, ModelRegistry.model_type,
                                          ModelRegistry.version))


def manifests(engine: sa.Engine, symbol: str, model_type: str | None = None) -> list[ModelManifest]:
    stmt = sa.select(ModelManifest).where(ModelManifest.symbol == symbol)
    if model_type is not None:
        stmt = stmt.where(ModelManifest.model_type == model_type)
    return _scalars(engine, stmt.order_by(ModelManifest.as_of, ModelManifest.model_type, ModelManifest.version))


def adopt(engine: sa.Engine, symbol: str, model_type: str, version: int) -> bool:
    """A retrain reached a version a replay trained (the same identity, or identical inputs): the same
    training is the same version, so it now belongs to the retrains and the registry views show it.
    The replay keeps pointing at it by (symbol, model type, version).  True when it changed."""
    with engine.begin() as conn:
        return bool(conn.execute(sa.update(ModelRegistry).where(
            ModelRegistry.symbol == symbol, ModelRegistry.model_type == model_type, ModelRegistry.version == version,
            ModelRegistry.origin == Origin.REPLAY).values(origin=Origin.RETRAIN, updated_at=now())).rowcount)


def origin_of(engine: sa.Engine, symbol: str, model_type: str, version: int) -> str | None:
    return _first(engine, sa.select(ModelRegistry.origin).where(
        ModelRegistry.symbol == symbol, ModelRegistry.model_type == model_type, ModelRegistry.version == version))


def registry_table(engine: sa.Engine, symbol: str | None = None) -> pd.DataFrame:
    """Registry rows joined with their headline walk-forward metrics, for `brain-tasks models`: the
    retrains' versions only (a replay's own trainings are the replay's, not the registry's)."""
    stmt = (sa.select(ModelRegistry).where(ModelRegistry.origin == Origin.RETRAIN)
            .order_by(ModelRegistry.symbol, ModelRegistry.as_of, ModelRegistry.model_type))
    mstmt = sa.select(ModelMetric).where(ModelMetric.regime == "all", ModelMetric.evaluation == "walk_forward",
                                         ModelMetric.metric.in_(["sharpe", "total_return", "max_drawdown", "psr"]))
    if symbol:
        stmt, mstmt = stmt.where(ModelRegistry.symbol == symbol), mstmt.where(ModelMetric.symbol == symbol)
    with engine.connect() as conn:
        reg = pd.DataFrame(conn.execute(stmt).mappings().all())
        metrics = pd.DataFrame(conn.execute(mstmt).mappings().all())
    if reg.empty or metrics.empty:
        return reg
    wide = metrics.pivot_table(index=["symbol", "model_type", "version"], columns="metric", values="value")
    return reg.join(wide, on=["symbol", "model_type", "version"])


# --- the champion --------------------------------------------------------------------------------

def is_champion() -> sa.ColumnElement[bool]:
    """The champion rule, as a condition on model_registry: the one row per symbol with that status
    (a partial unique index enforces "one").  Every query for champions uses it."""
    return ModelRegistry.status == ChampionStatus.CHAMPION


def champion_row(engine: sa.Engine, symbol: str) -> ModelRegistry | None:
    """The symbol's one champion registry row (the database allows no second one)."""
    return _first(engine, sa.select(ModelRegistry).where(ModelRegistry.symbol == symbol, is_champion()))


def champion(engine: sa.Engine, symbol: str) -> ModelManifest | None:
    """The manifest of the version that trades `symbol`, or None before the first promotion."""
    row = champion_row(engine, symbol)
    return manifest(engine, symbol, row.model_type, row.version) if row is not None else None


def champions(engine: sa.Engine) -> dict[str, ModelRegistry]:
    return {r.symbol: r for r in _scalars(engine, sa.select(ModelRegistry).where(is_champion()))}


def champion_history(engine: sa.Engine, symbol: str) -> list[ChampionHistory]:
    return _scalars(engine, sa.select(ChampionHistory).where(ChampionHistory.symbol == symbol)
                    .order_by(ChampionHistory.created_at, ChampionHistory.event_id))


def previous_champion(engine: sa.Engine, symbol: str) -> ModelManifest | None:
    """The champion before the current one (the version a live rollback would restore)."""
    current = champion_row(engine, symbol)
    if current is None:
        return None
    changes = (Action.PROMOTE, Action.ROLLBACK, Action.PIN)
    events = [e for e in champion_history(engine, symbol) if e.action in changes]
    for event in reversed(events):
        if (event.model_type, event.version) == (current.model_type, current.version) and event.from_version:
            return manifest(engine, symbol, event.from_model_type, event.from_version)
    return None


@dataclass(frozen=True)
class Decision:
    """What a retrain's rollback step or the nightly live check decided for one symbol."""

    symbol: str
    as_of: dt.date
    config_hash: str
    action: str
    model_type: str
    version: int | None            # the version the decision is about (the candidate, or the champion)
    champion: tuple[str, int] | None  # the champion before the decision
    reason: str
    stats: Mapping[str, Any]


def logged_decision(engine: sa.Engine, symbol: str, as_of: dt.date, config_hash: str) -> RollbackLog | None:
    return _first(engine, sa.select(RollbackLog).where(
        RollbackLog.symbol == symbol, RollbackLog.as_of == as_of, RollbackLog.config_hash == config_hash))


def _set_status(conn: sa.Connection, symbol: str, model_type: str, version: int, status: str,
                stamp: dt.datetime) -> None:
    conn.execute(sa.update(ModelRegistry).where(
        ModelRegistry.symbol == symbol, ModelRegistry.model_type == model_type,
        ModelRegistry.version == version).values(status=status, updated_at=stamp))


def apply_decision(engine: sa.Engine, decision: Decision) -> RollbackLog:
    """Record `decision` and change statuses accordingly, once: the decision's log row is claimed first
    (insert ... on conflict do nothing), so a second copy of the same step (a duplicate request, a
    redelivery) finds the first one's row and changes nothing."""
    if decision.action not in DECISIONS:
        raise ValueError(f"unknown decision {decision.action!r}; one of {DECISIONS}")
    stamp = now()
    from_version = decision.champion[1] if decision.champion else None
    with engine.begin() as conn:
        claimed = conn.execute(_insert(conn, RollbackLog).values(
            symbol=decision.symbol, as_of=decision.as_of, config_hash=decision.config_hash, action=decision.action,
            model_type=decision.model_type, from_version=from_version,
            to_version=decision.version if decision.action in (Action.PROMOTE, Action.ROLLBACK) else from_version,
            reason=decision.reason, stats=store.jsonable(dict(decision.stats)), created_at=stamp)
            .on_conflict_do_nothing()).rowcount
        if claimed:
            _apply_statuses(conn, decision, stamp)
    return logged_decision(engine, decision.symbol, decision.as_of, decision.config_hash)


def _apply_statuses(conn: sa.Connection, d: Decision, stamp: dt.datetime) -> None:
    if d.action == Action.PROMOTE:
        if d.champion is not None:
            _set_status(conn, d.symbol, *d.champion, ChampionStatus.PREVIOUS, stamp)
        _set_status(conn, d.symbol, d.model_type, d.version, ChampionStatus.CHAMPION, stamp)
        _history(conn, d, Action.PROMOTE, stamp)
    elif d.action == Action.ROLLBACK:
        assert d.champion is not None
        _set_status(conn, d.symbol, *d.champion, ChampionStatus.ROLLED_BACK, stamp)
        _set_status(conn, d.symbol, d.model_type, d.version, ChampionStatus.CHAMPION, stamp)
        _history(conn, d, Action.ROLLBACK, stamp)
    elif d.action == Action.BACKFILL:
        _set_status(conn, d.symbol, d.model_type, d.version, ChampionStatus.BACKFILL, stamp)
    elif d.action in (Action.KEEP, Action.INSUFFICIENT_EVIDENCE) and d.version is not None and d.champion is not None \
            and (d.model_type, d.version) != tuple(d.champion):
        _set_status(conn, d.symbol, d.model_type, d.version, ChampionStatus.REJECTED, stamp)


def _history(conn: sa.Connection, d: Decision, action: str, stamp: dt.datetime) -> None:
    conn.execute(_insert(conn, ChampionHistory).values(
        symbol=d.symbol, event_id=f"{action}:{d.as_of.isoformat()}:{d.config_hash[:16]}", action=action,
        model_type=d.model_type, version=d.version,
        from_model_type=d.champion[0] if d.champion else None, from_version=d.champion[1] if d.champion else None,
        as_of=d.as_of, reason=d.reason, evidence=store.jsonable(dict(d.stats)), created_at=stamp)
        .on_conflict_do_nothing())


def pin_champion(engine: sa.Engine, symbol: str, model_type: str, version: int, reason: str) -> None:
    """An operator's choice of champion, recorded in the history like any promotion."""
    stamp = now()
    target = manifest(engine, symbol, model_type, version)
    with engine.begin() as conn:
        current = conn.execute(sa.select(ModelRegistry.model_type, ModelRegistry.version).where(
            ModelRegistry.symbol == symbol, is_champion())).first()
        if current is not None and (current.model_type, current.version) == (model_type, version):
            return
        if current is not None:
            _set_status(conn, symbol, current.model_type, current.version, ChampionStatus.PREVIOUS, stamp)
        _set_status(conn, symbol, model_type, version, ChampionStatus.CHAMPION, stamp)
        conn.execute(sa.insert(ChampionHistory).values(
            symbol=symbol, event_id=f"{Action.PIN}:{stamp.isoformat()}", action=Action.PIN, model_type=model_type,
            version=version, from_model_type=current.model_type if current else None,
            from_version=current.version if current else None, as_of=target.as_of, reason=reason, evidence={},
            created_at=stamp))


def rollback_log(engine: sa.Engine, symbol: str) -> list[RollbackLog]:
    return _scalars(engine, sa.select(RollbackLog).where(RollbackLog.symbol == symbol)
                    .order_by(RollbackLog.as_of, RollbackLog.created_at))


# --- comparison and per-regime choice ------------------------------------------------------------

def write_comparisons(engine: sa.Engine, rows: Sequence[Mapping[str, Any]]) -> None:
    store.upsert(engine, ModelComparison.__table__, list(rows))


def comparisons(engine: sa.Engine, symbol: str, as_of: dt.date | None = None) -> list[ModelComparison]:
    stmt = sa.select(ModelComparison).where(ModelComparison.symbol == symbol)
    if as_of is not None:
        stmt = stmt.where(ModelComparison.as_of == as_of)
    return _scalars(engine, stmt.order_by(ModelComparison.as_of, ModelComparison.rank))


def write_regime_choice(engine: sa.Engine, symbol: str, as_of: dt.date,
                        choice: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace the symbol's per-regime choice: {regime: {model_type, version, confidence, tradeable,
    reason, ...}}; regimes absent from `choice` are removed."""
    stamp = now()
    rows = [dict(symbol=symbol, regime=regime, model_type=str(c["model_type"]), version=c.get("version"),
                 confidence=finite(c.get("confidence")), tradeable=bool(c.get("tradeable")),
                 reason=str(c.get("reason") or ""), as_of=as_of, details=store.jsonable(dict(c)), updated_at=stamp)
            for regime, c in choice.items()]
    with engine.begin() as conn:
        conn.execute(sa.delete(RegimeChoice).where(RegimeChoice.symbol == symbol,
                                                   RegimeChoice.regime.not_in(list(choice))))
        if rows:
            store.upsert(conn, RegimeChoice.__table__, rows)


def regime_choice(engine: sa.Engine, symbol: str) -> dict[str, dict[str, Any]]:
    """{regime: {"model_type", "version", "confidence", "tradeable", "reason", "as_of"}}; model_type
    'flat' (version None) where nothing beat doing nothing."""
    return {r.regime: {"model_type": r.model_type, "version": r.version, "confidence": r.confidence,
                       "tradeable": r.tradeable, "reason": r.reason, "as_of": r.as_of}
            for r in _scalars(engine, sa.select(RegimeChoice).where(RegimeChoice.symbol == symbol))}


def previous_choice(engine: sa.Engine, symbol: str) -> dict[str, str]:
    """{regime: model type} of the current choice (selection's hysteresis starts from it)."""
    return {regime: c["model_type"] for regime, c in regime_choice(engine, symbol).items()}


# --- drift and findings --------------------------------------------------------------------------

def write_drift(engine: sa.Engine, rows: Sequence[Mapping[str, Any]]) -> None:
    store.upsert(engine, FeatureDrift.__table__, list(rows))


def drift_of(engine: sa.Engine, symbol: str, as_of: dt.date | None = None) -> list[FeatureDrift]:
    """The symbol's drift rows of `as_of` (default: its latest analysis)."""
    with Session(engine) as session:
        if as_of is None:
            as_of = session.scalar(sa.select(sa.func.max(FeatureDrift.as_of)).where(FeatureDrift.symbol == symbol))
        if as_of is None:
            return []
        return list(session.scalars(sa.select(FeatureDrift).where(
            FeatureDrift.symbol == symbol, FeatureDrift.as_of == as_of).order_by(FeatureDrift.feature)))


def open_findings_by_severity(engine: sa.Engine) -> dict[str, int]:
    return {sev: int(n) for sev, n in _rows(engine, sa.select(DataQualityLog.severity, sa.func.count()).where(
        DataQualityLog.resolved.is_(False)).group_by(DataQualityLog.severity))}


def findings_summary(engine: sa.Engine, symbol: str) -> list[tuple[str, str, int]]:
    """(check, severity, open count) of the symbol's unresolved data-quality findings."""
    return [(r.check, r.severity, int(r.n)) for r in _rows(engine, sa.select(
        DataQualityLog.check, DataQualityLog.severity, sa.func.count().label("n")).where(
        DataQualityLog.symbol == symbol, DataQualityLog.resolved.is_(False)).group_by(
        DataQualityLog.check, DataQualityLog.severity))]


def record_finding(engine: sa.Engine, *, source: str, symbol: str, timeframe: str, data_kind: str, check: str,
                   day: dt.date, details: Mapping[str, Any], severity: str = "error") -> None:
    """A finding logged once per (source, symbol, kind, check, day); a repeat only moves last_seen."""
    stamp = now()
    ts = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    store.upsert(engine, DataQualityLog.__table__, [dict(
        source=source, symbol=symbol, timeframe=timeframe, data_kind=data_kind[:16], check=check[:32],
        ts_start=ts, ts_end=None, severity=severity, details=store.jsonable(dict(details)), first_seen=stamp,
        last_seen=stamp, resolved=False, resolved_at=None)], update_columns=["details", "last_seen"])


def symbols_with_models(engine: sa.Engine) -> list[str]:
    """Symbols with a retrain's version (a replay's trainings alone do not make a symbol served)."""
    return sorted(set(_scalars(engine, sa.select(ModelRegistry.symbol).where(
        ModelRegistry.origin == Origin.RETRAIN).distinct())))


def known(engine: sa.Engine, values: Iterable[str]) -> set[str]:
    """Which of `values` have at least one registered version."""
    values = list(values)
    if not values:
        return set()
    return set(_scalars(engine, sa.select(ModelManifest.symbol).where(ModelManifest.symbol.in_(values)).distinct()))


# --- position sizers (model type ppo_sizer; see brain_tasks/ml/sizing.py) ------------------------

def latest_version(engine: sa.Engine, symbol: str, model_type: str) -> ModelManifest | None:
    """The symbol's newest version of `model_type` (latest as-of date, then highest version)."""
    return _first(engine, sa.select(ModelManifest).where(
        ModelManifest.symbol == symbol, ModelManifest.model_type == model_type)
        .order_by(ModelManifest.as_of.desc(), ModelManifest.version.desc()))


def current_sizer(engine: sa.Engine, symbol: str, model_type: str = "ppo_sizer") -> tuple[ModelManifest, bytes] | None:
    """The symbol's newest sizer version and its artifact bytes (sha256 checked), or None.

    The artifact carries the gate's outcome (which sizer sizes, and why) with the agent's weights."""
    found = latest_version(engine, symbol, model_type)
    if found is None:
        return None
    _fmt, data = load_artifact(engine, found.artifact_sha256)
    return found, data
