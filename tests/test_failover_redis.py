"""Redis behind Sentinel: the master killed (SIGKILL) mid retrain fan-out and again mid nightly.

Real servers: two redis-servers (master and replica) and three sentinels (tests/servers.py), one real
2-process worker, two beats (RedBeat: one holds the lock) and an Engine process that enqueues the retrain
and the nightly and waits on each with `BrainClient.wait`.  Broker, result backend and beat lock are all
configured by `BRAIN_BROKER_URL=sentinel://…;…` and `BRAIN_REDIS_MASTER`.

While a `train_symbol` runs, the master is killed; the sentinels promote the replica.  The killed server
comes back (as a supervisor would restart it) and the sentinels make it a replica of the new master; then
it is promoted back when the new master is killed while the nightly's `analyse_symbol` runs.

Pass: both runs finish with no manual re-drive, `wait` returns, the Brain equals an undisturbed run's
table by table, exactly one beat goes on scheduling, and the worker answers through the current master.
The recovery (fault to the run's finish) and reconcile_runs' re-drives are printed: docs/ha.md quotes them.
"""

from __future__ import annotations

import json
import time

import pytest

from brain_tasks.brain.db import dispose_engine
from brain_tasks.settings import from_environ
from tests import chaos, failover, servers
from tests.workers import brain_env, run_python

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

TRAINING = r"Task brain_tasks\.train_symbol\[[0-9a-f-]+\] received"
ANALYSING = r"Task brain_tasks\.analyse_symbol\[[0-9a-f-]+\] received"

# Asked through the sentinels after both failovers: the worker answers a broadcast (its control
# connection is on the current master) and runs a task whose result comes back through the backend.
PROBE = """
import json
from brain_tasks.app import app
replies = app.control.inspect(timeout=10, limit=1).ping() or {}
pong = app.send_task("brain_tasks.ping", args=["after"], queue="collect").get(timeout=60)
print(json.dumps({"workers": sorted(replies), "pong": pong}))
"""


def _clients(port: int) -> list[str]:
    """Client connections on the redis-server at `port`, apart from the sentinels, replication links (M: its
    master, S: a replica) and this one."""
    import redis

    with redis.Redis(port=port, socket_timeout=2) as client:
        me = client.client_id()
        return [" ".join(f"{k}={c[k]}" for k in ("addr", "name", "age", "idle", "flags", "db", "sub", "psub", "cmd"))
                for c in client.client_list()
                if int(c["id"]) != me and not c["name"].startswith("sentinel-") and not set("MS") & set(c["flags"])]


def test_sentinel_url_without_a_master_name_fails_in_one_line():
    from brain_tasks.errors import BrokerUnavailableError

    env = {"BRAIN_BROKER_URL": "sentinel://:hunter2@10.0.0.1:26379;sentinel://10.0.0.2:26379"}
    with pytest.raises(BrokerUnavailableError) as info:
        from_environ(env)
    message = str(info.value)
    assert "BRAIN_REDIS_MASTER" in message and "hunter2" not in message and "\n" not in message
    # The command line says the same in one line, exit status 2, before connecting to anything.
    import subprocess
    import sys

    from tests.workers import REPO

    proc = subprocess.run([sys.executable, "-m", "brain_tasks.cli", "runs"], cwd=REPO, capture_output=True, text=True,
                          env=brain_env("sqlite:///unused.db", env["BRAIN_BROKER_URL"], REPO / ".brain"), timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"brain-tasks: {message}"], proc.stderr


def test_sentinel_configuration_reaches_broker_results_and_beat():
    """The settings that matter through a failover: master name everywhere, socket timeouts (a dead
    master fails a socket in seconds, not minutes) with a retry on timeout, and one visibility timeout."""
    from tests.test_settings import _celery_conf

    conf = _celery_conf({"BRAIN_BROKER_URL": "sentinel://:pw@s1:26379/2;sentinel://s2:26380;sentinel://s3",
                         "BRAIN_REDIS_MASTER": "brain"})
    broker, backend = conf["broker_transport_options"], conf["result_backend_transport_options"]
    assert broker["master_name"] == backend["master_name"] == "brain"
    assert broker["visibility_timeout"] == backend["visibility_timeout"] > conf["task_time_limit"]
    assert broker["socket_timeout"] == broker["socket_connect_timeout"] == conf["redis_socket_timeout"] == 10.0
    assert broker["retry_on_timeout"] and conf["redis_retry_on_timeout"]
    assert conf["result_backend"] == conf["broker_url"]
    assert conf["redbeat_redis_url"] == "redis-sentinel://"
    beat = conf["redbeat_redis_options"]
    assert beat["sentinels"] == [["s1", 26379], ["s2", 26380], ["s3", 26379]]
    assert (beat["service_name"], beat["db"], beat["password"]) == ("brain", 2, "pw")
    # The single-server path is unchanged: no master, no timeouts of our own.
    plain = _celery_conf({"BRAIN_BROKER_URL": "redis://127.0.0.1:6379/0"})
    assert set(plain["broker_transport_options"]) == {"visibility_timeout", "unacked_restore_throttle"}
    assert plain["redbeat_redis_url"] == "redis://127.0.0.1:6379/0" and "redbeat_redis_options" not in plain


