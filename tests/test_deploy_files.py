"""docker-compose.yml, the Procfile and the Dockerfile, checked without a Docker engine.

The compose file is parsed with PyYAML (merge keys resolved as compose resolves them), the Procfile
with honcho, and every celery command line is handed to celery's own CLI with `--help`, which
rejects unknown options before printing help.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker-compose.yml"
PROCFILE = ROOT / "Procfile"
DOCKERFILE = ROOT / "Dockerfile"
SERVICES = {"postgres", "redis", "migrate", "worker-collect", "worker-train", "beat", "flower", "dashboard"}
CELERY_SERVICES = ("worker-collect", "worker-train", "beat", "flower")
WORKERS = ("worker-collect", "worker-train")
CELERY_PROCS = ("worker", "beat", "flower")
BRAIN_ENV = ("BRAIN_DATABASE_URL", "BRAIN_BROKER_URL", "BRAIN_RESULT_BACKEND", "BRAIN_SYMBOLS", "BRAIN_EXCHANGE")
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH", re.IGNORECASE)
REQUIRED_REF = re.compile(r"^\$\{(\w+):\?[^}]*\}$")
URL_CREDENTIALS = re.compile(r"://[^\s:/@\"']+:([^\s@\"']+)@")
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


@pytest.fixture(scope="module")
def procfile() -> dict[str, str]:
    lines = [PROCFILE_LINE.match(line) for line in PROCFILE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert all(lines), "every non-comment Procfile line is `name: command`"
    return {m.group(1): m.group(2) for m in lines if m}


def compose_script(command: list[str] | str) -> str:
    """The shell line a compose `command` runs, after compose turns `$$` into `$`."""
    if isinstance(command, str):
        return command.replace("$$", "$")
    if command[:2] == ["sh", "-c"]:
        return command[2].replace("$$", "$")
    return shlex.join(command)


def celery_args(script: str) -> list[str]:
    """The arguments after `celery` in a shell line (guards and `exec` before it are skipped)."""
    tokens = shlex.split(script)
    assert "celery" in tokens, script
    return tokens[tokens.index("celery") + 1:]


def option(args: list[str], *names: str) -> str | None:
    """The value of an option given as `-x value`, `--name value` or `--name=value`."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def subcommand(args: list[str]) -> str:
    assert args[:2] == ["-A", "brain_tasks"], args
    return args[2]


def test_every_service_exists_with_its_image(services: dict[str, dict]) -> None:
    assert SERVICES <= set(services)
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    for name in ("postgres", "redis"):
        assert services[name]["volumes"] and services[name]["healthcheck"]["test"]
    assert "build" in services["worker-train"] and (ROOT / "Dockerfile").is_file()


def test_no_literal_secrets(services: dict[str, dict]) -> None:
    for name, service in services.items():
        env = service.get("environment") or {}
        assert isinstance(env, dict), f"{name}: environment as a mapping"
        for key, value in env.items():
            if SECRET_KEY.search(key):
                assert REQUIRED_REF.match(str(value)), f"{name}.{key} must come from the environment"
    assert REQUIRED_REF.match(services["postgres"]["environment"]["POSTGRES_PASSWORD"])
    for path in (COMPOSE, PROCFILE, DOCKERFILE):
        for password in URL_CREDENTIALS.findall(path.read_text()):
            assert password.startswith("${"), f"{path.name}: a literal password in a URL"


def test_brain_services_share_the_production_environment(services: dict[str, dict]) -> None:
    for name in (*CELERY_SERVICES, "migrate", "dashboard"):
        env = services[name]["environment"]
        assert set(BRAIN_ENV) <= set(env), name
        assert env["BRAIN_DATABASE_URL"].startswith("postgresql+psycopg://brain:${POSTGRES_PASSWORD")
        assert env["BRAIN_DATABASE_URL"].endswith("@postgres:5432/brain")
        assert env["BRAIN_BROKER_URL"] == "redis://redis:6379/0"
        assert env["BRAIN_RESULT_BACKEND"] == "redis://redis:6379/1"


def test_redis_keeps_an_append_only_file_and_never_evicts(services: dict[str, dict]) -> None:
    command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])


