"""The per-regime choice (real PostgreSQL): a flat choice per regime with the reason, not an exception,
when the champion decision set aside every version of the run; the deflated Sharpe ratio's trials
count the candidate models' configurations only, not the position sizer's."""

from __future__ import annotations

import datetime as dt

from brain_tasks.brain import registry, runs, store
from brain_tasks.brain.db import make_engine
from brain_tasks.ml.regimes import SCOPES
from brain_tasks.service.chain import ChainState
from brain_tasks.service.steps import choose, compare, explain, outcome, promote
from brain_tasks.service.steps import sizer as sizer_step
from brain_tasks.settings import from_environ
from brain_tasks.vocabulary import Action, ChampionStatus, Status
from tests.chains import run_chain, trained
from tests.test_jobs import _load
from tests.test_sizer_step import FAST, trading

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


def test_the_sizers_versions_are_no_trials_of_the_selection(brain_db_url):
    """The sizer's versions have a config hash of their own; counted as a configuration tried, they
    doubled the trials the models were deflated for (2 configs x 2 candidates x 5 scopes = 20)."""
    engine = make_engine(brain_db_url)
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url, **FAST})
    _load(engine, "ETH/BTC")
    first = run_chain(engine, settings, "ETH/BTC", ["baseline"], dt.date(2018, 1, 25))
    # The sample's own selection is flat (no sizer then): an operator's choice to trade it trains one.
    sized = sizer_step.train_sizer(engine, settings, trading(engine, first))
    assert sized.sizer is not None and sized.sizer.ok, sized
    found = {m.model_type: m.config_hash for m in registry.manifests(engine, "ETH/BTC")}
    assert set(found) == {"baseline", "ppo_sizer"} and found["baseline"] != found["ppo_sizer"]
    assert choose.configs_tried(engine, "ETH/BTC") == 1
    registry.write_regime_choice(engine, "ETH/BTC", dt.date(2018, 1, 25), {})  # the operator's choice withdrawn

    day = dt.date(2018, 1, 30)
    state = trained(engine, settings, "ETH/BTC", ["baseline"], day)
    for step in (compare.compare_models, explain.compute_importance, promote.check_rollback, choose.select_model):
        state = step(engine, settings, state)
    assert state.ok, state
    stored = store.read_table(engine, "regime_choices", where={"symbol": "ETH/BTC"}).set_index("regime")
    candidate = [registry.manifest(engine, "ETH/BTC", "baseline", int(state.versions["baseline"]))]
    alone = choose.choose_per_regime(engine, settings, candidate, 1, {})
    with_sizer = choose.choose_per_regime(engine, settings, candidate, 2, {})
    for scope in SCOPES:
        details = stored.loc[scope, "details"]
        assert details["n_trials"] == alone[scope]["n_trials"] <= 10 < with_sizer[scope]["n_trials"] == 20
        assert details["confidence"] == alone[scope]["confidence"]
