"""Sizer: train and judge the symbol's position sizer after its models were selected.

The sizer of a symbol is trained on its champion's stored walk-forward out-of-sample predictions (see
`brain_tasks.ml.sizing`), stored as a version of model type ``ppo_sizer`` through the training protocol
(`steps.protocol`: inputs identical to an earlier version's, the same OOS frame, return that version),
and compared with the two baselines in ``model_comparisons`` (rows ``ppo_sizer``, ``sign_sizing``,
``vol_target_sizing``; ``is_best`` marks the one that sizes).  Its outcome never fails the chain.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa

from brain_tasks.brain import registry, store
from brain_tasks.brain.tables import ModelManifest
from brain_tasks.service.chain import ChainState, ModelOutcome
from brain_tasks.service.steps.protocol import Fitted, Inputs, train_once
from brain_tasks.settings import Settings
from brain_tasks.vocabulary import Status

MODEL_TYPE = "ppo_sizer"
NOTHING_TRADEABLE = "nothing tradeable: sizing cannot act"


def sizer_config(settings: Settings, source: ModelManifest) -> Any:
    """The sizer's config for a supervised version: its timeframe and costs; the delay until a bar's
    return is known and the embargo follow its execution lag and label horizon."""
    from brain_tasks.ml.sizing import SizerConfig

    cfg = source.config or {}
    lag, horizon = int(cfg.get("execution_lag", 1)), int(cfg.get("horizon", 12))
    return SizerConfig(timeframe=str(cfg.get("timeframe", settings.timeframe)),
                       cost_bps=float(cfg.get("cost_bps", 5.0)), delay=lag + 1, embargo=horizon + lag,
                       seed=settings.seed, total_timesteps=settings.sizer_timesteps)


def comparison_rows(symbol: str, as_of: dt.date, config_hash: str, version: int, result: Any) -> list[dict[str, Any]]:
    """The three sizers on the agent's test bars: the one that sizes ranks first, then by Sharpe."""
    from brain_tasks.ml.sizing import AGENT, SIZERS

    gate = result.gate
    order = sorted(SIZERS, key=lambda s: (s != gate.active, -result.sizer_metrics[s]["sharpe"], s))
    rows = []
    for rank, sizer in enumerate(order, start=1):
        metrics = dict(result.sizer_metrics[sizer])
        if sizer != AGENT:
            metrics["agent_p_value"] = gate.tests[sizer].p_greater  # H1: the agent's Sharpe is higher
        rows.append({"symbol": symbol, "as_of": as_of, "config_hash": config_hash, "model_type": sizer,
                     "version": version, "composite_score": float(metrics["composite"]), "rank": rank,
                     "is_best": sizer == gate.active,
                     "metrics": store.jsonable({**metrics, "sizes": gate.active, "reason": gate.reason,
                                                "n_test_bars": len(result.oos)})})
    return rows


def train_sizer(engine: sa.Engine, settings: Settings, state: ChainState) -> ChainState:
    """The state with its `sizer` outcome.  Skipped (a status, not an error) when the chain before it did
    not succeed, when ``BRAIN_SIZER_TIMESTEPS`` is 0, when the symbol's selection trades nothing, when
    it has no champion, or when no tradeable regime trades the champion (the version it would size)."""
    return state.update(sizer=_sizer_outcome(engine, settings, state))


def tradeable_scopes(engine: sa.Engine, state: ChainState) -> dict[str, dict[str, Any]]:
    """The scopes (regimes, "all") whose current choice trades: {scope: its stored choice}.  The chain's
    `tradeable` names them when the select step ran; a backfill or an unchanged run leaves the stored
    choice standing (the state carries none), and that stored choice is what serving reads."""
    stored = registry.regime_choice(engine, state.symbol)
    if state.tradeable is None:
        return {scope: c for scope, c in stored.items() if c["tradeable"]}
    return {scope: stored.get(scope, {"model_type": (state.selection or {}).get(scope), "version": None})
            for scope in state.tradeable}


def _sizer_outcome(engine: sa.Engine, settings: Settings, state: ChainState) -> ModelOutcome:
    def skipped(reason: str) -> ModelOutcome:
        return ModelOutcome(model_type=MODEL_TYPE, status=Status.SKIPPED, reason=reason)

    if not state.ok:
        return skipped("the symbol's chain did not succeed: no sizer trained")
    if settings.sizer_timesteps <= 0:
        return skipped("the sizer is off (BRAIN_SIZER_TIMESTEPS=0)")
    trading = tradeable_scopes(engine, state)
    if not trading:
        return skipped(NOTHING_TRADEABLE)
    symbol, as_of = state.symbol, state.as_of
    source = registry.champion(engine, symbol)
    if source is None:
        return skipped("no champion: nothing to size")
    if not any(c.get("model_type") == source.model_type and c.get("version") in (None, source.version)
               for c in trading.values()):
        traded = ", ".join(sorted({f"{c.get('model_type')}" + (f" v{c['version']}" if c.get("version") else "")
                                   for c in trading.values()}))
        return skipped(f"the tradeable regimes trade {traded}, not the champion {source.model_type} "
                       f"v{source.version} the sizer is trained on: sizing cannot act")
    from brain_tasks.ml import sizing  # after the skips: a symbol that cannot be sized imports none of it

    config = sizer_config(settings, source)
    chash = config.config_hash()

    def prepare() -> Inputs:
        oos = registry.oos_frame(engine, source.oos_sha256)
        return Inputs(digest=sizing.frame_digest(oos), data=oos,
                      same_as=f"trained on the same predictions of {source.model_type} v{source.version}")

    def fit(inputs: Inputs) -> Fitted:
        result = sizing.train_sizer(inputs.data, config, source={"model_type": source.model_type,
                                                                 "version": source.version,
                                                                 "oos_sha256": source.oos_sha256})
        return Fitted(result=result, config=config.to_dict(), seed=config.seed)

    def compare(version: int, fitted: Fitted) -> None:
        registry.write_comparisons(engine, comparison_rows(symbol, as_of, chash, version, fitted.result))

    outcome, fitted = train_once(engine, symbol, MODEL_TYPE, as_of, chash, prepare=prepare, fit=fit,
                                 after_register=compare)
    if fitted is not None:
        gate = fitted.result.gate
        return dataclasses.replace(outcome, sizes=gate.active, gate=gate.reason,
                                   source=f"{source.model_type} v{source.version}")
    version = registry.manifest(engine, symbol, MODEL_TYPE, int(outcome.version))
    chosen = next((c for c in registry.comparisons(engine, symbol, version.as_of)
                   if c.config_hash == version.config_hash and c.is_best), None)
    return dataclasses.replace(outcome, sizes=chosen.model_type if chosen else None,
                               gate=(chosen.metrics or {}).get("reason") if chosen else None)


def current_sizer(engine: sa.Engine, symbol: str) -> Any:
    """The symbol's current sizer (`brain_tasks.ml.sizing.Sizer`), or None before the first one.

    ``sizer.active`` names the rule that sizes (``ppo_sizer`` only when the agent passed the gate),
    ``sizer.reason`` says why, ``sizer.description["source"]`` the supervised version whose predictions
    it was trained on; `brain_tasks.ml.sizing.size_for(sizer, observation)` gives the size."""
    from brain_tasks.ml.sizing import Sizer

    found = registry.current_sizer(engine, symbol, MODEL_TYPE)
    return None if found is None else Sizer.from_bytes(found[1])
