"""Serving end to end on Redis and PostgreSQL: Engine code in a process of its own enqueues a retrain,
waits, predicts and reads the signal a real beat + worker published at the bar close."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from brain_tasks.brain import signals as signal_rows
from brain_tasks.brain.db import dispose_engine, make_engine
from brain_tasks.brain.migrate import upgrade
from brain_tasks.service.steps.collect import ingest_freqtrade
from tests import servers
from tests.workers import REPO, brain_env, run_python, worker

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

SYMBOL = "ETH/BTC"

ENGINE = """
import datetime, json, time
from brain_tasks.service import serving
from brain_tasks.brain import signals
from brain_tasks.client import BrainClient

brain = BrainClient()
assert brain.latest_signal({symbol!r}) is None
run = brain.retrain([{symbol!r}], models=["baseline"], as_of="2018-01-30")   # send_task by name
status = brain.wait(run.run_id, timeout=600, poll=0.5)
# A bar-close canvas that publishes the decision the finished run stands for (one that ran mid-chain
# may have served the champion before the per-regime choice was written: a truthful record of that
# moment, under another key; the same decision published mid-chain is the same row).
deadline = time.monotonic() + 120
while True:
    assert time.monotonic() < deadline, "no signal published by the bar-close canvas after the retrain"
    expected = serving.predict(brain.engine, brain.settings, {symbol!r}, record=False)  # records nothing
    row = signals.latest(brain.engine, {symbol!r})
    if row is not None and (row["model_type"], row["version"] or None) == (expected.model_type, expected.version):
        break
    time.sleep(0.5)
published = brain.latest_signal({symbol!r})
signal = brain.predict({symbol!r})
rows = signals.frame(brain.engine, {symbol!r}, model_type=signal.model_type, version=signal.version or 0)
print(json.dumps({{"run": status["state"], "predicted": signal.to_json(), "published": published.to_json(),
                  "rows": int((rows.ts == rows.ts.max()).sum())}}))
"""


def _beat(env: dict, log_path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "brain_tasks.app", "beat", "-l", "info"],
                            env=env, cwd=REPO, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def test_engine_retrains_waits_predicts_and_reads_the_published_signal(tmp_path, pg_url, redis_url):
    url = servers.create_database(pg_url)
    upgrade(url)
    # A file source collects only what was ingested: the client refuses a symbol the Brain never saw.
    ingest_freqtrade(make_engine(url), REPO / "sample" / "freqtrade-testdata", symbols=[SYMBOL], timeframe="5m",
                     exchange="freqtrade")
    broker = re.sub(r"/\d+$", "/11", redis_url)
    # The sample ends in 2018: without a generous age limit every bar of it is stale.
    env = brain_env(url, broker, tmp_path, BRAIN_SYMBOLS=SYMBOL, BRAIN_MODELS="baseline",
                    BRAIN_SIGNAL_MAX_AGE=str(10**10), BRAIN_SIGNALS_EVERY="3")
    beat = None
    try:
        with worker(env, name="all", concurrency=2, log_dir=tmp_path):
            beat = _beat(env, tmp_path / "beat.log")
            out = json.loads(run_python(ENGINE.format(symbol=SYMBOL), env, timeout=900).strip().splitlines()[-1])
    finally:
        if beat is not None and beat.poll() is None:
            os.killpg(beat.pid, signal.SIGTERM)
            beat.wait(timeout=30)

    assert out["run"] == "succeeded"
    predicted, published = out["predicted"], out["published"]
    # The sample's 16 days rarely show an edge that survives deflation: the choice may well be flat.
    if published["model_type"] == "flat":
        assert published["version"] is None and published["position"] == 0 and not published["tradeable"]
    else:
        assert (published["model_type"], published["version"]) == ("baseline", 1)
        assert published["artifact_sha256"]
    assert predicted["ts"] == published["ts"] == "2018-01-30T04:50:00+00:00"  # the last stored bar
    same = ("symbol", "ts", "regime", "model_type", "version", "prediction", "position", "size", "confidence",
            "tradeable", "reason", "artifact_sha256")
    assert {k: predicted[k] for k in same} == {k: published[k] for k in same}
    # The beat published the bar first; predict found the same decision and added no row.
    assert out["rows"] == 1
    rows = signal_rows.frame(make_engine(url), SYMBOL, model_type=published["model_type"],
                             version=published["version"] or 0)
    assert len(rows) == 1 and not rows.stale.iloc[0]
    assert (rows.artifact_sha256.iloc[0] or None) == published["artifact_sha256"]
    assert b"brain_tasks.bar_close" in (tmp_path / "beat.log").read_bytes()
    assert b"brain_tasks.publish_signals" in (tmp_path / "all.log").read_bytes()
    dispose_engine(url)
    servers.drop_database(url)
