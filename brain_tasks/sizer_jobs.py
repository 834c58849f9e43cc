"""The work behind `brain_tasks.train_sizer`, and the read the serving code uses.

The sizer of a symbol is trained on its champion's stored walk-forward out-of-sample predictions (see
`brain_tasks.ml.sizing`), stored as a version of model type ``ppo_sizer`` (manifest, registry row,
metrics, artifact with sha256) and compared with the two baselines in ``model_comparisons`` (rows
``ppo_sizer``, ``sign_sizing``, ``vol_target_sizing``; ``is_best`` marks the one that sizes).
Idempotent like training: a finished (symbol, as-of, config) identity is returned, and inputs identical
to an earlier version's (same config, same OOS frame) return that version.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import sqlalchemy as sa

from brain_tasks import __version__
from brain_tasks.brain import registry, store
from brain_tasks.brain.locks import claim
from brain_tasks.brain.models import ModelManifest
from brain_tasks.settings import Settings

OK, SKIPPED = "succeeded", "skipped"
MODEL_TYPE = "ppo_sizer"


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
            metrics["agent_p_value"] = gate.tests[sizer].p_value  # H1: the agent's Sharpe is higher
        rows.append({"symbol": symbol, "as_of": as_of, "config_hash": config_hash, "model_type": sizer,
                     "version": version, "composite_score": float(metrics["composite"]), "rank": rank,
                     "is_best": sizer == gate.active,
                     "metrics": store.jsonable({**metrics, "sizes": gate.active, "reason": gate.reason,
                                                "n_test_bars": len(result.oos)})})
    return rows


def train_sizer(engine: sa.Engine, settings: Settings, prev: Any, symbol: str, as_of: dt.date) -> dict[str, Any]:
    """Train, judge and store the symbol's sizer after its models were selected.

    Skipped (a status, not an error) when the chain before it did not succeed, when the symbol has no
    champion, or when ``BRAIN_SIZER_TIMESTEPS`` is 0."""
    from brain_tasks.ml import sizing

    started = time.perf_counter()
    base = {"symbol": symbol, "model_type": MODEL_TYPE, "as_of": as_of.isoformat()}

    def skipped(reason: str) -> dict[str, Any]:
        return {**base, "status": SKIPPED, "reason": reason}

    if not isinstance(prev, dict) or prev.get("status") != OK:
        return skipped("the symbol's chain did not succeed: no sizer trained")
    if settings.sizer_timesteps <= 0:
        return skipped("the sizer is off (BRAIN_SIZER_TIMESTEPS=0)")
    source = registry.champion(engine, symbol)
    if source is None:
        return skipped("no champion: nothing to size")
    config = sizer_config(settings, source)
    chash = config.config_hash()
    base["config_hash"] = chash

    def answer(version: ModelManifest, trained: bool, reason: str) -> dict[str, Any]:
        chosen = next((c for c in registry.comparisons(engine, symbol, version.as_of)
                       if c.config_hash == version.config_hash and c.is_best), None)
        return {**base, "status": OK, "version": version.version, "trained": trained, "reason": reason,
                "sizes": chosen.model_type if chosen else None,
                "gate": (chosen.metrics or {}).get("reason") if chosen else None,
                "seconds": round(time.perf_counter() - started, 4)}

    done = registry.find_version(engine, symbol, MODEL_TYPE, as_of, chash)
    if done is not None:
        return answer(done, False, f"{MODEL_TYPE} v{done.version} was already trained for this as-of date and config")
    with claim(engine, f"train:{symbol}:{MODEL_TYPE}"):
        done = registry.find_version(engine, symbol, MODEL_TYPE, as_of, chash)
        if done is not None:
            return answer(done, False, f"{MODEL_TYPE} v{done.version} was trained meanwhile by another copy")
        oos = registry.oos_frame(engine, source.oos_sha256)
        same = registry.find_same_inputs(engine, symbol, MODEL_TYPE, chash, sizing.frame_digest(oos))
        if same is not None:
            return answer(same, False, f"inputs unchanged: {MODEL_TYPE} v{same.version} (as of {same.as_of}) was "
                          f"trained on the same predictions of {source.model_type} v{source.version}")
        result = sizing.train_sizer(oos, config, source={"model_type": source.model_type,
                                                         "version": source.version, "oos_sha256": source.oos_sha256})
        version = registry.register_version(engine, symbol, MODEL_TYPE, as_of, config=config.to_dict(),
                                            config_hash=chash, result=result, code_version=__version__,
                                            seed=config.seed)
        registry.write_comparisons(engine, comparison_rows(symbol, as_of, chash, version, result))
    return {**base, "status": OK, "version": version, "trained": True, "reason": "trained",
            "sizes": result.gate.active, "gate": result.gate.reason,
            "source": f"{source.model_type} v{source.version}", "seconds": round(time.perf_counter() - started, 4)}


def current_sizer(engine: sa.Engine, symbol: str) -> Any:
    """The symbol's current sizer (`brain_tasks.ml.sizing.Sizer`), or None before the first one.

    ``sizer.active`` names the rule that sizes (``ppo_sizer`` only when the agent passed the gate),
    ``sizer.reason`` says why, ``sizer.description["source"]`` the supervised version whose predictions
    it was trained on; `brain_tasks.ml.sizing.size_for(sizer, observation)` gives the size."""
    from brain_tasks.ml.sizing import Sizer

    found = registry.current_sizer(engine, symbol, MODEL_TYPE)
    return None if found is None else Sizer.from_bytes(found[1])
