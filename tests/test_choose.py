"""The per-regime selection after a retrain whose candidate was rejected (the champion stayed).

Before this was fixed, the rejected candidate's whole model type left the selection: with daily retrains
the promotion test has one day of new bars (275 paired 5m bars < BRAIN_MIN_EVIDENCE_BARS = 288) every
other day, so the candidate was rejected for insufficient evidence and every regime its type traded
went flat for the day, although the version that had earned the choice (the champion) was still there.
Now the version of that type in use stands in for the rejected one (`steps.choose.selection_candidates`).
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from brain_tasks.brain import registry, store
from brain_tasks.brain.db import make_engine
from brain_tasks.brain.migrate import upgrade
from brain_tasks.service.steps.choose import selection_candidates
from brain_tasks.settings import from_environ
from brain_tasks.vocabulary import Action
from tests import planted
from tests.chains import run_chain


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
