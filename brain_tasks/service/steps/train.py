"""Train: walk-forward train one (symbol, model type, as-of) and register the new version."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain import registry
from brain_tasks.service.chain import ModelOutcome
from brain_tasks.service.steps.reads import load_market, market_kwargs, train_config
from brain_tasks.service.steps.protocol import Fitted, Inputs, train_once
from brain_tasks.settings import Settings
from brain_tasks.timekeeping import day_end
from brain_tasks.vocabulary import Origin, Status


# The training step's name in a run's record: its task's name without the package (`BrainTask.step_name`).
TRAIN_STEP = "train_symbol"


def stale_reason(settings: Settings, candles: pd.DataFrame, as_of: dt.date) -> str | None:
    """Why the newest bar is too old to train on as of `as_of`, or None when it is fresh enough."""
    newest = pd.Timestamp(candles["ts"].iloc[-1]).to_pydatetime()
    age = day_end(as_of) - newest
    if age.total_seconds() <= settings.max_data_age:
        return None
    return (f"the newest stored bar ({newest:%Y-%m-%d %H:%M} UTC) is {age.total_seconds() / 86400:.1f} days "
            f"older than the end of {as_of.isoformat()}; more than the allowed {settings.max_data_age} s "
            "(BRAIN_MAX_DATA_AGE): collect fresh data or retrain as of an earlier day")


def train_symbol(engine: sa.Engine, settings: Settings, symbol: str, model_type: str,
                 as_of: dt.date, origin: str = Origin.RETRAIN) -> ModelOutcome:
    """One model type's version for the day, through the training protocol (`steps.protocol`).  Data
    older than `settings.max_data_age` at the as-of day's end is `stale`.  Importance is computed here,
    out of sample: each fold's model on its own test block.

    `origin`: a replay trains with `Origin.REPLAY`, so its new versions stay out of the registry views.
    A retrain that finds a version a replay trained (the same identity or identical inputs) adopts it:
    the same training is the same version, and it is the retrain's from then on."""
    from brain_tasks.ml.pipeline import build_dataset, dataset_digest, train_and_evaluate

    started, cpu_started = time.perf_counter(), time.process_time()
    config = train_config(settings)
    chash = config.config_hash()

    def prepare() -> Inputs | ModelOutcome:
        market = load_market(engine, settings, symbol, end=day_end(as_of))
        stale = stale_reason(settings, market["candles"], as_of)
        if stale:
            registry.record_finding(engine, source=settings.exchange, symbol=symbol, timeframe=settings.timeframe,
                                    data_kind="candles", check="stale", day=as_of, details={"error": stale},
                                    severity="warning")
            return ModelOutcome(model_type=model_type, status=Status.STALE, error=stale, config_hash=chash,
                                step=TRAIN_STEP, seconds=round(time.perf_counter() - started, 4))
        dataset = build_dataset(market["candles"], config, **market_kwargs(market))
        return Inputs(digest=dataset_digest(*dataset[:2]), data=(market, dataset))

    def fit(inputs: Inputs) -> Fitted:
        market, dataset = inputs.data
        result = train_and_evaluate(market["candles"], model_type, config, **market_kwargs(market),
                                    with_importance=True, dataset=dataset, device=settings.device)
        return Fitted(result=result, config=config.to_dict(), seed=config.seed)

    outcome, fitted = train_once(engine, symbol, model_type, as_of, chash, prepare=prepare, fit=fit, origin=origin)
    if fitted is None:
        if origin == Origin.RETRAIN and outcome.ok and outcome.version is not None:
            registry.adopt(engine, symbol, model_type, int(outcome.version))
        return outcome
    # CPU seconds: the whole task (reads and writes included), and of it the walk-forward without the
    # importance and the importance alone, so a fan-out can tell what importance costs next to training.
    return dataclasses.replace(outcome, seconds=round(time.perf_counter() - started, 4),
                               cpu_s=round(time.process_time() - cpu_started, 4),
                               train_cpu_s=round(fitted.result.train_cpu_s, 4),
                               importance_cpu_s=round(fitted.result.importance_cpu_s, 4))
