"""Beat: the schedule the issue asks for, and only one scheduler at a time (RedBeat's Redis lock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from celery.schedules import crontab

from brain_tasks.schedule import beat_schedule
from brain_tasks.settings import from_environ
from tests.workers import REPO, brain_env, wait_for


def test_schedule_covers_retrain_nightly_funding_candles_and_quality():
    s = from_environ({"BRAIN_SYMBOLS": "BTC/USDT:USDT,ETH/USDT:USDT", "BRAIN_RETRAIN_AT": "01:30",
                      "BRAIN_NIGHTLY_AT": "04:00"})
    sched = beat_schedule(s)
    assert sched["daily-retrain"]["task"] == "brain_tasks.daily_retrain"
    assert sched["daily-retrain"]["schedule"] == crontab(hour=1, minute=30)
    assert sched["daily-retrain"]["kwargs"]["symbols"] == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    assert sched["nightly-analysis"]["schedule"] == crontab(hour=4, minute=0)
    funding = sched["collect-funding"]["schedule"]
    assert funding.hour == {0, 8, 16} and sched["collect-funding"]["kwargs"]["kind"] == "funding"
    assert sched["collect-candles"]["schedule"].hour == set(range(24))
    assert sched["data-quality-check"]["task"] == "brain_tasks.data_quality_check"


def _beat(env: dict, log_path) -> subprocess.Popen:  # noqa: ANN001
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "brain_tasks.app", "beat", "-l", "debug",
                             "-s", str(log_path) + ".schedule"],
                            env=env, cwd=REPO, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.mark.redis
def test_a_second_beat_waits_until_the_first_dies(tmp_path, redis_url):
    env = brain_env(f"sqlite:///{tmp_path / 'b.db'}", redis_url.rsplit("/", 1)[0] + "/6", tmp_path,
                    BRAIN_BEAT_LOCK_TIMEOUT="6")
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a = _beat(env, a_log)
    b = None
    try:
        wait_for(lambda: b"Acquired lock" in a_log.read_bytes(), 60, what="beat A to take the lock")
        b = _beat(env, b_log)
        wait_for(lambda: b"Acquiring lock" in b_log.read_bytes(), 60, what="beat B to start")
        time.sleep(8)  # longer than the lock timeout: A keeps extending it, B keeps waiting
        assert b"Acquired lock" not in b_log.read_bytes()
        os.killpg(a.pid, signal.SIGKILL)  # no clean release: B must wait for the lock to expire
        wait_for(lambda: b"Acquired lock" in b_log.read_bytes(), 60, what="beat B to take over")
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
