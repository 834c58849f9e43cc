"""Runs by attempt (brain/runs.py), the client's wait, reconcile_runs' decisions and the 0001 -> 0003
migration, on SQLite and PostgreSQL, without a broker."""

from __future__ import annotations

import datetime as dt
import threading
import time
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from brain_tasks.service.chain import ChainState
from brain_tasks.service.steps import outcome
from brain_tasks.vocabulary import Status
from brain_tasks.brain import runs, store
from brain_tasks.brain.db import make_engine
from brain_tasks.brain.locks import try_claim
from brain_tasks.brain.migrate import upgrade
from brain_tasks.client import BrainClient, RunHandle
from brain_tasks.service.reconcile import _attempt_of_message, reconcile
from brain_tasks.settings import from_environ

DAY = dt.date(2018, 1, 30)
UTC = dt.timezone.utc


@pytest.fixture
def brain(brain_db_url):  # noqa: ANN001
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url, "BRAIN_STALL_TIMEOUT": "60",
                             "BRAIN_MAX_REDRIVES": "1"})
    engine = make_engine(brain_db_url)
    # The client refuses a symbol the Brain has never stored: give A/B one bar.
    store.upsert(engine, "candles", [dict(exchange="freqtrade", symbol="A/B", timeframe="5m",
                                          ts="2018-01-30T00:00:00Z", open=1, high=1, low=1, close=1, volume=1)])
    return engine, settings


def _finish(engine, attempt: str, symbol: str, status: str = "succeeded", **fields) -> None:  # noqa: ANN001
    """The symbol's chain ended as `status` (with these ChainState fields), recorded as its last step does."""
    outcome.record_outcome(engine, attempt, ChainState.start(symbol, DAY).update(status=Status(status), **fields))


def test_attempts_of_one_run_keep_their_own_states(brain):
    engine, s = brain
    outcome.start_attempt(engine, s, "retrain", "r", "a1", DAY, ["A/B", "C/D"], ["baseline"])
    assert runs.run_status(engine, "r")["counts"] == {"pending": 2}
    assert runs.step_started(engine, "a1", "A/B", "train_symbol", dt.datetime.now(UTC))
    _finish(engine, "a1", "A/B")
    _finish(engine, "a1", "C/D", "failed", error="no candles")
    assert runs.close_attempt(engine, "a1")["state"] == "partial"
    # A late duplicate of a step does not reopen a finished symbol.
    assert not runs.step_started(engine, "a1", "A/B", "select_model", dt.datetime.now(UTC))

    outcome.start_attempt(engine, s, "retrain", "r", "a2", DAY, ["A/B", "C/D"], ["baseline"])
    latest = runs.run_status(engine, "r")
    assert latest["attempt_id"] == "a2" and latest["state"] == "pending" and latest["counts"] == {"pending": 2}
    first = runs.run_status(engine, "r", "a1")
    assert first["state"] == "partial" and first["symbols"]["C/D"]["error"] == "no candles"
    assert first["symbols"]["A/B"]["step"] == "train_symbol"
    assert runs.close_attempt(engine, "a2") is None  # unfinished symbols: no summary yet
    listed = runs.list_runs(engine)
    assert [r["run_id"] for r in listed] == ["r"]
    assert [a["attempt_id"] for a in listed[0]["attempts"]] == ["a2", "a1"]
    assert listed[0]["attempts"][1]["counts"] == {"succeeded": 1, "failed": 1}
    # Starting an attempt again (a redelivered enqueue) keeps the states it reached.
    outcome.start_attempt(engine, s, "retrain", "r", "a1", DAY, ["A/B", "C/D"], ["baseline"])
    assert runs.run_status(engine, "r", "a1")["state"] == "partial"


def test_the_summary_comes_from_the_rows_whoever_writes_it(brain):
    engine, s = brain
    outcome.start_attempt(engine, s, "nightly", "n", "a", DAY, ["A/B", "C/D"], [])
    _finish(engine, "a", "A/B", drifted=["rsi_14"])
    _finish(engine, "a", "C/D", "skipped", reason="no champion")
    # The chord died: no results at all, the rows alone close the attempt.
    summary = outcome.summarize_attempt(engine, None, "n", "a")
    assert summary["state"] == "succeeded" and summary["drifted"] == {"A/B": ["rsi_14"]}
    assert summary["skipped"] == {"C/D": "no champion"}  # nightly names what it skipped and why
    assert runs.run_status(engine, "n")["details"]["drifted"] == {"A/B": ["rsi_14"]}


