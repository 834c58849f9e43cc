"""End to end on real Redis and PostgreSQL with real worker processes.

An "engine" process that knows nothing but the broker URL and task names enqueues the daily retrain;
workers collect the real sample, train every model type, compare, explain, check rollback and select.
"""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.error
import urllib.request
from base64 import b64encode

import pandas as pd
import pytest

from brain_tasks.brain import store
from brain_tasks.brain.db import dispose_engine, make_engine
from brain_tasks.brain.migrate import upgrade
from tests import servers
from tests.test_jobs import _comparable
from tests.workers import REPO, brain_env, run_python, wait_for, worker
from tests import snapshots

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

SYMBOLS = ["ETH/BTC", "LTC/BTC", "ADA/BTC", "TRX/BTC", "XMR/BTC"]  # ADA, TRX, XMR have real gaps
MODELS = ["lightgbm", "xgboost", "baseline"]
AS_OF = "2018-01-30"
BROKEN = "BROKEN/BTC"
# The chain's last link trains a position sizer for a symbol that trades; its skill is tested in
# tests/ml/test_sizing.py, here only its place in the chain, so with few PPO timesteps.
SIZER = {"BRAIN_SIZER_TIMESTEPS": "2048"}
# Wall-clock columns: the only ones allowed to differ between two runs of the same work.

ENGINE = """
import json, sys
from celery import Celery
app = Celery(broker={broker!r}, backend={broker!r})
app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
result = app.send_task("brain_tasks.daily_retrain", queue="analysis",
                       kwargs={{"symbols": {symbols!r}, "models": {models!r}, "as_of": {as_of!r}}})
print(json.dumps(result.get(timeout=900)))
"""


def _redis_db(redis_url: str, n: int) -> str:
    return re.sub(r"/\d+$", f"/{n}", redis_url)


def _fresh_brain(pg_url: str) -> str:
    url = servers.create_database(pg_url)
    upgrade(url)
    return url


