"""The per-regime choice: a flat choice per regime with the reason, not an exception, when the champion
decision set aside every version of the run and nothing stands in; the deflated Sharpe ratio's trials
count the candidate models' configurations only, not the position sizer's; and a rejected candidate's
model type stays in the selection through the version of that type in use.

Before the last was fixed, the rejected candidate's whole model type left the selection: with daily
retrains the promotion test has one day of new bars (275 paired 5m bars < BRAIN_MIN_EVIDENCE_BARS = 288)
every other day, so the candidate was rejected for insufficient evidence and every regime its type
traded went flat for the day, although the version that had earned the choice (the champion) was still
there.  Now the version of that type in use stands in for the rejected one
(`steps.choose.selection_candidates`)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from brain_tasks.brain import registry, runs, store
from brain_tasks.brain.db import make_engine
from brain_tasks.brain.migrate import upgrade
from brain_tasks.ml.regimes import SCOPES
from brain_tasks.service.chain import ChainState
from brain_tasks.service.steps import choose, compare, explain, outcome, promote
from brain_tasks.service.steps import sizer as sizer_step
from brain_tasks.service.steps.choose import selection_candidates
from brain_tasks.settings import from_environ
from brain_tasks.vocabulary import Action, ChampionStatus, Status
from tests import planted
from tests.chains import run_chain, trained
from tests.test_jobs import _load
from tests.test_sizer_step import FAST, trading

SYMBOL = "LTC/BTC"


def test_every_candidate_set_aside_gives_a_flat_choice_per_regime(brain_db_url):
    """The champion is a lightgbm; the next day's run trains baseline alone, which cannot be promoted,
    and no baseline traded before: nothing stands in for it, so every regime is flat with the reason.
    (Had the champion been a baseline, it would stand in: see the planted test below.)"""
    engine = make_engine(brain_db_url)
    _load(engine, SYMBOL)
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url})
    first = run_chain(engine, settings, SYMBOL, ["lightgbm"], dt.date(2018, 1, 25))
    assert first.ok and first.action == Action.PROMOTE
    assert "baseline" not in {c["model_type"] for c in registry.regime_choice(engine, SYMBOL).values()}
    # Far more evidence asked than five days hold: the next day's only candidate cannot be promoted.
    strict = from_environ({"BRAIN_DATABASE_URL": brain_db_url, "BRAIN_MIN_EVIDENCE_BARS": str(10**6)})
    day = dt.date(2018, 1, 30)
    outcome.start_attempt(engine, strict, "retrain", "r-aside", "a-aside", day, [SYMBOL], ["baseline"])
    state = run_chain(engine, strict, SYMBOL, ["baseline"], day, "a-aside")

    assert state.action == Action.INSUFFICIENT_EVIDENCE
    assert registry.manifest(engine, SYMBOL, "baseline", 1) is not None
    statuses = {(r.model_type, r.version): r.status for r in registry.registry_rows(engine, SYMBOL)}
    assert statuses == {("lightgbm", 1): ChampionStatus.CHAMPION, ("baseline", 1): ChampionStatus.REJECTED}
    assert state.ok and state.selection == {s: "flat" for s in SCOPES} and state.tradeable == []
    choice = registry.regime_choice(engine, SYMBOL)
    assert set(choice) == set(SCOPES)
    for c in choice.values():
        assert (c["model_type"], c["version"], c["tradeable"], c["as_of"]) == ("flat", None, False, day)
        assert "every version of this run was set aside (baseline v1 rejected)" in c["reason"]
        assert "stays champion" in c["reason"]
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


def _v(model_type: str, version: int) -> SimpleNamespace:
    return SimpleNamespace(model_type=model_type, version=version)


def test_a_rejected_candidate_is_replaced_by_the_version_of_its_type_in_use():
    run = [_v("baseline", 2), _v("lightgbm", 2)]
    champion, chosen = _v("lightgbm", 1), _v("xgboost", 1)
    keys = lambda vs: [(v.model_type, v.version) for v in vs]  # noqa: E731
    # the champion stands in for its type's rejected candidate
    assert keys(selection_candidates(run, ("lightgbm", 2), {"lightgbm": champion})) == [("baseline", 2), ("lightgbm", 1)]
    # no rejection: the run's versions, unchanged
    assert keys(selection_candidates(run, None, {"lightgbm": champion})) == keys(run)
    # a rejected type nothing stood for before is left out, as before
    assert keys(selection_candidates(run, ("baseline", 2), {"lightgbm": champion})) == [("lightgbm", 2)]
    # the version the previous choice traded stands in when the champion is of another type
    run = [_v("lightgbm", 3), _v("xgboost", 2)]
    assert keys(selection_candidates(run, ("xgboost", 2), {"lightgbm": champion, "xgboost": chosen})) == \
        [("lightgbm", 3), ("xgboost", 1)]


@pytest.fixture
def brain(tmp_path):  # noqa: ANN001
    url = f"sqlite:///{tmp_path / 'brain.db'}"
    upgrade(url)
    return make_engine(url), from_environ({"BRAIN_DATABASE_URL": url})


@pytest.mark.parametrize("models", [["baseline", "lightgbm"], ["lightgbm"]])
def test_the_chain_keeps_choosing_the_champions_type_when_its_next_candidate_is_not_promoted(brain, models):
    """Planted market (a)'s generator: lightgbm carries the edge of the 'normal' regime.  Day 1 promotes
    lightgbm v1 and chooses it for 'normal'; day 2's lightgbm v2 has one day of new bars against it, too
    few to judge, so the champion stays and v2 is rejected; the choice for 'normal' is still lightgbm,
    now the champion's version (before the fix: no lightgbm among the candidates, and with lightgbm alone
    the selection was called with no version at all, which raised)."""
    engine, settings = brain
    symbol = "PLANT/USD"
    frame, _ = planted.model_specific_edges(11, 30)
    store.upsert(engine, "candles", frame.assign(exchange="freqtrade", symbol=symbol, timeframe="5m"))
    day1 = dt.date(2024, 1, 28)
    first = run_chain(engine, settings, symbol, models, day1)
    assert first.rollback["action"] == Action.PROMOTE and first.best["model_type"] == "lightgbm", first.rollback
    assert registry.regime_choice(engine, symbol)["normal"]["model_type"] == "lightgbm"
    second = run_chain(engine, settings, symbol, models, day1 + dt.timedelta(days=1))
    assert second.rollback["action"] == Action.INSUFFICIENT_EVIDENCE, second.rollback
    normal = registry.regime_choice(engine, symbol)["normal"]
    assert (normal["model_type"], normal["version"], normal["as_of"]) == ("lightgbm", 1, day1 + dt.timedelta(days=1))
