"""Throwaway PostgreSQL 15 and Redis servers for tests, benchmarks and end-to-end runs.

Usable outside pytest::

    from tests.servers import postgres_server, redis_server
    with postgres_server() as pg_url, redis_server() as redis_url:
        ...

Each server lives in its own temporary directory, listens on a free port of 127.0.0.1 and is stopped
and removed when the context exits.  Nothing here skips: a missing binary is a clear error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

PG_BIN = Path(os.environ.get("BRAIN_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
STARTUP_TIMEOUT_S = 60.0
# port -> (data directory, temporary directory) of each running throwaway PostgreSQL, for restarts.
_PG_SERVERS: dict[int, tuple[Path, Path]] = {}


class ServerError(RuntimeError):
    """A throwaway server could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _is_root() -> bool:
    return os.geteuid() == 0


def _as_pg_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", PG_USER, "--", *cmd] if _is_root() else cmd


def _run(cmd: list[str], what: str, cwd: Path) -> None:
    # cwd: the postgres user may not be allowed into the caller's working directory.
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), cwd=cwd)
    if proc.returncode != 0:
        raise ServerError(f"{what} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")


def _clean_env() -> dict[str, str]:
    # A developer's PG* variables must not redirect the throwaway server's tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def _make_tempdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if _is_root():
        shutil.chown(path, user=PG_USER, group=None)
    return path


def create_database(server_url: str, name: str | None = None) -> str:
    """Create a new empty database on the server of `server_url`; return the URL that points at it."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    name = name or f"t_{uuid.uuid4().hex}"
    with psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(db_url: str) -> None:
    """Drop the database of `db_url`, closing its remaining connections."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            psycopg.sql.Identifier(url.database)))


