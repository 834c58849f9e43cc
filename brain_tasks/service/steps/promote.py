"""Rollback: the champion decisions.  After a retrain, does this run's best version replace the
champion (`check_rollback`)?  At night, is the champion worse live than the one it replaced
(`live_check`, called by `steps.analyse`)?  Both are applied by `registry.apply_decision` under a
claim per symbol; the decision's log row makes a repeat a no-op."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain import registry, store
from brain_tasks.brain.locks import claim
from brain_tasks.brain.tables import ModelManifest
from brain_tasks.service.chain import ChainState
from brain_tasks.service.steps.reads import Reads, label
from brain_tasks.settings import Settings
from brain_tasks.timekeeping import day_end, timeframe_seconds
from brain_tasks.vocabulary import Action

LIVE_DECISION_KEY = "live"  # the nightly decision's key in rollback_logs, beside the retrains' config hashes


def out_of_time_returns(engine: sa.Engine, settings: Settings, manifest: ModelManifest, start: dt.datetime,
                        end: dt.datetime, reads: Reads | None = None) -> pd.Series:
    """A version's strategy returns on the bars in (start, end]: features rebuilt with its own stored
    config, predictions from its own artifact, its own costs and execution lag.  `reads` (default: the
    Brain) is where the bars and the artifact come from."""
    from brain_tasks.ml.metrics import strategy_returns
    from brain_tasks.ml.pipeline import TrainConfig

    config = TrainConfig.from_dict(manifest.config)
    # Enough earlier bars for every rolling feature and the regime lookback to be warm at `start`.
    warmup = dt.timedelta(seconds=timeframe_seconds(config.timeframe) * (config.regime_lookback + 2 * 288))
    reads = reads or Reads(engine, settings)
    built = reads.window_dataset(manifest.symbol, dataclasses.replace(config, min_rows=1), start - warmup, end)
    if built is None:
        return pd.Series(dtype=float)
    X, _y, bar = built
    keep = X.index > pd.Timestamp(start)
    X, bar = X[keep], bar[keep]
    if X.empty:
        return pd.Series(dtype=float)
    pred = reads.model(manifest).predict(X.reindex(columns=manifest.feature_names))
    return pd.Series(strategy_returns(pd.Series(pred, index=X.index), bar, config.cost_bps).to_numpy(),
                     index=X.index)


def recent_returns(engine: sa.Engine, settings: Settings, candidate: ModelManifest,
                   champion: ModelManifest, reads: Reads | None = None) -> tuple[pd.Series, pd.Series]:
    """Strategy returns of candidate and champion on the same recent window, out of time for both.

    The window is the candidate's walk-forward out-of-sample bars that come after everything the
    champion was trained on (bars the champion saw would flatter it).
    """
    from brain_tasks.ml.metrics import strategy_returns

    reads = reads or Reads(engine, settings)
    oos = reads.oos(candidate)
    oos = oos[pd.to_datetime(oos["ts"], utc=True) > pd.Timestamp(champion.data_end)]
    if oos.empty:
        empty = pd.Series(dtype=float)
        return empty, empty
    X, _y = reads.dataset(candidate)
    X = X.loc[X.index.isin(pd.DatetimeIndex(pd.to_datetime(oos["ts"], utc=True)))]
    champion_X = X.reindex(columns=champion.feature_names)
    champion_pred = reads.model(champion).predict(champion_X)
    cost = float(candidate.config.get("cost_bps", 0.0))
    indexed = oos.set_index(pd.DatetimeIndex(pd.to_datetime(oos["ts"], utc=True)))
    bar = indexed["bar_return"].loc[X.index]
    champ = strategy_returns(pd.Series(champion_pred, index=X.index), bar, cost)
    cand = indexed["strategy_return"].loc[X.index]
    return cand, champ


def check_rollback(engine: sa.Engine, settings: Settings, state: ChainState) -> ChainState:
    """Decide whether this run's best version (the candidate) replaces the champion.

    - no champion yet: promote;
    - the candidate is already the champion, or nothing changed: nothing to decide;
    - trained as of a day before the champion's (a backfill): recorded, never promoted;
    - otherwise both trade the candidate's out-of-sample bars after the champion's training data, and
      the candidate is promoted unless it is significantly worse there (keep) or there are too few such
      bars to tell (insufficient_evidence: the champion stays).
    """
    from brain_tasks.ml.rollback import promotion_decision

    if not state.ok:
        return state
    if state.unchanged:
        return state.update(rollback={"action": Action.UNCHANGED, "reason": "inputs unchanged since the versions "
                                      "of an earlier day: nothing to decide"})
    with claim(engine, f"champion:{state.symbol}"):
        logged = registry.logged_decision(engine, state.symbol, state.as_of, state.config_hash)
        if logged is None:
            logged = registry.apply_decision(engine, _decide(engine, settings, state, promotion_decision))
    return state.update(rollback={"action": logged.action, "reason": logged.reason})


def _decide(engine: sa.Engine, settings: Settings, state: ChainState, rule: Any) -> registry.Decision:
    symbol, as_of = state.symbol, state.as_of
    candidate = registry.manifest(engine, symbol, state.best["model_type"], int(state.best["version"]))
    current = registry.champion(engine, symbol)

    def decision(action: Action, reason: str, stats: dict[str, Any] | None = None) -> registry.Decision:
        return registry.Decision(symbol=symbol, as_of=as_of, config_hash=state.config_hash, action=action,
                                 model_type=candidate.model_type, version=candidate.version,
                                 champion=(current.model_type, current.version) if current else None,
                                 reason=reason, stats=stats or {})

    return decision(*promotion(engine, settings, as_of, candidate, current, rule))


def promotion(engine: sa.Engine, settings: Settings, as_of: dt.date, candidate: ModelManifest,
              current: ModelManifest | None, rule: Any,
              recent: Any = None) -> tuple[Action, str, dict[str, Any]]:
    """The retrain's champion decision for `candidate` against `current` (None: no champion yet): action,
    reason and statistics.  Pure of any write: the chain applies it to the registry, a replay to the
    champion it holds in memory.  `recent(candidate, champion)` replaces `recent_returns` (a cache)."""
    if current is None:
        return Action.PROMOTE, f"{label(candidate)} becomes the first champion of {candidate.symbol}", {}
    if (current.model_type, current.version) == (candidate.model_type, candidate.version):
        return Action.KEEP, f"{label(candidate)} is already the champion", {}
    if as_of < current.as_of:
        return (Action.BACKFILL, f"{label(candidate)} was trained as of {as_of}, before the champion "
                f"{label(current)} (as of {current.as_of}): recorded as a backfill, not promoted", {})
    cand_r, champ_r = (recent or (lambda a, b: recent_returns(engine, settings, a, b)))(candidate, current)
    verdict = rule(cand_r, champ_r, alpha=0.05, min_samples=settings.min_evidence_bars)
    subject = {Action.PROMOTE: f"{label(candidate)} replaces {label(current)}",
               Action.KEEP: f"{label(current)} stays champion over {label(candidate)}",
               Action.INSUFFICIENT_EVIDENCE: f"{label(current)} stays champion; {label(candidate)} is not promoted"}
    action = Action(verdict.action)
    return action, f"{subject[action]}: {verdict.reason}", store.jsonable(verdict.stats)


def live_pair(engine: sa.Engine, settings: Settings, current: ModelManifest, previous: ModelManifest,
              end: dt.datetime, reads: Reads | None = None) -> tuple[pd.Series, pd.Series]:
    """The live check's evidence: the champion's and the previous champion's out-of-time returns on the
    bars in (the champion's data end, `end`]."""
    start = current.data_end
    return (out_of_time_returns(engine, settings, current, start, end, reads),
            out_of_time_returns(engine, settings, previous, start, end, reads))


def live_check(engine: sa.Engine, settings: Settings, symbol: str, as_of: dt.date) -> dict[str, Any]:
    """The champion against the previous champion on the bars it has met since it was trained (out of
    time for both); a significantly worse champion is rolled back to the previous one, logged with the
    statistics.  Both versions' out-of-time metrics are stored (evaluation 'out_of_time')."""
    from brain_tasks.ml.metrics import bars_per_year, strategy_metrics
    from brain_tasks.ml.rollback import live_rollback_decision

    current = registry.champion(engine, symbol)
    previous = registry.previous_champion(engine, symbol)
    if current is None or previous is None:
        return {"action": Action.NONE, "reason": "no previous champion to compare with"}
    ours, theirs = live_pair(engine, settings, current, previous, day_end(as_of))
    ppy = bars_per_year(settings.timeframe)
    for m, r in ((current, ours), (previous, theirs)):
        if len(r):
            registry.write_metrics(engine, symbol, m.model_type, m.version, "out_of_time", as_of,
                                   {"all": strategy_metrics(r, ppy)})
    with claim(engine, f"champion:{symbol}"):
        logged = registry.logged_decision(engine, symbol, as_of, LIVE_DECISION_KEY)
        if logged is None:
            verdict = live_rollback_decision(ours, theirs, alpha=0.05, min_samples=settings.min_evidence_bars)
            if verdict.action != Action.ROLLBACK:
                return {"action": verdict.action, "reason": f"{label(current)} stays champion: {verdict.reason}"}
            logged = registry.apply_decision(engine, registry.Decision(
                symbol=symbol, as_of=as_of, config_hash=LIVE_DECISION_KEY, action=Action.ROLLBACK,
                model_type=previous.model_type, version=previous.version,
                champion=(current.model_type, current.version),
                reason=f"{label(current)} rolled back to {label(previous)}: {verdict.reason}",
                stats=store.jsonable(verdict.stats)))
    return {"action": logged.action, "reason": logged.reason}
