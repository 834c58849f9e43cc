"""Embedded mode never hangs: atomic message files, a dead worker noticed by the waiting command, and
nothing left behind (no pending rows, no queued messages)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from brain_tasks.brain import runs, store
from brain_tasks.brain.db import make_engine
from brain_tasks.service.embedded import AtomicTransport, purge_attempts
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


def test_a_message_another_producer_is_still_writing_waits_for_the_next_poll(tmp_path):
    """Kombu's plain `filesystem://` (an Engine's minimal app) writes its file in place: a consumer
    that read it mid-write died of the JSONDecodeError.  It is now left until it parses."""
    from queue import Empty

    import pytest
    from kombu import Connection

    folder = str(tmp_path)
    with Connection(transport=AtomicTransport, transport_options={
            "data_folder_in": folder, "data_folder_out": folder}) as conn:
        channel = conn.default_channel
        whole = json.dumps({"body": "ping", "properties": {}})
        path = tmp_path / "1_a.collect.msg"
        path.write_text(whole[:7])  # half written
        with pytest.raises(Empty):
            channel._get("collect")
        assert path.exists()
        path.write_text(whole)  # the producer finished
        assert channel._get("collect")["body"] == "ping"
        assert not path.exists()
        # A file that never becomes a message is set aside once it is old, not retried forever.
        stuck = tmp_path / "2_b.collect.msg"
        stuck.write_text("{")
        os.utime(stuck, (0, 0))  # written in 1970: far beyond PARTIAL_GRACE
        with pytest.raises(Empty):
            channel._get("collect")
        assert not stuck.exists() and (tmp_path / ".2_b.collect.msg.unreadable").exists()


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
    _out, err = cli.communicate(timeout=120)
    assert cli.returncode != 0
    assert "the embedded worker died" in err.strip().splitlines()[-1], err
    table = store.read_table(engine, "training_runs")
    assert not set(table["state"]) & {"pending", "running"}, table[["symbol", "state", "error"]]
    assert "cancelled" in set(table["state"])
    assert not list((tmp_path / ".brain" / "broker").glob("*.msg"))  # nothing for the next command to replay


def test_result_files_count_a_chord_exactly_across_processes(tmp_path):
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.starmap(_increment, [(str(tmp_path), 25)] * 4)
    backend = _backend(tmp_path)
    assert backend.get(b"chord-unlock-g1") == b"100"
    backend.set(b"k", b"v")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".incr")) == ["chord-unlock-g1", "k"]
    backend.delete(b"k")
    backend.delete(b"k")  # a key deleted twice (a chord's cleanup) is not an error


def _backend(folder: Path) -> Any:
    from celery import Celery

    from brain_tasks.service.embedded import ResultBackend

    return ResultBackend(app=Celery(set_as_current=False), url=f"file://{folder}")


def _increment(folder: str, n: int) -> None:
    backend = _backend(folder)
    for _ in range(n):
        backend.incr(b"chord-unlock-g1")


def test_a_stop_request_ends_a_drain_of_the_filesystem_transport(tmp_path):
    from celery.worker import state
    from kombu import Connection

    with Connection(transport=AtomicTransport, transport_options={
            "data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "polling_interval": 0.01}) as conn:
        conn.default_channel  # noqa: B018 - opens the channel
        try:
            conn.drain_events(timeout=0.2)
        except TimeoutError:
            pass
        else:
            raise AssertionError("nothing to drain, yet no timeout")
        state.should_stop = 0  # what a warm shutdown sets (EX_OK): no timeout given, yet it returns
        try:
            conn.drain_events()
        except TimeoutError:
            pass
        finally:
            state.should_stop = None


def test_a_worker_that_never_answers_or_died_is_reported():
    import pytest

    from brain_tasks.service.embedded import EmbeddedWorker, WorkerDied

    class Proc:
        returncode = None

        def poll(self):
            return self.returncode

    class Probe:
        def ready(self) -> bool:
            return False

    proc = Proc()
    waiting = EmbeddedWorker(proc, Path("worker.log"), Probe(), ready_timeout=3600)
    waiting.check()  # still starting: fine
    with pytest.raises(TimeoutError, match="did not answer"):
        EmbeddedWorker(proc, Path("worker.log"), Probe(), ready_timeout=0).check()
    proc.returncode = 1
    with pytest.raises(WorkerDied, match="exited with code 1"):
        waiting.check()


CHORD = """
import json
from celery import chord
from brain_tasks.app import app
from brain_tasks.service.embedded import embedded_worker, _pool_processes
from brain_tasks.settings import get_settings
with embedded_worker(get_settings()) as worker:
    header = [app.signature("brain_tasks.ping", args=[i]) for i in range(3)]
    result = chord(header, app.signature("celery.accumulate")).apply_async()
    out = result.get(timeout=300)
print(json.dumps({"out": out, "pool_left": _pool_processes(worker.proc.pid), "exited": worker.proc.poll() is not None}))
"""


def test_a_chord_on_the_embedded_worker_is_joined_by_counting_and_the_worker_stops(tmp_path):
    from tests.workers import run_python

    env = brain_env(f"sqlite:///{tmp_path / 'brain.db'}", None, tmp_path / ".brain")
    got = json.loads(run_python(CHORD, env).strip().splitlines()[-1])
    assert [r["pong"] for r in got["out"][0]] == [0, 1, 2]
    assert got["exited"] and got["pool_left"] == []
    log = (tmp_path / ".brain" / "worker.log").read_text()
    assert "celery.accumulate" in log and "chord_unlock" not in log  # no polling task joined it