@contextlib.contextmanager
def postgres_server(database: str = "brain", settings: dict[str, str] | None = None) -> Iterator[str]:
    """Run a throwaway PostgreSQL 15; yield `postgresql+psycopg://postgres@127.0.0.1:PORT/<database>`."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            raise ServerError(f"{PG_BIN / tool} not found: install postgresql-15 (or set BRAIN_TEST_PG_BIN)")
    if _is_root() and shutil.which("runuser") is None:
        raise ServerError("running as root needs `runuser` to start PostgreSQL as the postgres user")
    tmp = _make_tempdir("brain-pg-")
    data = tmp / "data"
    port = free_port()
    options = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(tmp),
        # A throwaway server: durability buys nothing and costs most of the test time.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "300",
        "shared_buffers": "256MB",
        "max_wal_size": "4GB",
        "logging_collector": "off",
    }
    options.update(settings or {})
    started = False
    try:
        try:
            _run(_as_pg_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust",
                              "-E", "UTF8", "--no-sync", "--no-locale"]), "initdb", tmp)
            opts = " ".join(f"-c {k}={v}" for k, v in options.items())
            _run(_as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(tmp / "postgres.log"),
                              "-o", opts, "-w", "-t", str(int(STARTUP_TIMEOUT_S)), "start"]),
                 "pg_ctl start", tmp)
            started = True
            _PG_SERVERS[port] = (data, tmp)
            url = create_database(f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}/postgres", database)
        except ServerError as exc:
            log = tmp / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServerError(f"{exc}\n{tail}") from None
        yield url
    finally:
        _PG_SERVERS.pop(port, None)
        if started:
            subprocess.run(_as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                        "-w", "stop"]), capture_output=True, env=_clean_env(), cwd=tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def restart_postgres(url: str, mode: str = "fast") -> None:
    """Restart the throwaway PostgreSQL behind `url` (same port, data directory and options).

    `mode` is pg_ctl's shutdown mode: "fast" ends every session cleanly, "immediate" kills the server
    processes and the restart goes through crash recovery, as after a power cut.
    """
    from sqlalchemy.engine import make_url

    if mode not in ("smart", "fast", "immediate"):
        raise ValueError(f"unknown pg_ctl shutdown mode {mode!r}")
    port = make_url(url).port
    if port not in _PG_SERVERS:
        raise ServerError(f"no throwaway PostgreSQL of this process listens on port {port}")
    data, tmp = _PG_SERVERS[port]
    # pg_ctl restart reuses the options of the previous start (postmaster.opts).
    _run(_as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(tmp / "postgres.log"), "-m", mode,
                      "-w", "-t", str(int(STARTUP_TIMEOUT_S)), "restart"]), f"pg_ctl restart -m {mode}", tmp)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """TERM, and KILL if it is still there after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Run a throwaway redis-server without persistence; yield `redis://127.0.0.1:PORT/0`."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerError("redis-server is not on PATH: run `make test` (installs it as root) "
                          "or `apt-get install -y redis-server`")
    tmp = Path(tempfile.mkdtemp(prefix="brain-redis-"))
    port = free_port()
    log = open(tmp / "redis.log", "wb")  # noqa: SIM115 - closed in finally, outlives this block
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp), "--save", "",
         "--appendonly", "no", "--maxmemory-policy", "noeviction", "--daemonize", "no"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _redis_ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise ServerError(f"redis-server did not start: {(tmp / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


class RestartableRedis:
    """A redis-server with AOF persistence (appendfsync always) that a test can stop with a signal and
    start again on the same port and directory, as an operator's restart or a crash would."""

    def __init__(self, tmp: Path, port: int, args: tuple[str, ...] = ()) -> None:
        self.tmp, self.port, self.args = tmp, port, args
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerError("redis-server is not on PATH: `apt-get install -y redis-server`")
        self._log = open(self.tmp / "redis.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.tmp), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction",
             "--daemonize", "no", *self.args], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _redis_ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ServerError(f"redis-server did not start: {(self.tmp / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self, sig: int = 15) -> None:
        """Send `sig` (SIGTERM: a clean shutdown; SIGKILL: a crash) and wait for the process to end."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def restartable_redis_server() -> Iterator[RestartableRedis]:
    """A `RestartableRedis`, started; stopped and removed when the context exits."""
    server = RestartableRedis(Path(tempfile.mkdtemp(prefix="brain-redis-aof-")), free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop(9)
        shutil.rmtree(server.tmp, ignore_errors=True)


@contextlib.contextmanager
def pgbouncer_server(pg_url: str, *, pool_mode: str = "transaction", pool_size: int = 4) -> Iterator[str]:
    """Run a throwaway PgBouncer in front of the throwaway PostgreSQL at `pg_url`; yield the same URL
    through PgBouncer (same user and database, PgBouncer's port).  `pool_size` server connections per
    (database, user) at most; clients beyond them wait for one."""
    from sqlalchemy.engine import make_url

    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        raise ServerError("pgbouncer is not installed: run `make test` (installs it as root) "
                          "or `apt-get install -y pgbouncer`")
    target = make_url(pg_url)
    tmp = _make_tempdir("brain-pgbouncer-")
    port = free_port()
    (tmp / "userlist.txt").write_text(f'"{PG_USER}" ""\n')
    (tmp / "pgbouncer.ini").write_text("\n".join([
        "[databases]",
        f"* = host=127.0.0.1 port={target.port}",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = trust",
        f"auth_file = {tmp / 'userlist.txt'}",
        f"pool_mode = {pool_mode}",
        f"default_pool_size = {pool_size}",
        "max_client_conn = 500",
        f"logfile = {tmp / 'pgbouncer.log'}",
        "",
    ]))
    if _is_root():
        for path in tmp.iterdir():
            shutil.chown(path, user=PG_USER, group=None)
    # PgBouncer, like PostgreSQL, refuses to run as root.
    proc = subprocess.Popen(_as_pg_user([binary, str(tmp / "pgbouncer.ini")]), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, env=_clean_env(), cwd=tmp)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = tmp / "pgbouncer.log"
                raise ServerError("pgbouncer did not start: "
                                  + (log.read_text(errors="replace")[-2000:] if log.exists() else ""))
            time.sleep(0.05)
        yield target.set(port=port).render_as_string(hide_password=False)
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


# --- failover: Redis behind Sentinel, PostgreSQL with a synchronous standby -------------------------

SENTINEL_MASTER = "brainmaster"


class SentinelCluster:
    """Two redis-servers (a master and its replica) and three sentinels monitoring them, on local ports.

    `url` is the broker URL the Brain is configured with (`sentinel://…;sentinel://…;sentinel://…`, used
    with BRAIN_REDIS_MASTER=`master`).  The sentinels call the master down after `down_after_ms` without a
    reply and agree on a failover with a quorum of two.
    """

    def __init__(self, tmp: Path, master: str = SENTINEL_MASTER, down_after_ms: int = 1000) -> None:
        self.tmp, self.master, self.down_after_ms = tmp, master, down_after_ms
        first = free_port()
        self.nodes = [RestartableRedis(_subdir(tmp, "redis-a"), first),
                      RestartableRedis(_subdir(tmp, "redis-b"), free_port(),
                                       ("--replicaof", "127.0.0.1", str(first)))]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen] = []
        self.url = ";".join(f"sentinel://127.0.0.1:{p}" for p in self.sentinel_ports)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        binary = shutil.which("redis-server")
        for i, port in enumerate(self.sentinel_ports):
            folder = _subdir(self.tmp, f"sentinel-{i}")
            conf = folder / "sentinel.conf"  # a file of its own: a sentinel rewrites it with what it learns
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {folder}",
                f"sentinel monitor {self.master} 127.0.0.1 {self.nodes[0].port} 2",
                f"sentinel down-after-milliseconds {self.master} {self.down_after_ms}",
                f"sentinel failover-timeout {self.master} 10000",
                f"sentinel parallel-syncs {self.master} 1", ""]))
            log = open(folder / "sentinel.log", "wb")  # noqa: SIM115 - the process keeps it
            self.sentinels.append(subprocess.Popen([binary, str(conf), "--sentinel"], stdout=log,
                                                   stderr=subprocess.STDOUT))
        # Ready when every sentinel knows the replica and the two other sentinels: only then can they
        # agree on a failover and promote someone.
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not all(self._ready(port) for port in self.sentinel_ports):
            if time.monotonic() > deadline:
                raise ServerError("the sentinels did not discover the replica and each other: "
                                  + (self.tmp / "sentinel-0" / "sentinel.log").read_text(errors="replace")[-2000:])
            time.sleep(0.1)

    def _ready(self, port: int) -> bool:
        import redis

        try:
            with redis.Redis(port=port, socket_timeout=1) as client:
                master = client.sentinel_master(self.master)
                return int(master["num-slaves"]) >= 1 and int(master["num-other-sentinels"]) >= 2
        except (redis.RedisError, OSError, KeyError):
            return False

    def master_port(self) -> int | None:
        """The master's port as a majority of the sentinels report it (None while they disagree)."""
        import redis

        seen = []
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError, OSError), redis.Redis(port=port, socket_timeout=1) as client:
                seen.append(int(client.sentinel_get_master_addr_by_name(self.master)[1]))
        best = max(set(seen), key=seen.count) if seen else None
        return best if best is not None and seen.count(best) >= 2 else None

    def node(self, port: int) -> RestartableRedis:
        return next(n for n in self.nodes if n.port == port)

    def kill_master(self, timeout: float = 30.0) -> RestartableRedis:
        """SIGKILL the current master (a crash: no clean shutdown, no last replication); return its node.
        The master is the one a majority of the sentinels names: never a guess, since killing the
        replica instead would leave nobody to promote."""
        deadline = time.monotonic() + timeout
        while (port := self.master_port()) is None:
            if time.monotonic() > deadline:
                raise ServerError(f"the sentinels did not agree on a master in {timeout:.0f} s")
            time.sleep(0.1)
        victim = self.node(port)
        victim.stop(9)
        return victim

    def wait_promoted(self, old_port: int, timeout: float = 60.0) -> int:
        """Wait until the sentinels name a master other than `old_port` and it answers as a master."""
        import redis

        deadline = time.monotonic() + timeout
        while True:
            port = self.master_port()
            if port is not None and port != old_port:
                with contextlib.suppress(redis.RedisError, OSError), redis.Redis(port=port, socket_timeout=1) as c:
                    if c.info("replication")["role"] == "master":
                        return port
            if time.monotonic() > deadline:
                raise ServerError(f"no replica promoted {timeout:.0f} s after the master on {old_port} went down")
            time.sleep(0.05)

    def wait_healthy(self, timeout: float = 90.0) -> int:
        """Wait until a majority of the sentinels names a master that answers as one, and every other
        node replicates it, in sync, and counts as a healthy replica for a quorum of the sentinels (so
        the next failover has someone to promote).  Returns the master's port.

        It does not insist on which node is which: a master that comes back after a failover is
        converted to a replica within about 10 s (the sentinels' INFO period), but on a loaded machine
        the sentinels may fail over once more on their own (a master stalled past down-after, e.g.
        forking for the returning replica's full sync), and that is a healthy cluster too."""
        import redis

        deadline = time.monotonic() + timeout
        while True:
            master, seen = self.master_port(), {}
            for node in self.nodes:
                with contextlib.suppress(redis.RedisError, OSError), \
                        redis.Redis(port=node.port, socket_timeout=1) as client:
                    info = client.info("replication")
                    seen[node.port] = (info["role"], info.get("master_port"), info.get("master_link_status"))
            replicas = [n.port for n in self.nodes if n.port != master]
            if master is not None and seen.get(master, ("",))[0] == "master" and all(
                    seen.get(p, ("",))[0] == "slave" and seen[p][1] == master and seen[p][2] == "up"
                    and [self._replica_flags(sp, p) for sp in self.sentinel_ports].count("slave") >= 2
                    for p in replicas):
                return master
            if time.monotonic() > deadline:
                raise ServerError(f"the cluster did not settle in {timeout:.0f} s: sentinels' master {master}, "
                                  f"nodes {seen}; "
                                  + (self.tmp / "sentinel-0" / "sentinel.log").read_text(errors="replace")[-1500:])
            time.sleep(0.1)

    def _replica_flags(self, sentinel_port: int, port: int) -> str | None:
        """How the sentinel on `sentinel_port` sees the replica on `port` ("slave" when healthy)."""
        import redis

        with contextlib.suppress(redis.RedisError, OSError), redis.Redis(port=sentinel_port, socket_timeout=1) as c:
            for replica in c.sentinel_slaves(self.master):
                if int(replica["port"]) == port:
                    return replica["flags"]
        return None

    def stop(self) -> None:
        for proc in self.sentinels:
            _stop(proc)
        for node in self.nodes:
            node.stop(9)


def _subdir(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def sentinel_cluster(master: str = SENTINEL_MASTER, down_after_ms: int = 1000) -> Iterator[SentinelCluster]:
    """A started `SentinelCluster`; stopped and removed when the context exits."""
    if shutil.which("redis-server") is None:
        raise ServerError("redis-server is not on PATH: `apt-get install -y redis-server`")
    cluster = SentinelCluster(Path(tempfile.mkdtemp(prefix="brain-sentinel-")), master, down_after_ms)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.tmp, ignore_errors=True)


def _pg_ctl(port: int, *args: str) -> None:
    data, tmp = _PG_SERVERS[port]
    _run(_as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(tmp / "postgres.log"), "-w",
                      "-t", str(int(STARTUP_TIMEOUT_S)), *args]), f"pg_ctl {' '.join(args)}", tmp)