def test_a_cancelled_attempt_leaves_no_pending_row(brain):
    engine, s = brain
    outcome.start_attempt(engine, s, "retrain", "r", "a", DAY, ["A/B", "C/D"], ["baseline"])
    _finish(engine, "a", "A/B")
    summary = runs.cancel_attempt(engine, "a", "the embedded worker died")
    assert summary["state"] == "cancelled" and summary["failed"] == {"C/D": "the embedded worker died"}
    status = runs.run_status(engine, "r")
    assert status["counts"] == {"succeeded": 1, "cancelled": 1} and status["state"] == "cancelled"


class _GatedApp:
    """Stands in for the Celery app: holds every enqueued attempt until the test lets it run."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send_task(self, name: str, task_id: str, kwargs: dict, **_options: object) -> SimpleNamespace:
        self.sent.append(kwargs)
        return SimpleNamespace(id=task_id)


def test_a_reruns_wait_returns_only_when_the_new_attempt_is_finished(brain):
    """The first attempt succeeded long ago; the re-run is deliberately slow (held until released):
    its wait must keep waiting instead of returning the earlier attempt's state."""
    engine, s = brain
    client = BrainClient(s, app=_GatedApp())
    first = client.retrain(["A/B"], models=["baseline"], as_of=DAY)
    _finish(engine, first.attempt_id, "A/B")
    runs.close_attempt(engine, first.attempt_id)
    assert client.wait(first.run_id, timeout=5, poll=0.01)["state"] == "succeeded"

    second = client.retrain(["A/B"], models=["baseline"], as_of=DAY)
    assert isinstance(second, RunHandle) and second.run_id == first.run_id
    assert second.attempt_id != first.attempt_id and client.app.sent[-1]["attempt_id"] == second.attempt_id
    assert client.run_status(second.run_id)["state"] == "pending"  # visible as soon as enqueued
    polls: list[dict] = []
    got: list[dict] = []
    waiter = threading.Thread(target=lambda: got.append(client.wait(second, timeout=120, poll=0.01,
                                                                    on_poll=polls.append)))
    waiter.start()
    while len(polls) < 20:  # the waiter has read the pending attempt many times over
        time.sleep(0.01)
    assert waiter.is_alive() and not got
    runs.step_started(engine, second.attempt_id, "A/B", "select_model", dt.datetime.now(UTC))
    _finish(engine, second.attempt_id, "A/B", "failed", error="slow and then broken")
    runs.close_attempt(engine, second.attempt_id)
    waiter.join(timeout=60)
    assert got and got[0]["attempt_id"] == second.attempt_id and got[0]["state"] == "failed"
    assert {p["attempt_id"] for p in polls} == {second.attempt_id}
    assert client.run_status(first.run_id, first.attempt_id)["state"] == "succeeded"


def test_reconcile_redrives_a_lost_symbol_then_gives_up_and_closes(brain):
    engine, s = brain
    outcome.start_attempt(engine, s, "retrain", "r", "a", DAY, ["A/B", "C/D"], ["baseline"])
    _finish(engine, "a", "A/B")
    runs.step_started(engine, "a", "C/D", "train_symbol", dt.datetime.now(UTC) + dt.timedelta(seconds=600))
    sent: list = []
    now = dt.datetime.now(UTC)
    # Before the deadline, or with a live task of the attempt, nothing happens.
    assert reconcile(engine, s, [], sent.append, now=now) == {"closed": {}, "redriven": [], "failed": []}
    later = now + dt.timedelta(seconds=3600)
    assert reconcile(engine, s, ["a"], sent.append, now=later)["redriven"] == []
    # Past the deadline with nothing alive: the symbol's whole canvas is sent again.
    assert reconcile(engine, s, [], sent.append, now=later)["redriven"] == [["a", "C/D"]]
    assert [t.task for t in sent[0].tasks][::5] == ["brain_tasks.collect_candles", "brain_tasks.select_model"]
    assert sent[0].tasks[-1].kwargs["attempt_id"] == "a"
    row = runs.run_status(engine, "r")["symbols"]["C/D"]
    assert row["state"] == "pending" and row["redrives"] == 1 and "stalled at step train_symbol" in row["error"]
    # The re-drive was lost as well: max_redrives (1) reached, the symbol fails and the attempt closes.
    done = reconcile(engine, s, [], sent.append, now=later + dt.timedelta(seconds=3600))
    assert done["failed"] == [["a", "C/D"]] and done["closed"] == {"a": "partial"} and len(sent) == 1
    status = runs.run_status(engine, "r")
    assert status["state"] == "partial" and "gave up after 1 re-drives" in status["symbols"]["C/D"]["error"]
    assert reconcile(engine, s, [], sent.append, now=later + dt.timedelta(days=1))["closed"] == {}


