"""A real worker process runs a task sent by name from another process: on Redis + PostgreSQL, and on
the embedded default (filesystem broker, SQLite)."""

from __future__ import annotations

import json

import pytest

from brain_tasks.service.embedded import prepare_folders
from brain_tasks.settings import from_environ
from tests.workers import brain_env, run_python, worker

SEND_PING = """
import json
from celery import Celery
from brain_tasks.settings import get_settings
s = get_settings()
# The engine's own minimal app: it only knows the broker, the backend and the JSON serializer.
app = Celery(broker=s.effective_broker_url, backend=s.effective_result_backend)
app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"],
                broker_transport_options=getattr(__import__("brain_tasks.celeryconfig", fromlist=["x"]), "broker_transport_options", {}))
result = app.send_task("brain_tasks.ping", args=[{"hello": "brain"}], queue="collect")
print(json.dumps(result.get(timeout=120)))
"""


@pytest.mark.redis
@pytest.mark.postgres
def test_trivial_task_by_name_on_redis_and_postgres(tmp_path, redis_url, pg_url):
    env = brain_env(pg_url, redis_url, tmp_path)
    with worker(env, log_dir=tmp_path):
        out = json.loads(run_python(SEND_PING, env).strip().splitlines()[-1])
    assert out == {"pong": {"hello": "brain"}, "worker": "redis"}


def test_trivial_task_by_name_on_the_embedded_default(tmp_path):
    env = brain_env(f"sqlite:///{tmp_path / 'brain.db'}", None, tmp_path)
    prepare_folders(from_environ(env))
    with worker(env, log_dir=tmp_path):
        out = json.loads(run_python(SEND_PING, env).strip().splitlines()[-1])
    assert out == {"pong": {"hello": "brain"}, "worker": "brainfs"}  # the atomic filesystem transport


def test_pickle_is_refused(tmp_path, redis_url):
    """A pickled message is rejected by the worker, never executed."""
    env = brain_env(f"sqlite:///{tmp_path / 'brain.db'}", redis_url, tmp_path)
    code = """
from celery import Celery
import os
app = Celery(broker=os.environ["BRAIN_BROKER_URL"], backend=os.environ["BRAIN_BROKER_URL"])
app.conf.update(task_serializer="pickle", accept_content=["pickle", "json"], result_accept_content=["json", "pickle"])
r = app.send_task("brain_tasks.ping", args=["x"], queue="collect")
try:
    r.get(timeout=8)
    print("EXECUTED")
except Exception as exc:
    print("REFUSED", type(exc).__name__)
"""
    with worker(env, log_dir=tmp_path):
        out = run_python(code, env)
    assert "EXECUTED" not in out and "REFUSED" in out
    assert "ContentDisallowed" in (tmp_path / "w1.log").read_text() or "disallowed" in (
        tmp_path / "w1.log").read_text().lower()
