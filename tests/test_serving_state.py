"""Serving's state: one `serving.Server` per engine instead of module-global caches, and
`signals.serving_state`'s named fields, the same on SQLite (the generic statement) and PostgreSQL (the
fixed-shape one) as the one-query functions they replace."""

from __future__ import annotations

import datetime as dt
import gc
import weakref
from types import SimpleNamespace

import sqlalchemy as sa

from brain_tasks.service import serving
from brain_tasks.brain import registry
from brain_tasks.brain import signals as signal_rows
from tests.test_serving import AS_OF, CUT, FIVE_MIN, SYMBOL, _train


def test_each_engine_has_one_server_and_it_goes_with_the_engine():
    engine = sa.create_engine("sqlite://")
    first = serving.server(engine)
    assert serving.server(engine) is first and first.engine is engine
    other = sa.create_engine("sqlite://")
    assert serving.server(other) is not first  # two databases never share a cache
    gone = weakref.ref(first)
    del first, engine
    gc.collect()
    assert gone() is None and serving.server(other).engine is other


def _register_sizer(engine: sa.Engine, manifest) -> int:
    """A 'ppo_sizer' version row (the baseline's artifact under the sizer's name): serving_state reads
    only its version and artifact digest."""
    fmt, artifact = registry.load_artifact(engine, manifest.artifact_sha256)
    result = SimpleNamespace(artifact=artifact, artifact_format=fmt, oos=registry.oos_frame(engine, manifest.oos_sha256),
                             params={}, feature_names=manifest.feature_names, feature_hash=manifest.feature_hash,
                             dataset_digest=manifest.dataset_digest, data_start=manifest.data_start,
                             data_end=manifest.data_end, n_rows=manifest.n_rows, metrics={}, regime_metrics={},
                             importance=None)
    return registry.register_version(engine, SYMBOL, "ppo_sizer", AS_OF, config=manifest.config,
                                     config_hash=manifest.config_hash, result=result,
                                     code_version=manifest.code_version, seed=manifest.seed)


def test_serving_state_is_named_fields_equal_to_the_one_query_reads(brain_db_url):
    engine, settings, manifest, candles = _train(brain_db_url)
    registry.write_regime_choice(engine, SYMBOL, AS_OF, {
        "low": {"model_type": "flat", "version": None, "confidence": 0.25, "tradeable": False,
                "reason": "nothing beat doing nothing"},
        "high": {"model_type": manifest.model_type, "version": manifest.version, "confidence": 0.75,
                 "tradeable": True, "reason": "best"}})
    sizer_version = _register_sizer(engine, manifest)
    stamp = CUT.to_pydatetime() + FIVE_MIN
    cut = stamp - FIVE_MIN
    window = (candles.ts.iloc[100].to_pydatetime(), candles.ts.iloc[1500].to_pydatetime())

    states = signal_rows.serving_state(engine, settings.exchange, "5m", 300, [SYMBOL, "NONE/BTC"], stamp,
                                       {SYMBOL: window})
    state = states[SYMBOL]
    assert state.last_bar == signal_rows.last_closed_bar(engine, settings.exchange, SYMBOL, "5m", 300, stamp)
    assert state.champion == signal_rows.Champion(manifest.model_type, manifest.version)
    assert state.choices == {regime: signal_rows.Choice(**{**c, "tradeable": bool(c["tradeable"])})
                             for regime, c in registry.regime_choice(engine, SYMBOL).items()}
    assert state.choices["low"].version is None and state.choices["high"].confidence == 0.75
    newest = registry.latest_version(engine, SYMBOL, "ppo_sizer")
    assert state.sizer == signal_rows.SizerVersion(sizer_version, newest.artifact_sha256)
    counted = signal_rows.stored_counts(engine, settings.exchange, SYMBOL, "5m", *window,
                                        cut + dt.timedelta(microseconds=1), cut + FIVE_MIN)
    assert state.counts == counted
    assert state.counts.old.candles == 1400 and state.counts.old.funding == 0 and state.counts.recent.candles > 0
    assert states["NONE/BTC"] == signal_rows.ServingState(None, None, {}, None, None)
