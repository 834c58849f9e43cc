"""The work behind the tasks, without Celery, on SQLite and real PostgreSQL: idempotency, claims,
rollback, failure recording."""

from __future__ import annotations

import datetime as dt
import threading

import pandas as pd
import pytest

from brain_tasks.brain import registry, runs, store
from brain_tasks.brain.db import make_engine
from brain_tasks.errors import DataError, IntegrityError
from brain_tasks.service.chain import ChainState, ModelOutcome
from brain_tasks.service.steps import choose, compare, explain, outcome, promote, reads, train
from brain_tasks.settings import from_environ
from brain_tasks.vocabulary import Status
from tests import snapshots
from tests.chains import run_chain as _chain
from tests.workers import REPO

DAY = dt.date(2018, 1, 30)


def _load(engine, symbol: str, end: str | None = None) -> None:  # noqa: ANN001
    df = pd.read_feather(REPO / "sample" / "freqtrade-testdata" / f"{symbol.replace('/', '_')}-5m.feather")
    df = df.rename(columns={"date": "ts"}).assign(exchange="freqtrade", symbol=symbol, timeframe="5m")
    if end:
        df = df[df.ts < pd.Timestamp(end, tz="UTC")]
    store.upsert(engine, "candles", df)


@pytest.fixture
def brain(brain_db_url):  # noqa: ANN001
    engine = make_engine(brain_db_url)
    _load(engine, "ETH/BTC")
    return engine, from_environ({"BRAIN_DATABASE_URL": brain_db_url})


def test_the_chain_twice_leaves_the_same_database_and_trains_nothing(brain):
    engine, settings = brain
    outcome.start_attempt(engine, settings, "retrain", "r1", "a1", DAY, ["ETH/BTC"], ["lightgbm", "baseline"])
    first = _chain(engine, settings, "ETH/BTC", ["lightgbm", "baseline"], DAY, "a1")
    outcome.summarize_attempt(engine, [first.to_json()], "r1", "a1")
    before = snapshots.snapshot(engine)
    again = [train.train_symbol(engine, settings, "ETH/BTC", m, DAY) for m in ("lightgbm", "baseline")]
    assert [r.trained for r in again] == [False, False]
    outcome.start_attempt(engine, settings, "retrain", "r1", "a2", DAY, ["ETH/BTC"], ["lightgbm", "baseline"])
    second = _chain(engine, settings, "ETH/BTC", ["lightgbm", "baseline"], DAY, "a2")
    outcome.summarize_attempt(engine, [second.to_json()], "r1", "a2")
    after = snapshots.snapshot(engine)
    for table in ("model_artifacts", "model_manifests"):  # created_at included: nothing was rewritten
        pd.testing.assert_frame_equal(before[table], after[table])
    snapshots.assert_same_database(_comparable(before), _comparable(after))
    assert first.status == "succeeded" and first.rollback["action"] == "promote"
    assert runs.run_status(engine, "r1")["attempt_id"] == "a2"
    assert runs.run_status(engine, "r1")["state"] == runs.run_status(engine, "r1", "a1")["state"] == "succeeded"


def test_two_copies_of_one_training_at_once_give_one_result(brain):
    engine, settings = brain
    results: list[ModelOutcome] = []
    threads = [threading.Thread(target=lambda: results.append(
        train.train_symbol(engine, settings, "ETH/BTC", "baseline", DAY))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.trained for r in results) == [False, True]
    assert {r.version for r in results} == {1}
    assert len(store.read_table(engine, "model_manifests")) == 1
    assert len(store.read_table(engine, "model_registry")) == 1


def test_a_later_retrain_is_checked_against_the_champion_out_of_time(brain_db_url):
    """Train as of the 25th, then as of the 30th: the second check compares both on the five days the
    first champion never saw, and logs a readable decision."""
    engine = make_engine(brain_db_url)
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url})
    _load(engine, "LTC/BTC")
    early = _chain(engine, settings, "LTC/BTC", ["baseline"], dt.date(2018, 1, 25))
    late = _chain(engine, settings, "LTC/BTC", ["baseline"], dt.date(2018, 1, 30))
    assert early.rollback["action"] == "promote"
    logs = store.read_table(engine, "rollback_logs").sort_values("as_of")
    assert len(logs) == 2
    second = logs.iloc[1]
    assert second.action in ("promote", "rollback")
    assert second.stats["n"] >= 288 and "v1" in second.reason
    registry = store.read_table(engine, "model_registry").set_index("version")
    if second.action == "promote":
        assert registry.loc[2, "status"] == "champion" and registry.loc[1, "status"] == "previous"
    else:
        assert registry.loc[1, "status"] == "champion" and registry.loc[2, "status"] == "rejected"
    assert late.status == "succeeded"


