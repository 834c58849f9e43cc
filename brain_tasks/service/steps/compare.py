"""Compare: rank this run's versions of a symbol by composite score and name the best candidate."""

from __future__ import annotations

import sqlalchemy as sa

from brain_tasks.brain import registry, store
from brain_tasks.brain.tables import ModelManifest
from brain_tasks.service.chain import ChainState
from brain_tasks.service.steps.reads import train_config
from brain_tasks.service.steps.train import TRAIN_STEP
from brain_tasks.settings import Settings
from brain_tasks.vocabulary import Status


def rank_versions(engine: sa.Engine, versions: list[ModelManifest]) -> list[tuple[float, ModelManifest, dict]]:
    """(composite score, version, its walk-forward metrics over all regimes), best first (ties: by model
    type): the ranking the chain's comparison and a replay's walk both use."""
    from brain_tasks.ml.metrics import composite_score

    scored = []
    for v in versions:
        overall = registry.metrics_of(engine, v.symbol, v.model_type, v.version).get("all", {})
        scored.append((composite_score(overall), v, overall))
    scored.sort(key=lambda item: (-item[0], item[1].model_type))
    return scored


def compare_models(engine: sa.Engine, settings: Settings, state: ChainState) -> ChainState:
    """Rank the versions the trainings returned; store the ranking with flat and buy-and-hold beside it.

    A stale training makes the chain stale; no version at all fails it.  When every model type came back
    with a version of an earlier day on identical inputs, nothing is new: the chain goes on `unchanged`
    and writes nothing."""
    from brain_tasks.ml.metrics import bars_per_year
    from brain_tasks.ml.regimes import benchmark_metrics

    outcomes = list(state.models.values())
    failures = {m.model_type: m.error or Status.FAILED for m in outcomes if not m.ok}
    state = state.update(config_hash=train_config(settings).config_hash(), failed_models=failures)
    # The chain ends at the training that found it so, not here: its step is what `status` names.
    stale = [m for m in outcomes if m.status == Status.STALE]
    if stale:
        return state.failed(stale[0].step or TRAIN_STEP, stale[0].error or Status.STALE, Status.STALE)
    done = [m for m in outcomes if m.ok]
    if not done:
        errors = "; ".join(f"{m}: {e}" for m, e in failures.items()) or "no model was trained"
        return state.failed(next((m.step for m in outcomes if m.step), TRAIN_STEP), errors)
    symbol, as_of = state.symbol, state.as_of
    versions = [registry.manifest(engine, symbol, m.model_type, int(m.version)) for m in done]
    scored = rank_versions(engine, versions)
    best = scored[0][1]
    state = state.update(best={"model_type": best.model_type, "version": best.version},
                         ranking=[v.model_type for _, v, _ in scored],
                         versions={v.model_type: v.version for v in versions})
    if all(m.reused_as_of for m in done):
        return state.update(unchanged=True)
    rows = [dict(model_type=v.model_type, version=v.version, composite_score=float(score), is_best=v is best,
                 metrics=store.jsonable(overall)) for score, v, overall in scored]
    # Flat and buy-and-hold on the best candidate's out-of-sample bars: what a model must beat.
    bench = benchmark_metrics(registry.oos_frame(engine, best.oos_sha256), bars_per_year(settings.timeframe))
    rows += [dict(model_type=name, version=0, composite_score=float(m["composite"]), is_best=False,
                  metrics=store.jsonable(m)) for name, m in bench.items()]
    rows.sort(key=lambda r: (-r["composite_score"], not r["is_best"], r["model_type"]))
    registry.write_comparisons(engine, [dict(symbol=symbol, as_of=as_of, config_hash=state.config_hash, rank=i + 1,
                                             **r) for i, r in enumerate(rows)])
    return state.update(benchmarks={name: round(float(m["composite"]), 6) for name, m in bench.items()})
