"""A fan-out of a hundred and twenty synthetic symbols on real Redis and PostgreSQL workers.

An Engine process enqueues the daily retrain with `BrainClient.retrain` and waits for its result; two
worker processes run every symbol's chain (collect from the synthetic market, train the baseline,
compare, importance, rollback, select, the sizer off).  The summary must name every symbol succeeded,
and every symbol must leave its rows in the Brain tables.  Timing is `bench/fanout.py`'s business.
"""

from __future__ import annotations

import json

import pytest
import redis

from brain_tasks.brain import runs
from brain_tasks.brain.db import dispose_engine, make_engine
from brain_tasks.brain.migrate import upgrade
from brain_tasks.service.steps.collect import source_for
from brain_tasks.settings import from_environ
from tests import servers
from tests.workers import (
    SYNTHETIC_AS_OF,
    SYNTHETIC_FANOUT,
    brain_env,
    check_fanout,
    run_python,
    synthetic_symbols,
    worker,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

N_SYMBOLS = 120

ENGINE = """
import json
from brain_tasks.client import BrainClient
client = BrainClient()
handle = client.retrain({symbols!r}, models=["baseline"], as_of={as_of!r})
summary = client.app.AsyncResult(handle.task_id).get(timeout=900)
print(json.dumps({{"run_id": handle.run_id, "attempt_id": handle.attempt_id, "summary": summary}}))
"""


def test_fanout_of_120_synthetic_symbols(tmp_path, pg_url, redis_url):
    url = servers.create_database(pg_url)
    upgrade(url)
    broker = redis_url.rsplit("/", 1)[0] + "/13"
    env = brain_env(url, broker, tmp_path, **SYNTHETIC_FANOUT)
    symbols = synthetic_symbols(N_SYMBOLS)
    with worker(env, name="fanout", queues="collect,train,analysis", concurrency=2, log_dir=tmp_path):
        out = json.loads(run_python(ENGINE.format(symbols=symbols, as_of=SYNTHETIC_AS_OF), env,
                                    timeout=900).strip().splitlines()[-1])
        # The Engine has exited: no process is left subscribed to the fan-out's result channels (the
        # pool process that froze the chord was, one channel per symbol, read by nobody).
        left = redis.Redis.from_url(broker).pubsub_channels()
        assert left == [], f"{len(left)} result channels still subscribed"

    summary = out["summary"]
    assert summary["state"] == "succeeded", summary
    assert sorted(summary["succeeded"]) == symbols
    assert summary["failed"] == {}
    status = runs.run_status(make_engine(url), out["run_id"], out["attempt_id"])
    assert status["counts"] == {"succeeded": N_SYMBOLS}
    settings = from_environ(env)
    candles = len(source_for(settings).fetch_candles(symbols[0], settings.timeframe))
    assert candles == 60 * 24  # the synthetic path's two months of hourly bars
    rows = check_fanout(url, status, symbols, candles)
    assert rows["candles"] == N_SYMBOLS * candles
    assert rows["model_registry"] == rows["model_manifests"] == rows["rollback_logs"] == N_SYMBOLS
    assert rows["model_comparisons"] == 3 * N_SYMBOLS and rows["regime_choices"] == 5 * N_SYMBOLS
    assert rows["training_runs"] == N_SYMBOLS + 1  # and the attempt's summary row
    # each version's model, its out-of-sample predictions and the description of its inputs (the OOD gate)
    assert rows["model_artifacts"] == 3 * N_SYMBOLS
    dispose_engine(url)
    servers.drop_database(url)
