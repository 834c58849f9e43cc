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

    def __init__(self, tmp: Path, port: int) -> None:
        self.tmp, self.port = tmp, port
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
             "--daemonize", "no"], stdout=self._log, stderr=subprocess.STDOUT)
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
