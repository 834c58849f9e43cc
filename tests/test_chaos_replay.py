"""A replay survives the faults a run survives: the worker killed with -9 (its whole process group) and
Redis killed and restarted (AOF) while the replay's trainings run.  Whatever Celery re-queues is
redelivered; what is lost, `reconcile_runs` (a loop here, standing in for beat) re-drives.  The replay
finishes in the attempt the Engine enqueued, and the Brain equals an undisturbed replay's, replay tables
included; the same replay sent again afterwards trains nothing and changes no row.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pandas as pd
import pytest

from brain_tasks.brain import runs
from brain_tasks.brain.db import dispose_engine, make_engine
from brain_tasks.vocabulary import OPEN, Status
from tests import chaos, servers, snapshots
from tests.test_jobs import _load
from tests.workers import brain_env, run_python, wait_for, worker

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

# Two symbols, one model type, three daily steps: 6 trainings, two walks, one pool.
SYMBOLS, MODELS, START, END = ["ETH/BTC", "LTC/BTC"], ["baseline"], "2018-01-27", "2018-01-29"
# The rows a replay writes; the comparison must hold rows of each (a vacuous equality proves nothing).
REPLAY_TABLES = ("model_manifests", "model_registry", "model_metrics", "feature_importance", "replays",
                 "replay_decisions", "replay_results", "training_runs")
# A killed task's message comes back once the Redis visibility timeout passes, so recovery takes about
# that long: short limits (a replay's tasks take about a second each here; every hard limit stays
# below the visibility timeout, as settings require).
LIMITS = {"BRAIN_VISIBILITY_TIMEOUT": "25", "BRAIN_TRAIN_TIME_LIMIT": "20", "BRAIN_TRAIN_SOFT_TIME_LIMIT": "17",
          "BRAIN_TASK_TIME_LIMIT": "20", "BRAIN_STALL_TIMEOUT": "5", "BRAIN_RECONCILE_INTERVAL": "2",
          "BRAIN_CONCURRENCY": "2"}

ENQUEUE = """
import json
from brain_tasks.client import BrainClient
h = BrainClient().replay({symbols!r}, {models!r}, {start!r}, {end!r})
print(json.dumps([h.run_id, h.attempt_id]))
"""


def _enqueue(env: dict) -> tuple[str, str]:
    out = run_python(ENQUEUE.format(symbols=SYMBOLS, models=MODELS, start=START, end=END), env)
    run_id, attempt_id = json.loads(out.strip().splitlines()[-1])
    return run_id, attempt_id


def _brain(pg_url: str) -> str:
    """A fresh Brain holding the sample's candles of SYMBOLS (a replay collects nothing)."""
    url = chaos.fresh_brain(pg_url)
    for symbol in SYMBOLS:
        _load(make_engine(url), symbol)
    return url


def _state(url: str, run_id: str, attempt_id: str) -> dict:
    return runs.run_status(make_engine(url), run_id, attempt_id)


def _finished(url: str, run_id: str, attempt_id: str) -> bool:
    return _state(url, run_id, attempt_id)["state"] not in (*OPEN, Status.UNKNOWN)


def _training(url: str, run_id: str, attempt_id: str) -> bool:
    return any(s["step"] == "replay_train" for s in _state(url, run_id, attempt_id)["symbols"].values())


def _rows(url: str) -> dict[str, pd.DataFrame]:
    """Every Brain table without its wall-clock columns.  training_runs keeps the replay's latest attempt
    only, without the two columns that are the attempt's own and not the work's: its id (each enqueue is
    an attempt) and how often reconcile_runs re-drove a symbol (the fault's trace).  Nothing else is left
    out: timings are not part of any row."""
    snap = snapshots.snapshot(make_engine(url))
    out = {t: f.drop(columns=cols) for t, f in snap.items()
           for cols in [snapshots.wall_clock_columns()[t]]}
    attempts = snap["training_runs"]
    latest = attempts.loc[attempts["started_at"] == attempts["started_at"].max(), "attempt_id"]
    out["training_runs"] = (out["training_runs"][attempts["attempt_id"].isin(set(latest))]
                            .drop(columns=["attempt_id", "redrives"]).sort_values("symbol").reset_index(drop=True))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pg_url, redis_url):  # noqa: ANN001
    """The Brain an undisturbed replay leaves."""
    tmp = tmp_path_factory.mktemp("ref")
    url = _brain(pg_url)
    env = brain_env(url, redis_url.rsplit("/", 1)[0] + "/7", tmp, **LIMITS)
    with worker(env, name="ref", concurrency=2, log_dir=tmp):
        run_id, attempt_id = _enqueue(env)
        wait_for(lambda: _finished(url, run_id, attempt_id), 300, what="the reference replay")
    assert _state(url, run_id, attempt_id)["state"] == Status.OK
    rows = _rows(url)
    for table in REPLAY_TABLES:
        assert len(rows[table]), f"the reference replay wrote no {table} rows"
    yield rows
    dispose_engine(url)


def test_a_replay_survives_a_killed_worker_and_a_redis_crash(tmp_path, pg_url, reference):
    with servers.restartable_redis_server() as redis:
        url = _brain(pg_url)
        env = brain_env(url, redis.url, tmp_path, **LIMITS)
        with chaos.reconciling(env, tmp_path / "reconciler.log"):
            with worker(env, name="w", concurrency=2, log_dir=tmp_path) as victim:
                run_id, attempt_id = _enqueue(env)
                wait_for(lambda: _training(url, run_id, attempt_id), 300, interval=0.02, what="a replay training")
                faulted = time.monotonic()
                os.killpg(victim.pid, signal.SIGKILL)  # the worker and its pool, mid-training
                victim.wait()
                redis.stop(signal.SIGKILL)
                time.sleep(2)
                redis.start()
            # The replacement starts at once: its restore scans (every 10 s, each acting, see celeryconfig)
            # bring the dead worker's unacknowledged messages back once the visibility timeout has passed.
            with worker(env, name="w2", concurrency=2, log_dir=tmp_path):
                wait_for(lambda: _finished(url, run_id, attempt_id), 600, interval=0.5,
                         what="the disturbed replay to finish")
                recovered = time.monotonic() - faulted
                status = _state(url, run_id, attempt_id)
                print(f"replay: {status['state']} {recovered:.0f} s after the faults; "
                      f"re-drives {[s['redrives'] for s in status['symbols'].values()]}")  # a figure, not an assertion
                assert status["state"] == Status.OK, status
                disturbed = _rows(url)
                snapshots.assert_same_database(reference, disturbed)
                # Sent again: the same replay id, nothing trained, no row changed.
                again_run, again_attempt = _enqueue(env)
                assert again_run == run_id
                wait_for(lambda: _finished(url, again_run, again_attempt), 300, interval=0.5,
                         what="the re-sent replay to finish")
                assert _state(url, again_run, again_attempt)["state"] == Status.OK
                snapshots.assert_same_database(disturbed, _rows(url))
    dispose_engine(url)