def test_bad_data_is_a_data_error_and_a_failed_status_downstream(brain_db_url):
    engine = make_engine(brain_db_url)
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url})
    with pytest.raises(DataError, match="no 5m candles"):
        train.train_symbol(engine, settings, "NOPE/BTC", "lightgbm", DAY)
    _load(engine, "ETH/BTC", end="2018-01-11")  # about a day of bars: too few to train on
    with pytest.raises(DataError, match="usable rows"):  # as of the 10th: fresh data, just too little of it
        train.train_symbol(engine, settings, "ETH/BTC", "lightgbm", dt.date(2018, 1, 10))
    failed = ChainState.start("ETH/BTC", DAY).with_model(
        ModelOutcome(model_type="lightgbm", status=Status.FAILED, error="too few rows"))
    out = compare.compare_models(engine, settings, failed)
    assert out.status == "failed" and "too few rows" in out.error
    for step in (explain.compute_importance, promote.check_rollback):
        assert step(engine, settings, out) == out
    outcome.start_attempt(engine, settings, "retrain", "bad", "bad-1", DAY, ["ETH/BTC"], ["lightgbm"])
    out = choose.select_model(engine, settings, out)
    summary = outcome.summarize_attempt(engine, [out.to_json()], "bad", "bad-1")  # the chord's result fills the row
    assert summary["state"] == "failed" and "ETH/BTC" in summary["failed"]
    outcome.record_task_failure(engine, settings, "ETH/BTC", "candles", "train_symbol", DataError("x"), DAY)
    outcome.record_task_failure(engine, settings, "ETH/BTC", "candles", "train_symbol", DataError("x"), DAY)
    assert len(store.read_table(engine, "data_quality_logs", where={"check": "train_symbol"})) == 1


def test_a_corrupted_artifact_is_refused(brain):
    engine, settings = brain
    r = train.train_symbol(engine, settings, "ETH/BTC", "baseline", DAY)
    manifest = registry.find_version(engine, "ETH/BTC", "baseline", DAY, r.config_hash)
    import sqlalchemy as sa

    from brain_tasks.brain.tables import ModelArtifact

    with engine.begin() as conn:
        conn.execute(sa.update(ModelArtifact).where(ModelArtifact.sha256 == manifest.artifact_sha256)
                     .values(data=b'{"tampered": true}'))
    with pytest.raises(IntegrityError, match="corrupted"):
        reads.load_version(engine, manifest)


def _without_wall_clock(snap: dict) -> dict:
    ignore = snapshots.wall_clock_columns()
    return {t: f.drop(columns=ignore[t]) for t, f in snap.items()}


def _comparable(snap: dict) -> dict:
    """A snapshot minus wall-clock columns, with training_runs reduced to what an undisturbed run and
    a re-run (or a recovered one) share: each run's latest attempt, without attempt ids, re-drive
    counts and the notes they leave."""
    out = _without_wall_clock(snap)
    runs_ = out["training_runs"]
    if len(runs_):
        started = snap["training_runs"].groupby("run_id")["started_at"].transform("max")
        latest = snap["training_runs"].loc[snap["training_runs"]["started_at"] == started, "attempt_id"]
        runs_ = runs_[runs_["attempt_id"].isin(set(latest))]
    out["training_runs"] = (runs_.drop(columns=["attempt_id", "redrives", "step"])
                            .sort_values(["run_id", "symbol"]).reset_index(drop=True))
    return out


def test_a_training_reports_its_cpu_split(brain):
    """Task CPU, and of it the walk-forward and the importance: what a fan-out profile adds up."""
    engine, settings = brain
    r = train.train_symbol(engine, settings, "ETH/BTC", "baseline", DAY)
    assert r.trained and r.train_cpu_s > 0 and r.importance_cpu_s > 0
    assert r.cpu_s >= r.train_cpu_s + r.importance_cpu_s - 1e-3
