"""Redis restarted mid-run (SIGTERM: a clean shutdown; SIGKILL: a crash), with AOF, PostgreSQL and a real
2-process worker: the run still finishes and leaves the database an undisturbed run leaves.

While `train_symbol` tasks run, Redis goes away and comes back 3 s later on the same port and directory.
Whatever Celery re-queues itself is redelivered; what it drops, `reconcile_runs` (driven here by a loop
standing in for beat) re-drives once its deadline passes with nothing of the attempt alive.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from brain_tasks.brain import runs
from brain_tasks.brain.db import dispose_engine, make_engine
from tests import chaos, servers
from tests.test_jobs import _comparable
from tests.workers import brain_env, run_python, wait_for, worker
from tests import snapshots

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

SYMBOLS, MODELS, AS_OF = ["ETH/BTC", "LTC/BTC"], ["baseline"], "2018-01-30"
# Short limits so that recovery (deadline = hard limit + stall timeout, then a reconcile pass) is quick.
# (Soft limits of collect / analysis tasks are the hard limit minus 30 s.)
LIMITS = {"BRAIN_VISIBILITY_TIMEOUT": "50", "BRAIN_TRAIN_TIME_LIMIT": "40", "BRAIN_TRAIN_SOFT_TIME_LIMIT": "35",
          "BRAIN_TASK_TIME_LIMIT": "40", "BRAIN_STALL_TIMEOUT": "5", "BRAIN_RECONCILE_INTERVAL": "2",
          "BRAIN_CONCURRENCY": "2",
          # The chain's last link trains a position sizer: few PPO timesteps keep it far inside the 35 s limit.
          "BRAIN_SIZER_TIMESTEPS": "2048"}

ENQUEUE = """
import json
from brain_tasks.client import BrainClient
h = BrainClient().retrain({symbols!r}, models={models!r}, as_of={as_of!r})
print(json.dumps([h.run_id, h.attempt_id]))
"""

def _enqueue(env: dict) -> tuple[str, str]:
    out = run_python(ENQUEUE.format(symbols=SYMBOLS, models=MODELS, as_of=AS_OF), env)
    run_id, attempt_id = json.loads(out.strip().splitlines()[-1])
    return run_id, attempt_id


def _finished(url: str, run_id: str, attempt_id: str) -> bool:
    return runs.run_status(make_engine(url), run_id, attempt_id)["state"] not in ("pending", "running")


def _training(url: str, run_id: str, attempt_id: str) -> bool:
    symbols = runs.run_status(make_engine(url), run_id, attempt_id)["symbols"].values()
    return any(s["step"] == "train_symbol" for s in symbols)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pg_url, redis_url):  # noqa: ANN001
    """The database an undisturbed run leaves (computed once for every variant)."""
    tmp = tmp_path_factory.mktemp("ref")
    url = chaos.fresh_brain(pg_url)
    env = brain_env(url, redis_url.rsplit("/", 1)[0] + "/6", tmp, **LIMITS)
    with worker(env, name="ref", concurrency=2, log_dir=tmp):
        run_id, attempt_id = _enqueue(env)
        wait_for(lambda: _finished(url, run_id, attempt_id), 300, what="the reference run")
    assert runs.run_status(make_engine(url), run_id)["state"] == "succeeded"
    yield _comparable(snapshots.snapshot(make_engine(url)))
    dispose_engine(url)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, "flushall"], ids=["sigterm", "sigkill", "flushall"])
def test_a_redis_restart_mid_run_loses_nothing(tmp_path, pg_url, reference, sig):
    """`flushall`: the worker is killed mid-training (SIGKILL, the whole group) and Redis comes back
    empty (a restart without persistence): no message, no unacked delivery and no chord counter is left
    to redeliver, so only reconcile_runs (re-driving both chains) can finish the attempt."""
    with servers.restartable_redis_server() as redis:
        url = chaos.fresh_brain(pg_url)
        env = brain_env(url, redis.url, tmp_path, **LIMITS)
        with chaos.reconciling(env, tmp_path / "reconciler.log"):
            with worker(env, name="w", concurrency=2, log_dir=tmp_path) as victim:
                run_id, attempt_id = _enqueue(env)
                wait_for(lambda: _training(url, run_id, attempt_id), 300, interval=0.02, what="a train_symbol task")
                faulted = time.monotonic()
                if sig == "flushall":
                    import redis as redis_client

                    os.killpg(victim.pid, signal.SIGKILL)
                    victim.wait()
                    redis_client.Redis.from_url(redis.url).flushall()
                else:
                    redis.stop(sig)
                    time.sleep(3)
                    redis.start()
                    wait_for(lambda: _finished(url, run_id, attempt_id), 600, interval=0.5,
                             what="the disturbed run to finish")
                    recovered = time.monotonic() - faulted
            if sig == "flushall":
                with worker(env, name="w2", concurrency=2, log_dir=tmp_path):
                    wait_for(lambda: _finished(url, run_id, attempt_id), 600, interval=0.5,
                             what="the re-driven run to finish")
                    recovered = time.monotonic() - faulted
        engine = make_engine(url)
        status = runs.run_status(engine, run_id, attempt_id)
        print(f"{getattr(sig, 'name', sig)}: {status['state']} {recovered:.0f} s after the fault; "
              f"re-drives {[s['redrives'] for s in status['symbols'].values()]}")  # a figure, not an assertion
        assert status["state"] == "succeeded", status
        if sig == "flushall":
            assert all(s["redrives"] >= 1 for s in status["symbols"].values()), status
        snapshots.assert_same_database(reference, _comparable(snapshots.snapshot(engine)))
    dispose_engine(url)