def test_reconcile_closes_an_attempt_whose_chord_died(brain):
    engine, s = brain
    outcome.start_attempt(engine, s, "retrain", "r", "a", DAY, ["A/B"], ["baseline"])
    _finish(engine, "a", "A/B")
    assert reconcile(engine, s, ["a"], lambda sig: None)["closed"] == {"a": "succeeded"}
    assert runs.run_status(engine, "r")["state"] == "succeeded"


def test_the_attempt_is_read_from_a_celery_message():
    import base64
    import json

    body = base64.b64encode(json.dumps([["A/B"], {"attempt_id": "x-1"}, {}]).encode()).decode()
    assert _attempt_of_message({"body": body, "properties": {"body_encoding": "base64"}}) == "x-1"
    assert _attempt_of_message({"body": "not json", "properties": {}}) is None


def test_try_claim_is_single_instance(brain):
    engine, _ = brain
    with try_claim(engine, "reconcile_runs") as first:
        holder = []
        t = threading.Thread(target=lambda: holder.append(try_claim(engine, "reconcile_runs").__enter__()))
        t.start()
        t.join()
        assert first and holder == [False]
    with try_claim(engine, "reconcile_runs") as again:
        assert again


def test_migration_0003_turns_each_run_into_one_attempt(db_url):
    upgrade(db_url, "0001")
    engine = make_engine(db_url)
    stamp = dt.datetime(2024, 1, 2, 3, 4, tzinfo=UTC)
    insert = sa.text("INSERT INTO training_runs (run_id, symbol, as_of, state, models, error, details, started_at, "
                     "finished_at) VALUES (:r, :s, :d, :st, :m, NULL, :det, :t, :t)")
    t = stamp if engine.dialect.name == "postgresql" else stamp.replace(tzinfo=None)
    with engine.begin() as conn:
        for symbol, state in (("*", "partial"), ("A/B", "succeeded"), ("C/D", "failed"), ("E/F", "pending")):
            conn.execute(insert, {"r": "retrain-2024-01-01-abc", "s": symbol, "d": dt.date(2024, 1, 1), "st": state,
                                  "m": '["baseline"]', "det": "{}", "t": t})
    upgrade(db_url)
    status = runs.run_status(engine, "retrain-2024-01-01-abc")
    assert status["attempt_id"] == "retrain-2024-01-01-abc" and status["kind"] == "retrain"
    assert status["state"] == "partial" and status["counts"] == {"succeeded": 1, "failed": 1, "cancelled": 1}
    assert "migration 0003" in status["symbols"]["E/F"]["error"]
    assert status["started_at"] == stamp.isoformat()


def test_runs_and_status_commands(sqlite_url, monkeypatch):
    from click.testing import CliRunner

    from brain_tasks.cli import main
    from brain_tasks.settings import get_settings

    upgrade(sqlite_url)
    monkeypatch.setenv("BRAIN_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    try:
        engine, s = make_engine(sqlite_url), get_settings()
        outcome.start_attempt(engine, s, "retrain", "retrain-x", "a1", DAY, ["A/B", "C/D"], ["baseline"])
        _finish(engine, "a1", "A/B")
        _finish(engine, "a1", "C/D", "failed", error="no candles")
        runs.close_attempt(engine, "a1")
        outcome.start_attempt(engine, s, "retrain", "retrain-x", "a2", DAY, ["A/B", "C/D"], ["baseline"])
        cli = CliRunner()
        listed = cli.invoke(main, ["runs"])
        assert listed.exit_code == 0 and listed.output.index("a2") < listed.output.index("a1")
        assert "1 failed, 1 succeeded" in listed.output and "2 pending" in listed.output
        latest = cli.invoke(main, ["status", "retrain-x"])
        assert latest.exit_code == 0 and "attempt a2: pending" in latest.output
        first = cli.invoke(main, ["status", "retrain-x", "--attempt", "a1"])
        assert "attempt a1: partial" in first.output and "no candles" in first.output
        missing = cli.invoke(main, ["status", "nope"])
        assert missing.exit_code != 0 and missing.output.strip().splitlines() == ["Error: no run nope"]
        for command in ("runs", "status"):
            helps = cli.invoke(main, [command, "--help"]).output
            options = [line for line in helps.splitlines() if line.strip().startswith("--")]
            assert options and all(len(line.split("  ")) > 1 for line in options if "--help" not in line)
    finally:
        get_settings.cache_clear()