def stop_postgres(url: str, mode: str = "immediate") -> None:
    """Stop the throwaway PostgreSQL behind `url` (`immediate`: its processes are killed, as in a crash)."""
    from sqlalchemy.engine import make_url

    _pg_ctl(make_url(url).port, "-m", mode, "stop")


def promote_postgres(url: str) -> None:
    """Promote the throwaway standby behind `url` to a primary (`pg_ctl promote`, waiting until it is)."""
    from sqlalchemy.engine import make_url

    _pg_ctl(make_url(url).port, "promote")


@contextlib.contextmanager
def postgres_standby(primary_url: str, synchronous: bool = True) -> Iterator[str]:
    """A streaming standby of the throwaway PostgreSQL at `primary_url` (a base backup taken with
    `pg_basebackup -R`, started on its own port); yield its URL (same database name).

    `synchronous`: the primary then waits, for every commit, until the standby has flushed it
    (synchronous_standby_names = '*', set on the primary only: a promoted standby has no standby of its
    own and must not wait for one).  The standby is not synchronous until it streams; this waits for it.
    """
    import psycopg
    from sqlalchemy.engine import make_url

    primary = make_url(primary_url)
    if primary.port not in _PG_SERVERS:
        raise ServerError(f"no throwaway PostgreSQL of this process listens on port {primary.port}")
    tmp = _make_tempdir("brain-pg-standby-")
    data = tmp / "data"
    port = free_port()
    started = False
    try:
        _run(_as_pg_user([str(PG_BIN / "pg_basebackup"), "-D", str(data), "-h", "127.0.0.1", "-p", str(primary.port),
                          "-U", PG_USER, "-X", "stream", "-R", "--no-sync", "-c", "fast"]), "pg_basebackup", tmp)
        opts = " ".join(f"-c {k}={v}" for k, v in {
            "listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": str(tmp),
            "hot_standby": "on", "fsync": "off", "synchronous_commit": "on", "max_connections": "300",
            "logging_collector": "off", "synchronous_standby_names": "''"}.items())
        _run(_as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(tmp / "postgres.log"), "-o", opts,
                          "-w", "-t", str(int(STARTUP_TIMEOUT_S)), "start"]), "pg_ctl start (standby)", tmp)
        started = True
        _PG_SERVERS[port] = (data, tmp)
        with psycopg.connect(host="127.0.0.1", port=primary.port, user=PG_USER, dbname="postgres",
                             autocommit=True) as conn:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while not conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").fetchone()[0]:
                if time.monotonic() > deadline:
                    raise ServerError("the standby does not stream from the primary: "
                                      + (tmp / "postgres.log").read_text(errors="replace")[-2000:])
                time.sleep(0.05)
            if synchronous:
                conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
                conn.execute("SELECT pg_reload_conf()")
                while conn.execute("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'").fetchone()[0] < 1:
                    if time.monotonic() > deadline:
                        raise ServerError("the standby did not become synchronous")
                    time.sleep(0.05)
        yield primary.set(port=port).render_as_string(hide_password=False)
    finally:
        _PG_SERVERS.pop(port, None)
        if synchronous:  # a primary still up must not go on waiting for a standby that is gone
            with contextlib.suppress(psycopg.Error), psycopg.connect(
                    host="127.0.0.1", port=primary.port, user=PG_USER, dbname="postgres", autocommit=True,
                    connect_timeout=2) as conn:
                conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
                conn.execute("SELECT pg_reload_conf()")
        if started:
            subprocess.run(_as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                           capture_output=True, env=_clean_env(), cwd=tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def multi_host_url(*urls: str) -> str:
    """One URL naming the servers of `urls` in order (libpq's host list; same user and database)."""
    from sqlalchemy.engine import make_url

    parsed = [make_url(u) for u in urls]
    hosts = ",".join(f"{u.host}:{u.port}" for u in parsed)
    first = parsed[0]
    auth = f"{first.username}@" if first.username else ""
    return f"{first.drivername}://{auth}{hosts}/{first.database}"


def rejoin_as_standby(url: str, primary_url: str) -> None:
    """Start the stopped throwaway PostgreSQL behind `url` again as a standby of the one at `primary_url`
    (standby.signal and primary_conninfo, same options as before): an old primary coming back after a
    failover without taking writes.  Its WAL may have gone past the point where the new primary's
    timeline forked (then it does not catch up, and answers read-only, as a standby)."""
    import shlex

    from sqlalchemy.engine import make_url

    port, primary = make_url(url).port, make_url(primary_url)
    data, tmp = _PG_SERVERS[port]
    # The previous start's command line: the binary, -D, the data directory, then its -c options.
    opts = shlex.split((data / "postmaster.opts").read_text())[3:]
    conninfo = f"host=127.0.0.1 port={primary.port} user={PG_USER}"
    with open(data / "postgresql.auto.conf", "a") as conf:
        conf.write(f"\nprimary_conninfo = '{conninfo}'\nsynchronous_standby_names = ''\n")
    (data / "standby.signal").touch()
    if _is_root():
        for path in (data / "standby.signal", data / "postgresql.auto.conf"):
            shutil.chown(path, user=PG_USER, group=None)
    _pg_ctl(port, "-o", " ".join(shlex.quote(o) for o in opts), "start")
