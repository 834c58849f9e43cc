"""A real worker process runs `brain_tasks.collect_sentiment`, sent by name from another process, against
feeds served by a local HTTP server (tests/data/news): rows in sentiment_scores, findings for the stale
and the malformed feed, and the same rows after a second run."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from brain_tasks.brain import store
from brain_tasks.brain.db import make_engine
from brain_tasks.brain.migrate import upgrade
from brain_tasks.brain.findings import read_findings
from brain_tasks.service.embedded import prepare_folders
from brain_tasks.settings import from_environ
from tests import servers
from tests.newsserver import news_server, standard_routes
from tests.workers import brain_env, run_python, worker

SEND = """
import json
from celery import Celery
from brain_tasks.settings import get_settings
s = get_settings()
app = Celery(broker=s.effective_broker_url, backend=s.effective_result_backend)
app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"],
                broker_transport_options=getattr(__import__("brain_tasks.celeryconfig", fromlist=["x"]), "broker_transport_options", {}))
result = app.send_task("brain_tasks.collect_sentiment", queue="collect")
print(json.dumps(result.get(timeout=300)))  # generous: the machine may be loaded
"""


@pytest.fixture(params=["embedded", pytest.param("redis+postgres", marks=[pytest.mark.redis, pytest.mark.postgres])])
def deployment(request: pytest.FixtureRequest, tmp_path):  # noqa: ANN001, ANN201
    """(database URL, broker URL): the embedded default, or Redis and a fresh PostgreSQL database."""
    if request.param == "embedded":
        yield f"sqlite:///{tmp_path / 'brain.db'}", None
        return
    db = servers.create_database(request.getfixturevalue("pg_url"))
    yield db, request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/5"
    from brain_tasks.brain.db import dispose_engine

    dispose_engine(db)
    servers.drop_database(db)


def test_collect_sentiment_on_a_real_worker_against_local_feeds(tmp_path, deployment):
    db, broker = deployment
    upgrade(db)
    with news_server(standard_routes()) as srv:
        feeds = ",".join([f"desk=rss:{srv.url('/news/desk-page1.xml')}",
                          f"reddit:{srv.url('/r/Bitcoin/new.json')}",
                          f"broken=rss:{srv.url('/news/desk-broken.xml')}"])
        # The fixtures are from January 2024: reach back far enough to collect them.
        env = brain_env(db, broker, tmp_path, BRAIN_NEWS_FEEDS=feeds, BRAIN_SYMBOLS="BTC/USDT,ETH/USDT,SOL/USDT",
                        BRAIN_NEWS_MIN_INTERVAL="0", BRAIN_NEWS_LOOKBACK_HOURS="200000")
        prepare_folders(from_environ(env))
        with worker(env, log_dir=tmp_path):
            first = json.loads(run_python(SEND, env).strip().splitlines()[-1])
            rows = store.read_table(make_engine(db), "sentiment_scores")
            second = json.loads(run_python(SEND, env).strip().splitlines()[-1])
    engine = make_engine(db)
    pd.testing.assert_frame_equal(store.read_table(engine, "sentiment_scores"), rows)
    assert sorted(first["feeds"]) == ["desk", "reddit/r/Bitcoin"] and list(first["failed"]) == ["broken"]
    assert first["stored"] == len(rows) > 0 and second["stored"] == 0
    assert set(rows["source"]) == {"desk", "reddit/r/Bitcoin"}
    assert set(rows["symbol"]) == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
    assert rows["ts"].max() == pd.Timestamp("2024-01-10 16:00", tz="UTC")
    open_checks = read_findings(engine, data_kind="news", resolved=False).groupby("source")["check"].apply(set)
    assert open_checks["broken"] == {"malformed"}
    assert "stale" in open_checks["desk"] and "stale" in open_checks["reddit/r/Bitcoin"]
    assert any(h.startswith("/r/Bitcoin/new.json?") and "after=t3_18ugc03" in h for h in srv.hits)
