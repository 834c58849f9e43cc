"""Select: what to trade in each volatility regime (and overall)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from brain_tasks.brain import registry
from brain_tasks.brain.tables import ModelManifest
from brain_tasks.intake import MODEL_TYPES
from brain_tasks.service.chain import ChainState
from brain_tasks.service.steps.reads import label, run_versions
from brain_tasks.settings import Settings
from brain_tasks.vocabulary import Action, ChampionStatus

SELECT_STEP = "select_model"


def configs_tried(engine: sa.Engine, symbol: str, until: dt.date | None = None) -> int:
    """The configurations tried for the symbol's candidate models (as of `until` at the latest): the number
    of distinct config hashes among its versions of a model type the selection chooses among.  The
    position sizer's versions (`ppo_sizer`) are not candidates, so they are no trials of the deflated
    Sharpe ratio; counting them would deflate the models for tries that never competed."""
    return len({m.config_hash for m in registry.manifests(engine, symbol)
                if m.model_type in MODEL_TYPES and (until is None or m.as_of <= until)})


def selection_candidates(versions: list[ModelManifest], rejected: tuple[str, int] | None,
                         in_use: dict[str, ModelManifest]) -> list[ModelManifest]:
    """What the per-regime selection chooses among after a retrain: the run's versions, with the rejected
    candidate (the champion stayed: the candidate was significantly worse, or there were too few bars to
    tell) replaced by the version of its model type in use before the run (`in_use`: model type -> the
    champion, or the version the previous choice traded), or left out when there is none.

    Why a stand-in: leaving the rejected version out took its whole model type out of the selection, so
    every regime that type traded went flat for the day while the version that earned the choice (often
    the champion itself) was still there; with daily retrains and one day of new bars the promotion test
    has too few bars every other day, and a type's regimes blinked flat on those days (the replay's
    planted market (a) showed it).  `rejected` is (model type, version)."""
    out = []
    for v in versions:
        if rejected is not None and (v.model_type, int(v.version)) == rejected:
            stand_in = in_use.get(v.model_type)
            if stand_in is not None and (stand_in.model_type, int(stand_in.version)) != rejected:
                out.append(stand_in)
        else:
            out.append(v)
    return out


def choose_per_regime(engine: sa.Engine, settings: Settings, versions: list[ModelManifest], n_configs: int,
                      previous: dict[str, str], oos: Any = None) -> dict[str, dict[str, Any]]:
    """`ml.regimes.select_per_regime` over `versions`' walk-forward OOS frames, as the chain calls it:
    every configuration tried for the symbol (`n_configs`) counts in the deflated Sharpe ratio's trials,
    `previous` (regime -> model) is the incumbent choice kept by hysteresis.  `oos(version)` replaces the
    stored frame's read (a cache)."""
    from brain_tasks.ml.metrics import bars_per_year
    from brain_tasks.ml.regimes import select_per_regime

    read = oos or (lambda v: registry.oos_frame(engine, v.oos_sha256))
    frames = {v.model_type: read(v) for v in versions}
    n_trials = None if n_configs <= 1 else n_configs * (len(frames) + 1) * 5
    return select_per_regime(frames, periods_per_year=bars_per_year(settings.timeframe), n_trials=n_trials,
                             dsr_level=settings.dsr_level, previous=previous)


def select_model(engine: sa.Engine, settings: Settings, state: ChainState) -> ChainState:
    """Pick among this run's versions, buy-and-hold and flat: a candidate is chosen only when its deflated
    Sharpe ratio over every trial reaches `settings.dsr_level`, else the choice is flat (not tradeable,
    with the reason).  A rejected candidate is replaced by the version of its type in use
    (`selection_candidates`; the reasons say so); when the champion decision set aside every version of
    the run and none stands in, every regime's choice is flat with that reason.  A backfill or an
    unchanged run leaves the current choice alone."""
    symbol = state.symbol
    current = registry.regime_choice(engine, symbol)
    if current and min(c["as_of"] for c in current.values()) >= state.as_of:
        # Selected already for this day (a repeated step) or for a later one: finished work stands.
        return state.update(selection={k: v["model_type"] for k, v in current.items()},
                            tradeable=sorted(k for k, v in current.items() if v["tradeable"]))
    if not state.ok or state.action in (Action.BACKFILL, Action.UNCHANGED):
        return state
    run = run_versions(engine, state)
    if not run:  # no input at all: nothing reached this step to choose among
        return state.failed(SELECT_STEP, "no version of this run to choose among")
    rows = {(r.model_type, r.version): r for r in registry.registry_rows(engine, symbol)}
    ran = [v for v in run if rows[(v.model_type, v.version)].status != ChampionStatus.BACKFILL]
    rejected = next((v for v in ran if rows[(v.model_type, v.version)].status == ChampionStatus.REJECTED), None)
    in_use = {c["model_type"]: registry.manifest(engine, symbol, c["model_type"], int(c["version"]))
              for c in current.values() if c.get("version") is not None}
    champion = registry.champion(engine, symbol)
    if champion is not None:
        in_use[champion.model_type] = champion
    versions = selection_candidates(ran, (rejected.model_type, int(rejected.version)) if rejected else None, in_use)
    by_type = {v.model_type: v.version for v in versions}
    if versions:
        choice = choose_per_regime(engine, settings, versions, configs_tried(engine, symbol),
                                   registry.previous_choice(engine, symbol))
        ran_keys = {(v.model_type, int(v.version)) for v in ran}
        stand_in = next((v for v in versions if (v.model_type, int(v.version)) not in ran_keys), None)
        if rejected is not None and stand_in is not None:
            note = f" ({label(rejected)} rejected, {label(stand_in)} chosen among in its place" + (
                f": {state.rollback['reason']})" if state.rollback else ")")
            choice = {scope: {**c, "reason": c["reason"] + note} for scope, c in choice.items()}
    else:
        # Every candidate was set aside by the champion decision: a decision too, recorded as flat per regime
        # (what the chooser does when nothing beats flat), so serving, status and the next run's hysteresis see it.
        from brain_tasks.ml.regimes import FLAT, SCOPES

        why = ", ".join(f"{label(v)} {rows[(v.model_type, v.version)].status}" for v in run)
        reason = f"Flat: every version of this run was set aside ({why})" + (
            f": {state.rollback['reason']}" if state.rollback else ".")
        choice = {scope: {"model": FLAT, "confidence": None, "tradeable": False, "reason": reason}
                  for scope in SCOPES}
    registry.write_regime_choice(engine, symbol, state.as_of, {
        regime: {**{k: v for k, v in c.items() if k not in ("model",)}, "model_type": c["model"],
                 "version": by_type.get(c["model"])}
        for regime, c in choice.items()})
    return state.update(selection={k: v["model"] for k, v in choice.items()},
                        tradeable=sorted(k for k, v in choice.items() if v["tradeable"]))
