"""A symbol whose data is too old ends `stale` everywhere a user reads it (issue 25, item 6).

Found as: a retrain as of a day well after the sample's last bar; `brain-tasks runs` counted the symbol
`failed` (the README says `stale`) and `brain-tasks status` named its step `train_sizer`, the last step
that happened to start, not the training that found the data stale."""

from __future__ import annotations

import datetime as dt

from click.testing import CliRunner

from brain_tasks.brain import runs
from brain_tasks.brain.db import make_engine
from brain_tasks.brain.migrate import upgrade
from brain_tasks.cli import main
from brain_tasks.service.chain import ChainState
from brain_tasks.service.steps import choose, compare, explain, outcome, promote, sizer, train
from brain_tasks.settings import from_environ, get_settings
from brain_tasks.vocabulary import RUN_STATES, TERMINAL, Status, outcome_state
from tests.test_jobs import _load

LATE = dt.date(2018, 3, 1)  # the sample's ETH/BTC ends on 2018-01-30
UTC = dt.timezone.utc


def _canvas(engine, settings, attempt_id: str, symbol: str, day: dt.date) -> ChainState:  # noqa: ANN001
    """The symbol's canvas in process, each step marked started as the task policy marks it."""
    steps = [("compare_models", compare.compare_models), ("compute_importance", explain.compute_importance),
             ("check_rollback", promote.check_rollback), ("select_model", choose.select_model),
             ("train_sizer", sizer.train_sizer)]
    deadline = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    runs.step_started(engine, attempt_id, symbol, train.TRAIN_STEP, deadline)
    state = ChainState.start(symbol, day).with_model(train.train_symbol(engine, settings, symbol, "baseline", day))
    for name, step in steps:
        runs.step_started(engine, attempt_id, symbol, name, deadline)
        state = step(engine, settings, state)
    outcome.record_outcome(engine, attempt_id, state)
    return state


def test_a_stale_symbol_is_stale_in_runs_status_and_the_cli(sqlite_url, monkeypatch):
    upgrade(sqlite_url)
    monkeypatch.setenv("BRAIN_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    try:
        engine, settings = make_engine(sqlite_url), from_environ({"BRAIN_DATABASE_URL": sqlite_url})
        _load(engine, "ETH/BTC")
        outcome.start_attempt(engine, settings, "retrain", "retrain-late", "a1", LATE, ["ETH/BTC"], ["baseline"])
        state = _canvas(engine, settings, "a1", "ETH/BTC", LATE)
        assert state.status == Status.STALE and state.step == train.TRAIN_STEP
        summary = runs.close_attempt(engine, "a1")
        assert summary["state"] == Status.STALE and summary["failed"] == {}
        assert "older than the end of 2018-03-01" in summary["stale"]["ETH/BTC"]
        row = runs.run_status(engine, "retrain-late")["symbols"]["ETH/BTC"]
        assert (row["state"], row["step"]) == (Status.STALE, train.TRAIN_STEP) and "BRAIN_MAX_DATA_AGE" in row["error"]

        cli = CliRunner()
        listed = cli.invoke(main, ["runs"])
        assert listed.exit_code == 0 and "stale" in listed.output and "1 stale" in listed.output
        assert "failed" not in listed.output
        shown = cli.invoke(main, ["status", "retrain-late"])
        assert shown.exit_code == 0, shown.output
        line = next(x for x in shown.output.splitlines() if "ETH/BTC" in x)
        assert " stale " in line and "step train_symbol" in line and "train_sizer" not in shown.output
    finally:
        get_settings.cache_clear()


def test_an_attempt_reads_stale_only_when_stale_data_is_all_that_went_wrong(brain_db_url):
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url})
    engine = make_engine(brain_db_url)
    day = dt.date(2018, 1, 30)

    def attempt(attempt_id: str, ends: dict[str, Status]) -> dict:
        outcome.start_attempt(engine, settings, "retrain", f"run-{attempt_id}", attempt_id, day, list(ends), ["x"])
        for symbol, status in ends.items():
            outcome.record_outcome(engine, attempt_id, ChainState.start(symbol, day).failed(
                train.TRAIN_STEP, f"{status} here", status) if status != Status.OK
                else ChainState.start(symbol, day))
        return runs.close_attempt(engine, attempt_id)

    assert attempt("s", {"A/B": Status.STALE, "C/D": Status.STALE})["state"] == Status.STALE
    mixed = attempt("p", {"A/B": Status.STALE, "C/D": Status.OK})
    assert mixed["state"] == Status.PARTIAL and mixed["succeeded"] == ["C/D"] and list(mixed["stale"]) == ["A/B"]
    assert attempt("f", {"A/B": Status.STALE, "C/D": Status.FAILED})["state"] == Status.FAILED
    assert runs.run_status(engine, "run-p")["error"] == "of 2 symbols: 1 stale"
    assert Status.STALE in TERMINAL and Status.STALE in RUN_STATES
    assert outcome_state(Status.STALE) == Status.STALE and outcome_state("anything else") == Status.FAILED
