"""Bad requests are refused before any work: typed errors for Engine code, one line and exit status 2
in the CLI, nothing written, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from brain_tasks import client
from brain_tasks.brain import store
from brain_tasks.brain.db import make_engine
from brain_tasks.intake import (MODEL_TYPES, BadArgumentError, BadDateError, BadSymbolError, RequestError, UnknownModelError,
                                  check_as_of, check_models, check_symbols)
from brain_tasks.settings import from_environ
from tests.workers import REPO, brain_env
from tests import snapshots

SAMPLE = REPO / "sample" / "freqtrade-testdata"


def _cli(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "brain_tasks.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _refused(proc: subprocess.CompletedProcess, needle: str, status: int = 2) -> None:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and needle in proc.stderr, proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("brain-tasks:")]) == 1


def test_the_light_model_type_list_matches_the_trainers():
    from brain_tasks.ml.models import MODEL_TYPES as TRAINERS

    assert tuple(TRAINERS) == MODEL_TYPES


@pytest.mark.parametrize("call, error", [
    (lambda: check_models(["catboost"]), UnknownModelError),
    (lambda: check_models("lightgbm"), BadArgumentError),
    (lambda: check_symbols("ETH/BTC"), BadArgumentError),        # a string is not a list of 7 symbols
    (lambda: check_symbols(["ETH/BTC\x00"]), BadSymbolError),
    (lambda: check_symbols(["eth-btc"]), BadSymbolError),
    (lambda: check_symbols([]), BadSymbolError),
    (lambda: check_as_of("2018-13-45"), BadDateError),
    (lambda: check_as_of("yesterday"), BadDateError),
])
def test_each_bad_value_has_its_error_type(call, error):  # noqa: ANN001
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, RequestError) and isinstance(info.value, client.BrainError)


def test_the_client_refuses_before_enqueueing(brain_db_url):
    from celery import Celery

    sent: list[str] = []

    class Recorder(Celery):
        def send_task(self, name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
            sent.append(name)
            raise AssertionError("nothing may be enqueued")

    brain = client.BrainClient(from_environ({"BRAIN_DATABASE_URL": brain_db_url}), app=Recorder("t"))
    for bad in (dict(symbols=["ETH/BTC"], models=["catboost"]), dict(symbols="ETH/BTC"),
                dict(symbols=["FOO/BAR"]), dict(symbols=["ETH/BTC"], as_of="2018-13-45")):
        with pytest.raises(client.RequestError):
            brain.retrain(**bad)
    assert sent == []


def test_a_dead_broker_is_named_quickly(brain_db_url, tmp_path):
    from celery import Celery

    from tests import servers

    port = servers.free_port()  # nothing listens there
    app = Celery("t", broker=f"redis://:secret@127.0.0.1:{port}/0")
    engine = make_engine(brain_db_url)
    store.upsert(engine, "candles", [dict(exchange="freqtrade", symbol="ETH/BTC", timeframe="5m",
                                          ts="2018-01-30T00:00:00Z", open=1, high=1, low=1, close=1, volume=1)])
    brain = client.BrainClient(from_environ({"BRAIN_DATABASE_URL": brain_db_url}), app=app)
    with pytest.raises(client.BrokerUnavailableError, match=r"redis://:\*\*\*@127.0.0.1") as info:
        brain.retrain(["ETH/BTC"], models=["baseline"], as_of="2018-01-30")
    assert "secret" not in str(info.value)


def test_cli_refusals_are_one_line_exit_2_and_write_nothing(tmp_path):
    db = tmp_path / "brain.db"
    env = brain_env(f"sqlite:///{db}", None, tmp_path / ".brain")
    # Before `db upgrade`: the schema is missing, and asking creates no database file.
    _refused(_cli(["models"], env, tmp_path), "brain-tasks db upgrade")
    _refused(_cli(["retrain", "--symbols", "ETH/BTC"], env, tmp_path), "brain-tasks db upgrade")
    assert not db.exists()
    assert _cli(["db", "upgrade"], env, tmp_path).returncode == 0
    before = snapshots.snapshot(make_engine(f"sqlite:///{db}"))
    _refused(_cli(["retrain", "--symbols", "ETH/BTC", "--models", "catboost"], env, tmp_path), "catboost")
    _refused(_cli(["retrain", "--symbols", "ETH/BTC", "--as-of", "2018-13-45"], env, tmp_path), "2018-13-45")
    _refused(_cli(["retrain", "--symbols", "ETH\x01/BTC"], env, tmp_path), "invalid symbol")
    _refused(_cli(["retrain", "--symbols", "FOO/BAR"], env, tmp_path), "unknown symbol FOO/BAR")
    _refused(_cli(["nightly", "--as-of", "30/01/2018"], env, tmp_path), "invalid as-of date")
    _refused(_cli(["models", "--symbol", "bad symbol"], env, tmp_path), "invalid symbol")
    snapshots.assert_same_database(before, snapshots.snapshot(make_engine(f"sqlite:///{db}")))
    assert not (tmp_path / ".brain" / "broker").exists()  # no embedded worker was started either


@pytest.mark.parametrize("url, needle", [
    ("postgres://u:pw@127.0.0.1/x", "postgresql+psycopg://"),
    ("postgresql+psycopg://u:pw@127.0.0.1:{port}/x", "cannot reach the database"),
])
def test_cli_names_an_unusable_database_without_its_password(tmp_path, url, needle):
    from tests import servers

    env = brain_env(url.format(port=servers.free_port()), None, tmp_path / ".brain")
    proc = _cli(["models"], env, tmp_path)
    _refused(proc, needle)
    assert "pw@" not in proc.stderr and "***" in proc.stderr


def test_ingest_exits_non_zero_when_nothing_or_a_bad_symbol_is_found(tmp_path):
    env = brain_env(f"sqlite:///{tmp_path / 'brain.db'}", None, tmp_path / ".brain")
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _cli(["ingest", "--path", str(empty)], env, tmp_path)
    assert proc.returncode == 1 and "nothing to ingest" in proc.stderr
    assert not (tmp_path / "brain.db").exists()
    proc = _cli(["ingest", "--path", str(SAMPLE), "--symbols", "ETH/BTC,FOO/BAR"], env, tmp_path)
    assert proc.returncode == 1 and "FOO/BAR" in proc.stdout and "failed" in proc.stdout
    ok = _cli(["ingest", "--path", str(SAMPLE), "--symbols", "ETH/BTC"], env, tmp_path)
    assert ok.returncode == 0 and "ETH/BTC" in ok.stdout and "rows stored" in ok.stdout
    as_json = _cli(["ingest", "--path", str(SAMPLE), "--symbols", "ETH/BTC", "--json"], env, tmp_path)
    assert as_json.returncode == 0 and '"symbols": [' in as_json.stdout


def test_version_and_help_on_every_option(tmp_path):
    env = brain_env(f"sqlite:///{tmp_path / 'brain.db'}", None, tmp_path / ".brain")
    assert _cli(["--version"], env, tmp_path).stdout.startswith("brain-tasks, version ")
    from brain_tasks.cli import main

    for name, command in main.commands.items():
        for sub in (command.commands.values() if hasattr(command, "commands") else [command]):
            for param in sub.params:
                if param.param_type_name == "option" and param.name != "help":
                    assert param.help, f"{name} {sub.name} --{param.name} has no help text"
