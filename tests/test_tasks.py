"""The tasks' failure policy, run eagerly in-process: bad data and bugs become failed statuses with a
recorded row; nothing raises into the fan-out."""

from __future__ import annotations

import pytest

from brain_tasks import timekeeping
from brain_tasks.service.chain import ChainState, ModelOutcome
from brain_tasks.service.steps import choose, outcome, train
from brain_tasks.brain import runs, store
from brain_tasks.brain.db import make_engine
from brain_tasks.errors import TransientError
from brain_tasks.settings import get_settings


@pytest.fixture
def brain(brain_db_url, monkeypatch):  # noqa: ANN001
    monkeypatch.setenv("BRAIN_DATABASE_URL", brain_db_url)
    get_settings.cache_clear()
    yield make_engine(brain_db_url)
    get_settings.cache_clear()


def test_bad_data_is_a_failed_status_and_a_quality_row(brain):
    from brain_tasks.tasks import train_symbol

    out = train_symbol.apply(args=["NOPE/BTC", "lightgbm", "2018-01-30"]).get()
    model = out["models"]["lightgbm"]
    assert model["status"] == "failed" and model["step"] == "train_symbol" and "no 5m candles" in model["error"]
    rows = store.read_table(brain, "data_quality_logs", where={"symbol": "NOPE/BTC"})
    assert list(rows["check"]) == ["train_symbol"] and rows.iloc[0]["severity"] == "error"


def test_a_failed_step_passes_its_status_down_the_chain_and_marks_the_run(brain):
    from brain_tasks.tasks import (check_rollback, compare_models, compute_importance, record_outcome, select_model,
                                   train_sizer)

    outcome.start_attempt(brain, get_settings(), "retrain", "run-1", "a-1", timekeeping.now().date(), ["NOPE/BTC"],
                          ["lightgbm"])
    ids = {"run_id": "run-1", "attempt_id": "a-1"}
    failed = ChainState.start("NOPE/BTC", timekeeping.now().date()).with_model(
        ModelOutcome(model_type="lightgbm", status="failed", error="no candles")).to_json()
    out = compare_models.apply(args=[[failed], "NOPE/BTC", "2018-01-30"], kwargs=ids).get()
    assert runs.run_status(brain, "run-1")["symbols"]["NOPE/BTC"]["step"] == "compare_models"
    for step in (compute_importance, check_rollback):
        out = step.apply(args=[out, "NOPE/BTC", "2018-01-30"], kwargs=ids).get()
    out = select_model.apply(args=[out, "NOPE/BTC", "2018-01-30"], kwargs=ids).get()
    assert out["status"] == "failed" and "lightgbm: no candles" in out["error"]
    assert runs.run_status(brain, "run-1")["symbols"]["NOPE/BTC"]["state"] == "running"  # not the last step
    out = train_sizer.apply(args=[out, "NOPE/BTC", "2018-01-30"], kwargs=ids).get()
    assert out["status"] == "failed" and out["sizer"]["status"] == "skipped"
    assert runs.run_status(brain, "run-1")["symbols"]["NOPE/BTC"]["state"] == "running"  # the outcome is next
    out = record_outcome.apply(args=[out, "NOPE/BTC"], kwargs=ids).get()
    status = runs.run_status(brain, "run-1")
    row = status["symbols"]["NOPE/BTC"]
    # The finished row names the step that ended the chain (the training that found no candles), not the
    # last step that started and only passed the failed state on (issue 25, item 6).
    assert row["state"] == "failed" and row["step"] == "train_symbol"


def test_the_final_step_records_a_failure_upstream(brain, monkeypatch):
    """A step that fails itself hands a failed status on; the final step records it: the symbol's row
    ends failed."""
    from brain_tasks.tasks import record_outcome, select_model, train_sizer

    outcome.start_attempt(brain, get_settings(), "retrain", "run-2", "a-2", timekeeping.now().date(), ["ETH/BTC"],
                          ["baseline"])

    def bug(*_a, **_k):  # noqa: ANN002, ANN003
        raise RuntimeError("selection broke")

    monkeypatch.setattr(choose, "select_model", bug)
    prev = ChainState.start("ETH/BTC", timekeeping.now().date()).update(config_hash="x").to_json()
    ids = {"run_id": "run-2", "attempt_id": "a-2"}
    out = select_model.apply(args=[prev, "ETH/BTC", "2018-01-30"], kwargs=ids).get()
    assert out["status"] == "failed" and "selection broke" in out["error"]
    out = train_sizer.apply(args=[out, "ETH/BTC", "2018-01-30"], kwargs=ids).get()
    record_outcome.apply(args=[out, "ETH/BTC"], kwargs=ids).get()
    row = runs.run_status(brain, "run-2")["symbols"]["ETH/BTC"]
    assert row["state"] == "failed" and "selection broke" in row["error"]


def test_a_bug_becomes_a_failed_status_and_a_transient_fault_gives_up_as_one(brain, monkeypatch):
    from brain_tasks.tasks import train_symbol

    def bug(*_a, **_k):  # noqa: ANN002, ANN003
        raise KeyError("column that is not there")

    monkeypatch.setattr(train, "train_symbol", bug)
    out = train_symbol.apply(args=["ETH/BTC", "xgboost", "2018-01-30"]).get()["models"]["xgboost"]
    assert out["status"] == "failed" and out["error"].startswith("KeyError")

    def flaky(*_a, **_k):  # noqa: ANN002, ANN003
        raise TransientError("exchange timed out")

    monkeypatch.setattr(train, "train_symbol", flaky)
    # Eagerly (no broker) there is nothing to retry through: the fault is reported as a status.
    out = train_symbol.apply(args=["ETH/BTC", "xgboost", "2018-01-30"]).get()["models"]["xgboost"]
    assert out["status"] == "failed" and "transient fault persisted" in out["error"]


def test_collect_and_quality_check_tasks_wire_the_sample_into_the_brain(brain, monkeypatch):
    from brain_tasks.tasks import collect_candles, collect_funding, data_quality_check

    out = collect_candles.apply(args=["ADA/BTC"]).get()
    assert out["status"] == "succeeded" and out["kind"] == "candles"
    assert len(store.read_candles(brain, "freqtrade", "ADA/BTC", "5m")) == 5720
    again = collect_candles.apply(args=["ADA/BTC"]).get()
    assert again["status"] == "succeeded"
    assert len(store.read_candles(brain, "freqtrade", "ADA/BTC", "5m")) == 5720
    funding = collect_funding.apply(args=["XRP/USDT:USDT"]).get()
    assert funding["status"] == "succeeded" and len(store.read_funding(brain, "freqtrade", "XRP/USDT:USDT")) == 91
    missing = collect_candles.apply(args=["NOPE/BTC"]).get()
    assert missing["status"] == "failed" and missing["error"]
    report = data_quality_check.apply(kwargs={"symbols": ["ADA/BTC"]}).get()
    assert "ADA/BTC" in report["symbols"]
    gaps = store.read_table(brain, "data_quality_logs", where={"symbol": "ADA/BTC", "check": "gap"})
    assert len(gaps) == 5  # the five real gaps of the ADA/BTC file (its SOURCE.md)
