"""What Engine code reads: the active model (sha256 checked, loaded in its own format) and the
current per-regime choice."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from brain_tasks.brain.registry import find_version
from brain_tasks.service.steps.reads import dataset_for
from brain_tasks.brain import store
from brain_tasks.brain.db import make_engine
from brain_tasks.client import BrainClient
from brain_tasks.ml.regimes import REGIMES
from brain_tasks.settings import from_environ
from tests.test_jobs import _chain, _load

DAY = dt.date(2018, 1, 30)


@pytest.fixture
def client(brain_db_url):  # noqa: ANN001
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url})
    engine = make_engine(brain_db_url)
    _load(engine, "ETH/BTC")
    _chain(engine, settings, "ETH/BTC", ["lightgbm", "baseline"], DAY)
    return BrainClient(settings)


def test_active_model_is_the_champion_and_predicts(client):
    active = client.active_model("ETH/BTC")
    registry = store.read_table(client.engine, "model_registry", where={"status": "champion"})
    assert (active.model_type, active.version) == (registry.iloc[0].model_type, registry.iloc[0].version)
    X, _y = dataset_for(client.engine, client.settings,
                             find_version(client.engine, "ETH/BTC", active.model_type, DAY,
                                               active.manifest["config_hash"]))
    pred = active.model.predict(X[active.manifest["feature_names"]].tail(50))
    assert pred.shape == (50,) and np.isfinite(pred).all()
    with pytest.raises(LookupError):
        client.active_model("NOPE/BTC")


def test_current_choice_names_a_regime_a_model_and_a_confidence(client):
    choice = client.current_choice("ETH/BTC")
    assert choice["regime"] in REGIMES
    assert choice["model_type"] in ("lightgbm", "baseline", "buy_and_hold", "flat")
    # Flat (no model beat doing nothing there with enough evidence) is not traded, and says why.
    assert choice["trade"] is (choice["model_type"] != "flat")
    assert choice["reason"]
    selected = client.active_model("ETH/BTC", regime=choice["regime"])
    if choice["model_type"] in ("lightgbm", "baseline"):
        assert selected.model_type == choice["model_type"]
    else:  # nothing to load for flat or buy-and-hold: the champion is the model on record
        assert selected.model_type == client.current_choice("ETH/BTC")["model_type"] or selected.version >= 1
    if choice["confidence"] is not None:
        assert 0.0 <= choice["confidence"] <= 1.0
