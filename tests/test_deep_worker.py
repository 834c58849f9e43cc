"""A real worker trains a sequence model through `brain_tasks.train_symbol`, sent by name, on a real
sample pair: the version lands with a safetensors artifact whose sha256 checks and whose reload
predicts like the stored out-of-sample run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brain_tasks.brain import registry, store
from brain_tasks.brain.db import make_engine
from brain_tasks.brain.migrate import upgrade
from tests import servers
from tests.workers import REPO, brain_env, run_python, worker

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

SEND = """
import json
from brain_tasks.app import app
r = app.send_task("brain_tasks.train_symbol", args=["LTC/BTC", "lstm", "2018-01-30"], queue="train")
print(json.dumps(r.get(timeout=900)))
"""


def test_lstm_trains_through_train_symbol_on_a_real_worker(tmp_path, pg_url, redis_url):
    url = servers.create_database(pg_url)
    upgrade(url)
    engine = make_engine(url)
    candles = pd.read_feather(REPO / "sample" / "freqtrade-testdata" / "LTC_BTC-5m.feather")
    store.upsert(engine, "candles", candles.rename(columns={"date": "ts"}).assign(
        exchange="freqtrade", symbol="LTC/BTC", timeframe="5m"))
    env = brain_env(url, redis_url, tmp_path)
    with worker(env, log_dir=tmp_path, queues="train"):
        state = json.loads(run_python(SEND, env).strip().splitlines()[-1])
    out = state["models"]["lstm"]  # the chain's state, with this training's outcome
    assert out["status"] == "succeeded" and out["trained"] is True, state
    manifest = registry.manifest(engine, "LTC/BTC", "lstm", out["version"])
    fmt, data = registry.load_artifact(engine, manifest.artifact_sha256)  # sha256 checked
    assert fmt == "safetensors"
    from brain_tasks.ml.models import load_model

    model = load_model(fmt, data)
    assert model.context_rows == int(manifest.config["window"]) - 1
    importance = registry.importance_of(engine, "LTC/BTC", "lstm", out["version"])
    assert {r.method for r in importance} >= {"permutation"}
    oos = registry.oos_frame(engine, manifest.oos_sha256)
    assert len(oos) > 500 and np.isfinite(oos["pred"]).all()
