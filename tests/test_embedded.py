"""Embedded mode never hangs: atomic message files, a dead worker noticed by the waiting command, and
nothing left behind (no pending rows, no queued messages)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from brain_tasks.brain import runs, store
from brain_tasks.brain.db import make_engine
from brain_tasks.embedded import AtomicTransport, purge_attempts
from brain_tasks.settings import from_environ
from tests.workers import REPO, brain_env, wait_for


def test_a_message_file_appears_complete_or_not_at_all(tmp_path):
    from kombu import Connection

    folder = str(tmp_path)
    with Connection(transport=AtomicTransport, transport_options={
            "data_folder_in": folder, "data_folder_out": folder}) as conn:
        channel = conn.default_channel
        channel._put("collect", {"body": "x" * 100_000, "properties": {}})
        files = os.listdir(folder)
        assert len(files) == 1 and files[0].endswith(".collect.msg")  # no partial file left behind
        assert json.loads((tmp_path / files[0]).read_text())["body"] == "x" * 100_000
        # A file still being written (its temporary name) is never taken for a message.
        (tmp_path / ".1_x.collect.msg.partial").write_text('{"bo')
        assert channel._get("collect")["body"] == "x" * 100_000


def test_purge_removes_only_the_given_attempts_messages(tmp_path):
    import base64

    settings = from_environ({"BRAIN_HOME": str(tmp_path)})
    settings.broker_folder.mkdir(parents=True)
    for name, attempt in (("1_a.collect.msg", "att-1"), ("2_b.collect.msg", "att-2")):
        body = base64.b64encode(json.dumps([[], {"attempt_id": attempt}, {}]).encode()).decode()
        (settings.broker_folder / name).write_text(json.dumps({"body": body,
                                                               "properties": {"body_encoding": "base64"}}))
    assert purge_attempts(settings, ["att-1"]) == 1
    assert [p.name for p in settings.broker_folder.iterdir()] == ["2_b.collect.msg"]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_killing_the_embedded_worker_mid_run_fails_the_command_cleanly(tmp_path):
    url = f"sqlite:///{tmp_path / 'brain.db'}"
    env = brain_env(url, None, tmp_path / ".brain", BRAIN_CONCURRENCY="1")
    subprocess.run([sys.executable, "-m", "brain_tasks.cli", "db", "upgrade"], env=env, cwd=tmp_path, check=True,
                   capture_output=True)
    cli = subprocess.Popen([sys.executable, "-m", "brain_tasks.cli", "retrain", "--symbols", "ETH/BTC,LTC/BTC",
                            "--models", "baseline", "--as-of", "2018-01-30"], env={**env, "PYTHONPATH": str(REPO)},
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    engine = make_engine(url)

    def started() -> bool:
        try:
            return any(runs.run_status(engine, r["run_id"])["counts"].get("running") for r in runs.list_runs(engine))
        except Exception:  # noqa: BLE001 - the schema may be mid-creation
            return False

    wait_for(started, 300, interval=0.05, what="a symbol of the run to start")
    workers = [p for p in _descendants(cli.pid) if "celery" in _cmdline(p)]
    assert workers, "no embedded worker process found"
    for pid in workers:  # the worker and its pool children, as a crash or the OOM killer would
        os.kill(pid, signal.SIGKILL)
    out, err = cli.communicate(timeout=120)
    assert cli.returncode != 0
    assert "the embedded worker died" in err.strip().splitlines()[-1], err
    table = store.read_table(engine, "training_runs")
    assert not set(table["state"]) & {"pending", "running"}, table[["symbol", "state", "error"]]
    assert "cancelled" in set(table["state"])
    assert not list((tmp_path / ".brain" / "broker").glob("*.msg"))  # nothing for the next command to replay
