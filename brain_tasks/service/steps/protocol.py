"""The one way a version gets trained: find, claim, find again, same inputs, register.

A training's identity is (symbol, model type, as-of day, config hash).  The protocol:
1. a version of that identity exists: return it (finished work is not redone);
2. claim the (symbol, model type): every training of it shares one sequence of version numbers, and a
   concurrent copy waits here, then
3. finds the version the other copy registered meanwhile;
4. inputs identical to an earlier version's (same config hash, same input digest): return that version,
   since nothing new is learnt from the same data;
5. else fit, and register the new version (artifact, metrics, manifest, registry row) in one
   transaction, still under the claim.

Supervised models (`steps.train`) and the position sizer (`steps.sizer`) both train through it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from brain_tasks import __version__
from brain_tasks.brain import registry
from brain_tasks.brain.locks import claim
from brain_tasks.brain.tables import ModelManifest
from brain_tasks.service.chain import ModelOutcome
from brain_tasks.vocabulary import Origin, Status


@dataclass(frozen=True)
class Inputs:
    """What a training is fitted on, and the digest that says whether an earlier version saw the same."""

    digest: str
    data: Any
    same_as: str = "trained on the same data with the same config"  # the reuse reason's ending


@dataclass(frozen=True)
class Fitted:
    """A fitted result ready to register (anything `registry.register_version` takes)."""

    result: Any
    config: dict[str, Any]
    seed: int


def train_once(engine: sa.Engine, symbol: str, model_type: str, as_of: dt.date, config_hash: str, *,
               prepare: Callable[[], Inputs | ModelOutcome], fit: Callable[[Inputs], Fitted],
               after_register: Callable[[int, Fitted], None] | None = None,
               origin: str = Origin.RETRAIN) -> tuple[ModelOutcome, Fitted | None]:
    """Train (symbol, model type, as-of, config) at most once; returns the outcome and, when this call
    trained, the fitted result.

    `prepare` reads the inputs under the claim; it may instead return an outcome that ends the
    training (data too old, say).  `after_register` runs under the claim too (the sizer writes its
    comparison rows there).  `origin` marks a new version as a retrain's or a replay's (`Origin`)."""
    started = time.perf_counter()

    def found(version: ModelManifest, reason: str, **extra: Any) -> tuple[ModelOutcome, None]:
        return ModelOutcome(model_type=model_type, status=Status.OK, version=version.version, trained=False,
                            reason=reason, config_hash=config_hash, seconds=round(time.perf_counter() - started, 4),
                            **extra), None

    done = registry.find_version(engine, symbol, model_type, as_of, config_hash)
    if done is not None:
        return found(done, f"{model_type} v{done.version} was already trained for this as-of date and config")
    with claim(engine, f"train:{symbol}:{model_type}"):
        done = registry.find_version(engine, symbol, model_type, as_of, config_hash)
        if done is not None:
            return found(done, f"{model_type} v{done.version} was trained meanwhile by another copy")
        inputs = prepare()
        if isinstance(inputs, ModelOutcome):
            return inputs, None
        same = registry.find_same_inputs(engine, symbol, model_type, config_hash, inputs.digest)
        if same is not None:
            return found(same, f"inputs unchanged: {model_type} v{same.version} (as of {same.as_of}) was "
                         + inputs.same_as, reused_as_of=same.as_of.isoformat())
        fitted = fit(inputs)
        version = registry.register_version(engine, symbol, model_type, as_of, config=fitted.config,
                                            config_hash=config_hash, result=fitted.result, code_version=__version__,
                                            seed=fitted.seed, origin=origin)
        if after_register is not None:
            after_register(version, fitted)
    return ModelOutcome(model_type=model_type, status=Status.OK, version=version, trained=True, reason="trained",
                        config_hash=config_hash, seconds=round(time.perf_counter() - started, 4)), fitted
