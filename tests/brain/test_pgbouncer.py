"""Behind a real PgBouncer in transaction mode: claims still exclude each other, and a real worker's
run completes with PostgreSQL seeing no more server connections than PgBouncer's pool."""

from __future__ import annotations

import json
import threading
import time

import pytest
import sqlalchemy as sa

from brain_tasks.brain import locks
from brain_tasks.brain.db import dispose_engine
from brain_tasks.brain.migrate import upgrade
from tests import servers
from tests.workers import brain_env, run_python, worker

pytestmark = [pytest.mark.postgres]

POOL = 4  # PgBouncer's server connections: fewer than the two worker processes could otherwise hold


@pytest.fixture
def bouncer(pg_url):
    url = servers.create_database(pg_url)
    upgrade(url)
    dispose_engine(url)  # the migration's pooled connection would count as one of the clients below
    with servers.pgbouncer_server(url, pool_mode="transaction", pool_size=POOL) as through:
        yield url, through
    dispose_engine(through)


def _nullpool_engine(url: str) -> sa.Engine:
    # What BRAIN_DB_POOL_SIZE=0 makes (brain.db._postgres_pool): nothing kept, nothing prepared.
    return sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"prepare_threshold": None})


def test_claims_exclude_each_other_through_transaction_pooling(bouncer):
    direct, through = bouncer
    engine = _nullpool_engine(through)
    order: list[str] = []
    held = threading.Event()

    def first() -> None:
        with locks.claim(engine, "train:A/B"):
            order.append("first in")
            held.set()
            time.sleep(0.5)  # other clients' transactions run on PgBouncer's other server connections
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    held.wait(10)
    with locks.try_claim(engine, "train:A/B") as got:
        assert got is False
    with locks.claim(engine, "train:A/B"):
        order.append("second in")
    t.join()
    assert order == ["first in", "first out", "second in"]
    # Nothing stays behind on a server connection PgBouncer hands to the next client.
    check = sa.create_engine(direct, poolclass=sa.pool.NullPool)
    with check.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).scalar() == 0
    with locks.try_claim(engine, "train:A/B") as got:
        assert got is True


ENGINE = """
import json
from celery import Celery
app = Celery(broker={broker!r}, backend={broker!r})
app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
kw = {{"symbols": {symbols!r}, "as_of": "2018-01-30"}}
print(json.dumps(app.send_task("brain_tasks.daily_retrain", queue="analysis",
                               kwargs={{**kw, "models": ["lightgbm", "baseline"]}}).get(timeout=600)))
print(json.dumps(app.send_task("brain_tasks.nightly_analysis", queue="analysis", kwargs=kw).get(timeout=600)))
"""


@pytest.mark.redis
@pytest.mark.slow
def test_a_worker_runs_through_pgbouncer_within_its_pool(bouncer, redis_url, tmp_path):
    direct, through = bouncer
    symbols = ["ETH/BTC", "LTC/BTC", "ADA/BTC"]
    env = brain_env(through, redis_url, tmp_path, BRAIN_DB_POOL_SIZE="0", BRAIN_SIZER_TIMESTEPS="0")
    peak, stop = [0], threading.Event()

    def watch() -> None:
        with sa.create_engine(direct).connect() as conn:
            while not stop.is_set():
                n = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                                         "AND datname = current_database() AND pid <> pg_backend_pid()")).scalar()
                conn.commit()
                peak[0] = max(peak[0], n)
                time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with worker(env, concurrency=2, log_dir=tmp_path / "logs"):
            out = run_python(ENGINE.format(broker=redis_url, symbols=symbols), env, timeout=600)
    finally:
        stop.set()
        watcher.join()
    retrain, nightly = (json.loads(line) for line in out.strip().splitlines()[-2:])
    assert retrain["state"] == "succeeded" and sorted(retrain["succeeded"]) == sorted(symbols), retrain
    assert nightly["state"] == "succeeded" and not nightly["failed"], nightly
    assert 0 < peak[0] <= POOL
