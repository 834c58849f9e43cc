"""PostgreSQL with a synchronous streaming standby: the primary stopped immediately mid retrain and the
standby promoted, with the Brain configured by one multi-host `BRAIN_DATABASE_URL`.

Real servers: a primary of this module's own (restarting the session's server would cut the other tests'
connections) with `synchronous_commit = on` and a standby made with `pg_basebackup -R` that it waits for
on every commit (synchronous_standby_names = '*'); the session's Redis as broker; one real 2-process
worker, one beat and an Engine process that waits on each run with `BrainClient.wait`.

While a `train_symbol` runs, the primary is stopped with `pg_ctl stop -m immediate` (its processes are
killed, as in a crash) and the standby promoted.  Then the old primary comes back as a standby of the new
one (read-only), and the nightly runs.

Pass: both runs finish with no manual re-drive, `wait` returns, the Brain equals an undisturbed run's
table by table, one beat goes on scheduling, and no worker holds a connection to the old primary.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from brain_tasks.brain.db import check_schema, dispose_engine, make_engine
from brain_tasks.errors import DatabaseUnavailableError
from tests import chaos, failover, servers
from tests.workers import REPO, brain_env

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

TRAINING = r"Task brain_tasks\.train_symbol\[[0-9a-f-]+\] received"


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    """(primary, synchronous standby): URLs of the same `brain` database on each."""
    with servers.postgres_server(settings={"synchronous_commit": "on"}) as primary:
        with servers.postgres_standby(primary) as standby:
            yield primary, standby


def _on(server_url: str, database_url: str) -> str:
    """`database_url`'s database on the server of `server_url`."""
    return make_url(server_url).set(database=make_url(database_url).database).render_as_string(hide_password=False)


def _brain_connections(server_url: str) -> int:
    """Connections of Brain processes (their application_name) on the server of `server_url`."""
    url = make_url(server_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname="postgres", autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'brain-tasks %'"
                            ).fetchone()[0]


def test_a_multi_host_url_where_no_host_accepts_writes_fails_in_one_line(pair, tmp_path):
    _, standby = pair
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{servers.free_port()}/brain"
    url = servers.multi_host_url(standby, dead).replace("postgres@", "postgres:hunter2@")
    with pytest.raises(DatabaseUnavailableError) as info:
        check_schema(url)
    message = str(info.value)
    assert message.startswith("no host of the database") and "accepts writes" in message, message
    assert "read-only" in message and "hunter2" not in message and "\n" not in message
    dispose_engine(url)
    # The command line says the same in one line, exit status 2.
    env = brain_env(url, None, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "brain_tasks.cli", "models"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "accepts writes" in proc.stderr
    assert "hunter2" not in proc.stderr


def test_connections_to_a_demoted_primary_are_discarded(pair):
    """A switchover: the old primary is made read-only and the standby promoted while the pool holds a
    connection to the old one.  The next write there fails as a transient OperationalError (the policy
    retries it), the pool is discarded, and the retry's new connection lands on the new primary."""
    primary, standby = pair
    url = servers.multi_host_url(primary, standby)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE switchover (n int)")
        assert conn.exec_driver_sql("SELECT inet_server_port()").scalar() == make_url(primary).port
    old = make_url(primary)
    with psycopg.connect(host=old.host, port=old.port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        conn.execute("SELECT pg_reload_conf()")
    servers.promote_postgres(standby)
    with pytest.raises(sa.exc.OperationalError) as info:
        with engine.begin() as conn:  # pre-ping passes: the old primary still answers, read-only
            conn.exec_driver_sql("INSERT INTO switchover VALUES (1)")
    assert info.value.connection_invalidated and "read-only" in str(info.value.orig)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO switchover VALUES (2)")
        assert conn.exec_driver_sql("SELECT inet_server_port()").scalar() == make_url(standby).port
    assert engine.pool.checkedin() == 1  # the old primary's connection was not put back
    dispose_engine(url)


def test_postgres_primary_stopped_mid_retrain_and_standby_promoted(pair, tmp_path, pg_url, redis_url):
    reference = failover.reference_url(pg_url, redis_url, tmp_path / "reference")
    primary, standby = pair
    on_primary = chaos.fresh_brain(primary)  # replicated to the standby
    on_standby = _on(standby, on_primary)
    url = servers.multi_host_url(on_primary, on_standby)
    env = brain_env(url, chaos.redis_db(redis_url, 12), tmp_path, **failover.ENV)
    beat_log = tmp_path / "beat.log"
    beat = failover.beat(env, beat_log)
    try:
        log = tmp_path / "w.log"
        with failover.supervised_worker(env, name="w", concurrency=2, log_dir=tmp_path) as supervisor:
            engine = failover.start_engine(env, tmp_path)
            chaos.when_logged(log, TRAINING)
            fault = time.time()
            servers.stop_postgres(primary, "immediate")
            servers.promote_postgres(standby)
            promoted = time.time() - fault
            done = engine.wait_for("retrain")
            faults = [{"run": "retrain", "state": done["state"], "promoted_s": round(promoted, 1),
                       "finished_s": round(done["finished"] - fault, 1),
                       "redrives": failover.redrives(url, done["run_id"], done["attempt_id"]),
                       "worker_restarts": len(supervisor.restarts)}]
            # The old primary comes back, as a standby of the new one: it answers, read-only.
            servers.rejoin_as_standby(primary, standby)
            engine.release_nightly()
            nightly = engine.wait_for("nightly")
            faults.append({"run": "nightly", "state": nightly["state"], "promoted_s": "-", "finished_s": "-",
                           "redrives": failover.redrives(url, nightly["run_id"], nightly["attempt_id"]),
                           "worker_restarts": len(supervisor.restarts) - faults[0]["worker_restarts"]})
            on_old, on_new = _brain_connections(primary), _brain_connections(standby)
            sends = failover.one_beat_schedules([beat_log], interval=2.0)
    finally:
        failover.stop(beat)
    failover.figures("postgres standby failover", faults)
    assert [f["state"] for f in faults] == ["succeeded", "succeeded"], faults
    assert on_old == 0 and on_new > 0, (on_old, on_new)
    assert sends[0] > 0
    dispose_engine(reference)
    chaos.assert_same_rows(reference, url)
    dispose_engine(url)