def test_compose_ha_override_points_every_service_at_the_sentinels_and_the_standby():
    """docker-compose.ha.yml, checked without a Docker engine: each Brain service's environment (the base
    file's, overridden key by key as compose merges it) is accepted by the settings and names three
    sentinels and both PostgreSQL servers; the servers it adds are wired as the runbook says."""
    import re

    import yaml
    from sqlalchemy.engine import make_url

    from brain_tasks.settings import normalize_database_url, parse_sentinel_url
    from tests.workers import REPO

    base = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    ha = yaml.safe_load((REPO / "docker-compose.ha.yml").read_text())["services"]
    for name in ("migrate", "worker-collect", "worker-train", "beat", "flower", "dashboard"):
        env = {**base[name]["environment"], **ha[name]["environment"]}
        env = {k: re.sub(r"\$\{(\w+):\?[^}]*\}", "secret", str(v)) for k, v in env.items()}
        s = from_environ(env)
        assert s.sentinel and s.redis_master == "brainmaster", name
        assert len(parse_sentinel_url(s.broker_url).sentinels) == 3
        assert parse_sentinel_url(s.effective_result_backend).db == 1
        assert s.database_url == normalize_database_url(s.database_url)
        query = make_url(s.database_url).query
        assert query["host"] == ("postgres:5432", "postgres-standby:5432"), name
        assert query["target_session_attrs"] == "read-write"
        assert {"sentinel-1", "sentinel-2", "sentinel-3", "postgres-standby"} <= set(ha[name]["depends_on"]), name
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = "\n".join(ha[name]["command"])
        assert "sentinel monitor brainmaster redis 6379 2" in script and "--sentinel" in script
    assert ha["redis-replica"]["command"][-4:-2] == ["redis", "6379"]
    assert "synchronous_standby_names=*" in ha["postgres"]["command"]
    standby = "\n".join(ha["postgres-standby"]["command"])
    assert "pg_basebackup -h postgres" in standby and " -R " in standby
    assert "synchronous_standby_names" not in standby  # a promoted standby must not wait for a standby
    script = REPO / "deploy" / "ha" / "pg-replication.sh"
    assert "host replication" in script.read_text()
    assert any(v["source"] == "./deploy/ha/pg-replication.sh" for v in ha["postgres"]["volumes"] if isinstance(v, dict))


def test_redis_master_killed_mid_retrain_and_mid_nightly(tmp_path, pg_url, redis_url):
    reference = failover.reference_url(pg_url, redis_url, tmp_path / "reference")
    with servers.sentinel_cluster() as cluster:
        url = chaos.fresh_brain(pg_url)
        env = brain_env(url, cluster.url, tmp_path, **failover.ENV, BRAIN_REDIS_MASTER=cluster.master)
        beat_logs = [tmp_path / "beat-a.log", tmp_path / "beat-b.log"]
        beats = [failover.beat(env, beat_logs[0])]
        try:
            chaos.when_logged(beat_logs[0], r"beat: Acquired lock", timeout=60)
            beats.append(failover.beat(env, beat_logs[1]))  # waits for the lock
            log = tmp_path / "w.log"
            with failover.supervised_worker(env, name="w", concurrency=2, log_dir=tmp_path) as supervisor:
                engine = failover.start_engine(env, tmp_path)
                faults = []
                for run, pattern in (("retrain", TRAINING), ("nightly", ANALYSING)):
                    if run == "nightly":
                        engine.release_nightly()
                    chaos.when_logged(log, pattern)
                    fault = time.time()
                    victim = cluster.kill_master()
                    cluster.wait_promoted(victim.port)
                    promoted = time.time() - fault
                    victim.start()  # a supervisor restarts it: the sentinels make it a replica
                    done = engine.wait_for(run)
                    faults.append({"run": run, "state": done["state"], "promoted_s": round(promoted, 1),
                                   "finished_s": round(done["finished"] - fault, 1),
                                   "redrives": failover.redrives(url, done["run_id"], done["attempt_id"]),
                                   "worker_restarts": sum(fault <= t <= done["finished"] for t in supervisor.restarts)})
                    cluster.wait_healthy()  # before the next fault: someone to promote
                probe = json.loads(run_python(PROBE, env, timeout=120).strip().splitlines()[-1])
                stuck = {n.port: _clients(n.port) for n in cluster.nodes if n.port != cluster.master_port()}
                sends = failover.one_beat_schedules(beat_logs, interval=2.0)
        finally:
            for proc in beats:
                failover.stop(proc)
        failover.figures("redis sentinel failover", faults)
        assert [f["state"] for f in faults] == ["succeeded", "succeeded"], faults
        assert probe["pong"]["pong"] == "after" and len(probe["workers"]) == 1, probe
        assert not any(stuck.values()), f"clients left on a demoted master: {stuck}"
        assert sum(1 for n in sends if n) == 1
        chaos.assert_same_rows(reference, url)
    dispose_engine(url)