def _insert_broken_symbol(url: str) -> None:
    """A symbol whose stored data cannot support training: 60 bars of a frozen price."""
    # Fresh bars (the as-of day's own: stale data would end its chain as `stale`, not `failed`), too few of them.
    ts = pd.date_range("2018-01-30", periods=60, freq="5min", tz="UTC")
    store.upsert(make_engine(url), "candles", pd.DataFrame({
        "exchange": "freqtrade", "symbol": BROKEN, "timeframe": "5m", "ts": ts,
        "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 0.0}))


def _retrain(broker: str, symbols: list[str], models: list[str], env: dict) -> dict:
    code = ENGINE.format(broker=broker, symbols=symbols, models=models, as_of=AS_OF)
    return json.loads(run_python(code, env, timeout=900).strip().splitlines()[-1])


def _count(url: str, table: str, **where: object) -> int:
    return len(store.read_table(make_engine(url), table, where=where or None))


def _flower_get(port: int, path: str, auth: str | None) -> tuple[int, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        req.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if "json" in resp.headers.get("Content-Type", "") else body
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except urllib.error.URLError:
        return 0, None  # not listening yet


def _wait_for_flower_events(port: int, broker: str, queues: dict[str, str]) -> None:
    """Workers send task events only once Flower has switched them on (it broadcasts `enable_events`
    every 5 s; the workers' own default is off): wait until Flower has seen a task of every worker."""
    from celery import Celery

    app = Celery(broker=broker, backend=broker)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])

    def seen() -> bool:
        for queue in queues.values():
            app.send_task("brain_tasks.ping", args=["flower"], queue=queue).get(timeout=60)
        _, tasks = _flower_get(port, "/api/tasks?taskname=brain_tasks.ping", "operator:s3cret-test")
        hosts = {str(t.get("worker", "")).split("@")[0] for t in (tasks or {}).values()}
        return set(queues) <= hosts

    wait_for(seen, 60, interval=1.0, what="Flower to receive task events from every worker")


@pytest.fixture
def flower(tmp_path, redis_url):
    """Flower with basic auth on the test broker (started before the workers so it sees every event)."""
    import subprocess
    import sys

    port = servers.free_port()
    broker = _redis_db(redis_url, 3)
    env = brain_env("sqlite:///unused.db", broker, tmp_path, FLOWER_UNAUTHENTICATED_API="false")
    log = open(tmp_path / "flower.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "brain_tasks", "flower", f"--port={port}",
                             f"--conf={REPO / 'brain_tasks' / 'flowerconfig.py'}",
                             "--address=127.0.0.1", "--basic-auth=operator:s3cret-test"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: _flower_get(port, "/healthcheck", None)[0] in (200, 401), 60, what="flower")
    yield port, broker
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    log.close()


def test_daily_retrain_end_to_end_twice_with_a_broken_symbol(tmp_path, pg_url, flower):
    port, broker = flower
    url = _fresh_brain(pg_url)
    _insert_broken_symbol(url)
    env = brain_env(url, broker, tmp_path, **SIZER)
    symbols = SYMBOLS + [BROKEN]
    with worker(env, name="train", queues="train", concurrency=2, log_dir=tmp_path), \
         worker(env, name="rest", queues="collect,analysis", concurrency=1, log_dir=tmp_path):
        _wait_for_flower_events(port, broker, {"train": "train", "rest": "collect"})
        summary = _retrain(broker, symbols, MODELS, env)
        nightly = run_python(
            "import json; from celery import Celery; app = Celery(broker=%r, backend=%r);"
            "app.conf.update(accept_content=['json'], result_accept_content=['json']);"
            "print(json.dumps(app.send_task('brain_tasks.nightly_analysis', queue='analysis',"
            " kwargs={'symbols': %r, 'as_of': %r}).get(timeout=600)))" % (broker, broker, SYMBOLS, AS_OF),
            env).strip().splitlines()[-1]
        first = snapshots.snapshot(make_engine(url))
        status, workers = _flower_get(port, "/api/workers?refresh=1", "operator:s3cret-test")
        _, tasks = _flower_get(port, "/api/tasks?taskname=brain_tasks.train_symbol&state=SUCCESS",
                               "operator:s3cret-test")
        unauthenticated, _ = _flower_get(port, "/api/workers", None)
        metrics_anonymous, _ = _flower_get(port, "/metrics", None)
        metrics_status, _ = _flower_get(port, "/metrics", "operator:s3cret-test")
        second_summary = _retrain(broker, symbols, MODELS, env)

    # The summary names the broken symbol and only it.
    assert summary["state"] == "partial"
    assert sorted(summary["succeeded"]) == sorted(SYMBOLS)
    assert list(summary["failed"]) == [BROKEN] and summary["failed"][BROKEN]

    engine = make_engine(url)
    n = len(SYMBOLS) * len(MODELS)
    # The sizer trains only for a symbol whose selection trades its champion (one ppo_sizer version,
    # compared with two baselines); for the others the row says why not.
    rows = store.read_table(engine, "training_runs")
    rows = rows[(rows.attempt_id == summary["attempt_id"]) & rows.symbol.isin(SYMBOLS)]
    sizer_of = {r.symbol: (json.loads(r.details) if isinstance(r.details, str) else r.details)["sizer"]
                for r in rows.itertuples()}
    assert all(s["status"] == "succeeded" or s["reason"].endswith("sizing cannot act")
               for s in sizer_of.values()), sizer_of
    sizers = sum(s["status"] == "succeeded" for s in sizer_of.values())
    assert _count(url, "model_manifests") == n + sizers
    assert _count(url, "model_registry") == n + sizers
    # + flat and buy-and-hold per symbol (compare_models) + the three sizers per symbol (train_sizer)
    assert _count(url, "model_comparisons") == n + 2 * len(SYMBOLS) + 3 * sizers
    # model + out-of-sample predictions, each by sha256; and one input description per symbol: the model
    # types of a symbol train on the same rows with the same folds, so their descriptions are one artifact.
    assert _count(url, "model_artifacts") == 2 * (n + sizers) + len(SYMBOLS)
    assert _count(url, "rollback_logs") == len(SYMBOLS)
    registry = store.read_table(engine, "model_registry")
    assert (registry[registry.status == "champion"].groupby("symbol").size() == 1).all()
    assert set(registry[registry.status == "champion"].symbol) == set(SYMBOLS)
    choices = store.read_table(engine, "regime_choices")
    assert set(choices.symbol) == set(SYMBOLS)  # every trained symbol has its per-regime choice
    metrics = store.read_table(engine, "model_metrics")
    assert {"all", "low", "normal", "high"} <= set(metrics.regime)
    assert {"sharpe", "sortino", "max_drawdown", "calmar", "hit_ratio"} <= set(metrics.metric)
    importance = store.read_table(engine, "feature_importance")
    assert {"shap", "permutation", "correlation"} <= set(importance.method)
    assert importance.groupby(["symbol", "model_type"]).ngroups == n
    runs = store.read_table(engine, "training_runs")
    runs = runs[runs.attempt_id == summary["attempt_id"]]
    states = runs[runs.symbol != "*"].set_index("symbol")["state"].to_dict()
    assert states == {**{s: "succeeded" for s in SYMBOLS}, BROKEN: "failed"}
    candles = store.read_table(engine, "candles", where={"symbol": "ADA/BTC"})
    assert len(candles) == 5720  # collected from the real file by the chain's first step
    quality = store.read_table(engine, "data_quality_logs")
    assert {"ADA/BTC", BROKEN} <= set(quality.symbol)  # real gaps, and the failed training
    assert len(store.read_table(engine, "feature_drift")) > 0
    assert json.loads(nightly)["state"] in ("succeeded", "partial")

    # Flower: authenticated API lists the workers and the finished train tasks; anonymous is refused.
    assert status == 200 and len(workers) == 2
    # The broken symbol's trainings finish too: they return a failed status instead of raising.
    assert len(tasks) == (len(SYMBOLS) + 1) * len(MODELS)
    assert unauthenticated == 401
    assert (metrics_anonymous, metrics_status) == (401, 200)  # /metrics behind the pages' auth

    # The second identical run trains nothing and leaves the database identical (wall clock aside).
    # The second run is a new attempt of the same run with the same outcome.
    assert second_summary["attempt_id"] != summary["attempt_id"]
    assert {**second_summary, "attempt_id": None} == {**summary, "attempt_id": None}
    again = snapshots.snapshot(engine)
    # Retrained models would have new created_at stamps: compare artifacts and manifests *with* them.
    for table in ("model_artifacts", "model_manifests"):
        pd.testing.assert_frame_equal(first[table], again[table])
    snapshots.assert_same_database(_comparable(first), _comparable(again))
    dispose_engine(url)




def test_kill_9_mid_training_reruns_on_another_worker(tmp_path, pg_url, redis_url):
    symbols, models = ["ETH/BTC", "LTC/BTC"], ["lightgbm", "xgboost"]
    # Collect / analysis tasks get a soft limit of their hard limit minus 30 s: at 18 s that was 1 s, and
    # daily_retrain overran it on a loaded machine.
    limits = {"BRAIN_VISIBILITY_TIMEOUT": "45", "BRAIN_TRAIN_TIME_LIMIT": "18", "BRAIN_TRAIN_SOFT_TIME_LIMIT": "15",
              "BRAIN_TASK_TIME_LIMIT": "40",
              # The sizer off: under a 15 s limit on a loaded machine it could time out in one run only.
              "BRAIN_SIZER_TIMESTEPS": "0"}

    # Reference: an undisturbed run.
    ref_url, ref_broker = _fresh_brain(pg_url), _redis_db(redis_url, 4)
    ref_env = brain_env(ref_url, ref_broker, tmp_path / "ref", **limits)
    with worker(ref_env, name="ref", concurrency=2, log_dir=tmp_path / "ref"):
        reference = _retrain(ref_broker, symbols, models, ref_env)
    assert reference["state"] == "succeeded", reference

    url, broker = _fresh_brain(pg_url), _redis_db(redis_url, 5)
    env = brain_env(url, broker, tmp_path, **limits)
    import subprocess
    import sys

    code = ENGINE.format(broker=broker, symbols=symbols, models=models, as_of=AS_OF)
    with worker(env, name="rest", queues="collect,analysis", log_dir=tmp_path):
        engine_proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        with worker(env, name="victim", queues="train", concurrency=1, log_dir=tmp_path) as victim:
            log = tmp_path / "victim.log"
            pattern = re.compile(r"Task brain_tasks\.train_symbol\[([0-9a-f-]+)\] received")
            wait_for(lambda: pattern.search(log.read_text()), 120, interval=0.02, what="a train task")
            task_id = pattern.search(log.read_text()).group(1)
            os.killpg(victim.pid, signal.SIGKILL)  # the worker and its pool child, mid-task
            victim.wait()
        assert f"{task_id}] succeeded" not in log.read_text()
        with worker(env, name="rescuer", queues="train", concurrency=1, log_dir=tmp_path):
            out, _ = engine_proc.communicate(timeout=600)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["state"] == "succeeded" and sorted(summary["succeeded"]) == symbols
    assert task_id in (tmp_path / "rescuer.log").read_text()  # the same message, re-delivered
    snapshots.assert_same_database(_comparable(snapshots.snapshot(make_engine(ref_url))),
                               _comparable(snapshots.snapshot(make_engine(url))))
    dispose_engine(url)
    dispose_engine(ref_url)
