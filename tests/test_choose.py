"""The per-regime choice when the champion decision set aside every version of the run (real
PostgreSQL): a flat choice per regime with the reason, not an exception."""

from __future__ import annotations

import datetime as dt

from brain_tasks.brain import registry, runs, store
from brain_tasks.brain.db import make_engine
from brain_tasks.ml.regimes import SCOPES
from brain_tasks.service.chain import ChainState
from brain_tasks.service.steps import choose, outcome
from brain_tasks.settings import from_environ
from brain_tasks.vocabulary import Action, ChampionStatus, Status
from tests.chains import run_chain
from tests.test_jobs import _load

SYMBOL = "LTC/BTC"


def test_every_candidate_set_aside_gives_a_flat_choice_per_regime(brain_db_url):
    engine = make_engine(brain_db_url)
    _load(engine, SYMBOL)
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url})
    first = run_chain(engine, settings, SYMBOL, ["baseline"], dt.date(2018, 1, 25))
    assert first.ok and first.action == Action.PROMOTE
    # Far more evidence asked than five days hold: the next day's only candidate cannot be promoted.
    strict = from_environ({"BRAIN_DATABASE_URL": brain_db_url, "BRAIN_MIN_EVIDENCE_BARS": str(10**6)})
    day = dt.date(2018, 1, 30)
    outcome.start_attempt(engine, strict, "retrain", "r-aside", "a-aside", day, [SYMBOL], ["baseline"])
    state = run_chain(engine, strict, SYMBOL, ["baseline"], day, "a-aside")

    assert state.action == Action.INSUFFICIENT_EVIDENCE
    assert registry.manifest(engine, SYMBOL, "baseline", 2) is not None
    statuses = {r.version: r.status for r in registry.registry_rows(engine, SYMBOL)}
    assert statuses == {1: ChampionStatus.CHAMPION, 2: ChampionStatus.REJECTED}
    assert state.ok and state.selection == {s: "flat" for s in SCOPES} and state.tradeable == []
    choice = registry.regime_choice(engine, SYMBOL)
    assert set(choice) == set(SCOPES)
    for c in choice.values():
        assert (c["model_type"], c["version"], c["tradeable"], c["as_of"]) == ("flat", None, False, day)
        assert "baseline v2 rejected" in c["reason"] and "stays champion" in c["reason"]
    row = runs.run_status(engine, "r-aside")
    assert row["symbols"][SYMBOL]["state"] == Status.OK
    details = store.read_table(engine, "training_runs", where={"attempt_id": "a-aside", "symbol": SYMBOL})
    assert details.iloc[0]["details"]["selection"] == {s: "flat" for s in SCOPES}

    # Run again (a repeated step): the recorded decision stands.
    assert choose.select_model(engine, strict, state).selection == state.selection


def test_no_version_at_all_is_a_failed_state_not_an_exception(brain_db_url):
    engine = make_engine(brain_db_url)
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url})
    state = ChainState.start(SYMBOL, dt.date(2018, 1, 30)).update(versions={}, rollback={
        "action": Action.PROMOTE, "reason": "x"})
    out = choose.select_model(engine, settings, state)
    assert out.status == Status.FAILED and out.step == choose.SELECT_STEP and "no version" in out.error
    assert registry.regime_choice(engine, SYMBOL) == {}