def test_celery_commands_name_the_app_and_the_queues(services: dict[str, dict]) -> None:
    args = {name: celery_args(compose_script(services[name]["command"])) for name in CELERY_SERVICES}
    assert {name: subcommand(a) for name, a in args.items()} == {
        "worker-collect": "worker", "worker-train": "worker", "beat": "beat", "flower": "flower"}
    collect, train = args["worker-collect"], args["worker-train"]
    assert option(collect, "-Q", "--queues") == "collect,analysis" and option(collect, "-c", "--concurrency") == "2"
    assert option(train, "-Q", "--queues") == "train"
    assert option(train, "--prefetch-multiplier") == "1"
    # One process per core unless the operator says otherwise.
    assert "nproc" in option(train, "-c", "--concurrency")
    assert importlib.util.find_spec("brain_tasks.app") is not None


def test_commands_leave_shell_variables_to_the_container(services: dict[str, dict]) -> None:
    # A single $ would be interpolated by compose from the operator's shell (or rejected, as in
    # $(nproc)); the container's shell must see $$ instead.
    for name, service in services.items():
        command = service.get("command") or []
        text = command if isinstance(command, str) else " ".join(command)
        assert "$" not in text.replace("$$", ""), name


def test_workers_wait_for_the_migration(services: dict[str, dict]) -> None:
    assert services["migrate"]["command"] == ["brain-tasks", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in WORKERS:
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_flower_requires_basic_auth(services: dict[str, dict]) -> None:
    flower = services["flower"]
    args = celery_args(compose_script(flower["command"]))
    from_cli = option(args, "--basic-auth")
    from_env = flower["environment"].get("FLOWER_BASIC_AUTH")
    assert (from_cli or from_env) and REQUIRED_REF.match(from_cli or from_env)
    assert any(str(p).endswith(":5555") for p in flower["ports"])


def test_procfile_is_valid_and_matches_compose(services: dict[str, dict], procfile: dict[str, str]) -> None:
    check = subprocess.run([str(BIN / "honcho"), "check", "-f", str(PROCFILE)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stderr
    assert set(procfile) == {"worker", "beat", "flower", "dashboard"}
    local = {name: celery_args(cmd) for name, cmd in procfile.items() if name in CELERY_PROCS}
    assert {subcommand(a) for a in local.values()} == {
        subcommand(celery_args(compose_script(services[s]["command"]))) for s in CELERY_SERVICES}
    assert {name: subcommand(a) for name, a in local.items()} == {"worker": "worker", "beat": "beat",
                                                                  "flower": "flower"}
    # The one local worker serves every queue the compose workers split between them.
    compose_queues = {q for s in WORKERS
                      for q in option(celery_args(compose_script(services[s]["command"])), "-Q").split(",")}
    assert set(option(local["worker"], "-Q").split(",")) == compose_queues
    assert option(local["worker"], "--prefetch-multiplier") == "1"
    assert "FLOWER_BASIC_AUTH" in procfile["flower"]


def test_dashboard_service_serves_on_loopback_with_credentials(services: dict[str, dict],
                                                               procfile: dict[str, str]) -> None:
    dashboard = services["dashboard"]
    args = dashboard["command"]
    assert args[:2] == ["brain-tasks", "dashboard"] and option(args, "--host") == "0.0.0.0"
    port = option(args, "--port")
    assert any(str(p) == f"127.0.0.1:{port}:{port}" for p in dashboard["ports"])
    assert REQUIRED_REF.match(dashboard["environment"]["BRAIN_DASHBOARD_AUTH"])
    assert dashboard["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    local = shlex.split(procfile["dashboard"])
    assert local[local.index("brain-tasks") + 1] == "dashboard" and option(local, "--host") == "0.0.0.0"
    from click.testing import CliRunner

    from brain_tasks.cli import main
    for argv in (args[1:], local[local.index("brain-tasks") + 1:]):
        result = CliRunner().invoke(main, [a.replace("${PORT:-8050}", "8050") for a in argv] + ["--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, result.output


def _shell_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRAIN_", "FLOWER_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", BRAIN_HOME=str(tmp_path), **extra)
    return env


def test_procfile_flower_refuses_to_start_without_credentials(procfile: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run(["sh", "-c", procfile["flower"]], capture_output=True, text=True, cwd=ROOT,
                          env=_shell_env(tmp_path), timeout=20)
    assert proc.returncode != 0 and "FLOWER_BASIC_AUTH" in proc.stderr


def test_procfile_dashboard_refuses_to_start_without_credentials(procfile: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run(["sh", "-c", procfile["dashboard"]], capture_output=True, text=True, cwd=tmp_path,
                          env=_shell_env(tmp_path), timeout=60)
    assert proc.returncode == 2 and "BRAIN_DASHBOARD_AUTH" in proc.stderr, proc.stderr


# Runs each argv through celery's own CLI in one process: an unknown or misspelt option raises
# NoSuchOption before `--help` prints.
CELERY_CLI_CHECK = """
import json, sys
from celery.bin.celery import celery
for argv in json.loads(sys.argv[1]):
    if celery.main([*argv, "--help"], prog_name="celery", standalone_mode=False):
        sys.exit(f"celery rejected {argv}")
"""


def shell_expanded_celery_args(scripts: list[str], env: dict[str, str]) -> list[list[str]]:
    """Each line's celery arguments as the shell expands them (a shell function stands in for celery)."""
    shim = 'celery() { printf "%s\\037" "$@"; printf "\\036"; }\n'
    body = "\n".join(s.replace("exec celery", "celery") for s in scripts)
    out = subprocess.run(["sh", "-c", shim + body], env=env, capture_output=True, text=True, check=True,
                         timeout=20).stdout
    return [record.split("\x1f")[:-1] for record in out.split("\x1e")[:-1]]


def test_celery_accepts_every_command_line(services: dict[str, dict], procfile: dict[str, str],
                                           tmp_path: Path) -> None:
    scripts = list(dict.fromkeys([compose_script(services[s]["command"]) for s in CELERY_SERVICES]
                                 + [cmd for name, cmd in procfile.items() if name in CELERY_PROCS]))
    env = _shell_env(tmp_path, FLOWER_BASIC_AUTH="user:example")
    argvs = shell_expanded_celery_args(scripts, env)
    assert len(argvs) == len(scripts)
    # The shell filled in the core count: `-c` is a number on both worker lines that compute it.
    for argv in argvs:
        if "-c" in argv:
            assert option(argv, "-c").isdigit(), argv
    proc = subprocess.run([sys.executable, "-c", CELERY_CLI_CHECK, json.dumps(argvs)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("Usage: celery ") == len(argvs)


def test_dockerfile_installs_the_package_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r"pip install \.", text)
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    assert not re.search(r"^(ENV|ARG)\b.*(PASSWORD|SECRET|TOKEN)", text, re.MULTILINE | re.IGNORECASE)


PGBOUNCER_COMPOSE = ROOT / "docker-compose.pgbouncer.yml"


def _compose_merge(base: dict, override: dict) -> dict:
    """Compose's merge of a second -f file: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (_compose_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict)
                       else value)
    return merged


def test_pgbouncer_override_routes_every_runtime_service_through_it(services: dict[str, dict]) -> None:
    override = yaml.safe_load(PGBOUNCER_COMPOSE.read_text())["services"]
    merged = _compose_merge(services, override)
    bouncer = merged["pgbouncer"]["environment"]
    assert bouncer["POOL_MODE"] == "transaction" and bouncer["DB_HOST"] == "postgres"
    assert REQUIRED_REF.match(bouncer["DB_PASSWORD"])
    for name in (*CELERY_SERVICES, "dashboard"):
        env = merged[name]["environment"]
        assert env["BRAIN_DATABASE_URL"].endswith("@pgbouncer:5432/brain"), name
        assert env["BRAIN_DATABASE_URL"].startswith("postgresql+psycopg://brain:${POSTGRES_PASSWORD")
        assert env["BRAIN_DB_POOL_SIZE"] == "0", name
        assert set(BRAIN_ENV) <= set(env), f"{name} keeps the rest of the production environment"
        assert "pgbouncer" in merged[name]["depends_on"], name
    # Migrations take DDL locks and run once: straight to PostgreSQL.
    assert merged["migrate"]["environment"]["BRAIN_DATABASE_URL"].endswith("@postgres:5432/brain")
    for password in URL_CREDENTIALS.findall(PGBOUNCER_COMPOSE.read_text()):
        assert password.startswith("${"), "a literal password in a URL"
