"""Read models for the report and other read-only surfaces: every query they need, named, in one place.

Rows come back as SQLAlchemy rows (attribute access); the callers shape them for display.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from brain_tasks.brain.tables import (Candle, DataQualityLog, FeatureDrift, FeatureImportance, ModelComparison,
                                      ModelManifest, ModelRegistry, RollbackLog, TrainingRun)
from brain_tasks.intake import RUN_SUMMARY_SYMBOL
from brain_tasks.vocabulary import ChampionStatus, Origin


def has_schema(engine: sa.Engine) -> bool:
    return sa.inspect(engine).has_table(ModelManifest.__tablename__)


def known_symbols(engine: sa.Engine) -> list[str]:
    """Every symbol with candles, models, runs, drift or data-quality findings, sorted."""
    queries = [sa.select(Candle.symbol).distinct(), sa.select(ModelManifest.symbol).distinct(),
               sa.select(TrainingRun.symbol).where(TrainingRun.symbol != RUN_SUMMARY_SYMBOL).distinct(),
               sa.select(FeatureDrift.symbol).distinct(), sa.select(DataQualityLog.symbol).distinct()]
    found: set[str] = set()
    with engine.connect() as conn:
        for query in queries:
            found.update(conn.execute(query).scalars())
    return sorted(found)


def run_summaries(engine: sa.Engine, limit: int) -> list[Any]:
    """The runs' own summary rows, newest first."""
    with engine.connect() as conn:
        return list(conn.execute(sa.select(TrainingRun).where(TrainingRun.symbol == RUN_SUMMARY_SYMBOL)
                                 .order_by(TrainingRun.as_of.desc(), TrainingRun.run_id.desc()).limit(limit)))


@dataclass
class SymbolRecords:
    """The stored facts about one symbol that a report shows."""

    latest_as_of: dt.date | None = None
    rollbacks: list[Any] = field(default_factory=list)
    drift_as_of: dt.date | None = None
    drift: list[Any] = field(default_factory=list)
    quality: list[tuple[str, str, int]] = field(default_factory=list)
    runs: list[Any] = field(default_factory=list)
    registry: list[Any] = field(default_factory=list)
    champion: Any = None
    manifests: list[Any] = field(default_factory=list)   # the latest day's, plus the champion's
    comparisons: list[Any] = field(default_factory=list)


def symbol_records(engine: sa.Engine, symbol: str, *, max_runs: int) -> SymbolRecords:
    rec = SymbolRecords()
    with engine.connect() as conn:
        rows = lambda stmt: list(conn.execute(stmt))  # noqa: E731
        # The retrains' versions: a replay's own trainings are the replay's (see brain/replays.py).
        rec.latest_as_of = conn.execute(sa.select(sa.func.max(ModelRegistry.as_of)).where(
            ModelRegistry.symbol == symbol, ModelRegistry.origin == Origin.RETRAIN)).scalar()
        rec.rollbacks = rows(sa.select(RollbackLog).where(RollbackLog.symbol == symbol)
                             .order_by(RollbackLog.as_of.desc(), RollbackLog.created_at.desc()))
        rec.drift_as_of = conn.execute(sa.select(sa.func.max(FeatureDrift.as_of))
                                       .where(FeatureDrift.symbol == symbol)).scalar()
        if rec.drift_as_of is not None:
            rec.drift = rows(sa.select(FeatureDrift).where(
                FeatureDrift.symbol == symbol, FeatureDrift.as_of == rec.drift_as_of)
                .order_by(FeatureDrift.psi.desc(), FeatureDrift.feature))
        rec.quality = [(r.check, r.severity, int(r.n)) for r in rows(sa.select(
            DataQualityLog.check, DataQualityLog.severity, sa.func.count().label("n"))
            .where(DataQualityLog.symbol == symbol, DataQualityLog.resolved.is_(False))
            .group_by(DataQualityLog.check, DataQualityLog.severity)
            .order_by(DataQualityLog.check, DataQualityLog.severity))]
        rec.runs = rows(sa.select(TrainingRun).where(TrainingRun.symbol == symbol)
                        .order_by(TrainingRun.as_of.desc(), TrainingRun.run_id.desc()).limit(max_runs))
        if rec.latest_as_of is None:
            return rec
        rec.registry = rows(sa.select(ModelRegistry).where(ModelRegistry.symbol == symbol,
                                                               ModelRegistry.origin == Origin.RETRAIN)
                            .order_by(ModelRegistry.as_of, ModelRegistry.updated_at, ModelRegistry.model_type))
        rec.champion = next((r for r in rec.registry if r.status == ChampionStatus.CHAMPION), None)
        rec.manifests = rows(sa.select(ModelManifest).join(ModelRegistry, sa.and_(
            ModelRegistry.symbol == ModelManifest.symbol, ModelRegistry.model_type == ModelManifest.model_type,
            ModelRegistry.version == ModelManifest.version)).where(
            ModelManifest.symbol == symbol, ModelManifest.as_of == rec.latest_as_of,
            ModelRegistry.origin == Origin.RETRAIN)
            .order_by(ModelManifest.model_type, ModelManifest.version))
        rec.comparisons = rows(sa.select(ModelComparison).where(
            ModelComparison.symbol == symbol, ModelComparison.as_of == rec.latest_as_of)
            .order_by(ModelComparison.config_hash, ModelComparison.rank))
        champ = rec.champion
        if champ is not None and (champ.model_type, champ.version) not in {
                (m.model_type, m.version) for m in rec.manifests}:
            # A champion kept from an earlier day is still what trades: show it too.
            rec.manifests += rows(sa.select(ModelManifest).where(
                ModelManifest.symbol == symbol, ModelManifest.model_type == champ.model_type,
                ModelManifest.version == champ.version))
    return rec


def top_importance(engine: sa.Engine, symbol: str, model_type: str, version: int,
                   method_order: Sequence[str], limit: int) -> tuple[str | None, list[Any]]:
    """The version's importance by the first available method of `method_order`, top `limit` features."""
    where = (FeatureImportance.symbol == symbol, FeatureImportance.model_type == model_type,
             FeatureImportance.version == version)
    with engine.connect() as conn:
        methods = set(conn.execute(sa.select(FeatureImportance.method).where(*where).distinct()).scalars())
        if not methods:
            return None, []
        order = {m: i for i, m in enumerate(method_order)}
        method = min(methods, key=lambda m: (order.get(m, len(order)), m))
        return method, list(conn.execute(sa.select(FeatureImportance).where(*where, FeatureImportance.method == method)
                                         .order_by(FeatureImportance.rank, FeatureImportance.feature).limit(limit)))
