"""Importance: make sure every version of this run has its out-of-sample feature importance."""

from __future__ import annotations

import sqlalchemy as sa

from brain_tasks.brain import registry
from brain_tasks.service.chain import ChainState
from brain_tasks.service.steps.reads import market_kwargs, rebuild, run_versions
from brain_tasks.settings import Settings


def compute_importance(engine: sa.Engine, settings: Settings, state: ChainState) -> ChainState:
    """Training stores importance; a version without it (trained before importance moved out of
    sample, or by an older worker) gets it by re-running its walk-forward on the rebuilt,
    digest-checked dataset (deterministic, so the same folds and models)."""
    from brain_tasks.ml.pipeline import TrainConfig, train_and_evaluate

    if not state.ok or state.unchanged:
        return state
    written = {}
    for manifest in run_versions(engine, state):
        have = registry.importance_count(engine, state.symbol, manifest.model_type, manifest.version)
        if not have:
            market, dataset = rebuild(engine, settings, manifest)
            result = train_and_evaluate(market["candles"], manifest.model_type, TrainConfig.from_dict(manifest.config),
                                        **market_kwargs(market), with_importance=True, dataset=dataset)
            rows = registry.importance_rows(state.symbol, manifest.model_type, manifest.version, manifest.as_of,
                                            result.importance)
            registry.write_importance(engine, rows)
            have = len(rows)
        written[manifest.model_type] = int(have)
    return state.update(importance_rows=written)
