"""The Brain's state: one champion per symbol, chronology, unchanged and stale inputs, promotion and
live rollback with fixed expected outcomes, and the migration that repairs two champions."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from brain_tasks.service.steps import promote, train
from brain_tasks.timekeeping import day_end
from brain_tasks.brain import registry, store
from brain_tasks.brain.db import make_engine
from brain_tasks.brain.migrate import upgrade
from brain_tasks.brain.tables import ModelManifest, ModelRegistry
from brain_tasks.settings import from_environ
from tests.test_jobs import _chain, _load, _without_wall_clock
from tests import snapshots


def _settings(url: str, **env: str):  # noqa: ANN202
    return from_environ({"BRAIN_DATABASE_URL": url, **env})


def _statuses(engine) -> dict[tuple[str, int], str]:  # noqa: ANN001
    return {(r.model_type, r.version): r.status for r in registry.registry_rows(engine)}


def test_a_backfill_after_a_current_retrain_leaves_one_champion(brain_db_url):
    engine, settings = make_engine(brain_db_url), _settings(brain_db_url)
    _load(engine, "ETH/BTC")
    current = _chain(engine, settings, "ETH/BTC", ["baseline"], dt.date(2018, 1, 30), "current")
    backfill = _chain(engine, settings, "ETH/BTC", ["baseline"], dt.date(2018, 1, 25), "backfill")
    assert current.rollback["action"] == "promote"
    assert backfill.rollback["action"] == "backfill"
    assert "before the champion baseline v1" in backfill.rollback["reason"]
    assert _statuses(engine) == {("baseline", 1): "champion", ("baseline", 2): "backfill"}
    assert registry.champion(engine, "ETH/BTC").version == 1
    # The backfill did not touch the per-regime choice either.
    assert {c["as_of"] for c in registry.regime_choice(engine, "ETH/BTC").values()} == {dt.date(2018, 1, 30)}


def test_the_database_refuses_a_second_champion(brain_db_url):
    engine, settings = make_engine(brain_db_url), _settings(brain_db_url)
    _load(engine, "ETH/BTC")
    _chain(engine, settings, "ETH/BTC", ["baseline", "lightgbm"], dt.date(2018, 1, 30), "r")
    loser = next(r for r in registry.registry_rows(engine) if r.status != "champion")
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.update(ModelRegistry).where(
            ModelRegistry.symbol == loser.symbol, ModelRegistry.model_type == loser.model_type,
            ModelRegistry.version == loser.version).values(status="champion"))


def test_unchanged_inputs_make_no_new_version_and_no_new_row(brain_db_url):
    """The same data retrained as of the next day (fresh enough by a 3-day allowance): same digest, so v1
    comes back."""
    engine, settings = make_engine(brain_db_url), _settings(brain_db_url, BRAIN_MAX_DATA_AGE="259200")
    _load(engine, "ETH/BTC")
    _chain(engine, settings, "ETH/BTC", ["baseline"], dt.date(2018, 1, 30), "first")
    before = snapshots.snapshot(engine)
    again = train.train_symbol(engine, settings, "ETH/BTC", "baseline", dt.date(2018, 1, 31))
    assert again.trained is False and again.version == 1 and "inputs unchanged" in again.reason
    out = _chain(engine, settings, "ETH/BTC", ["baseline"], dt.date(2018, 1, 31), None)
    assert out.unchanged is True and out.rollback["action"] == "unchanged"
    snapshots.assert_same_database(_without_wall_clock(before), _without_wall_clock(snapshots.snapshot(engine)))


def test_stale_data_ends_the_chain_as_stale_without_promotion(brain_db_url):
    engine, settings = make_engine(brain_db_url), _settings(brain_db_url)
    _load(engine, "ETH/BTC")
    out = train.train_symbol(engine, settings, "ETH/BTC", "baseline", dt.date(2018, 3, 1))
    assert out.status == "stale" and "older than the end of 2018-03-01" in out.error
    chain = _chain(engine, settings, "ETH/BTC", ["baseline"], dt.date(2018, 3, 1), None)
    assert chain.status == "stale"
    assert registry.registry_rows(engine) == [] and registry.champion(engine, "ETH/BTC") is None
    findings = store.read_table(engine, "data_quality_logs", where={"check": "stale"})
    assert len(findings) == 1 and findings.iloc[0].severity == "warning"


# --- promotion and live rollback, with outcomes fixed by construction ---------------------------

DAY1, DAY2 = dt.date(2024, 1, 14), dt.date(2024, 1, 24)


def _momentum_market(seed: int = 7, days: int = 24, phi: float = 0.6, vol: float = 0.002) -> pd.DataFrame:
    """AR(1) returns: the last move predicts the next ones, so a linear model earns a real edge and the
    same model with its signs flipped loses it."""
    rng = np.random.default_rng(seed)
    n = days * 288
    r = np.empty(n)
    r[0] = 0.0
    eps = rng.standard_normal(n) * vol
    for i in range(1, n):
        r[i] = phi * r[i - 1] + eps[i]
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    ts = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    return pd.DataFrame({"ts": ts, "open": open_, "high": np.maximum(open_, close) * 1.0005,
                         "low": np.minimum(open_, close) * 0.9995, "close": close,
                         "volume": rng.lognormal(3.0, 0.3, n), "exchange": "freqtrade", "symbol": "MOM/USD",
                         "timeframe": "5m"})


def _inverted_copy(engine, source: ModelManifest, as_of: dt.date) -> int:  # noqa: ANN001
    """A new version of `source` that predicts the opposite of it (a deliberately bad model)."""
    fmt, data = registry.load_artifact(engine, source.artifact_sha256)
    doc = json.loads(data)
    doc["coef"] = [-c for c in doc["coef"]]
    doc["intercept"] = -doc["intercept"]
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    version = source.version + 1
    with engine.begin() as conn:
        sha = registry.put_artifact(conn, blob, fmt)
        values = {c.name: getattr(source, c.name) for c in ModelManifest.__table__.columns}
        conn.execute(sa.insert(ModelManifest).values({**values, "version": version, "as_of": as_of,
                                                      "artifact_sha256": sha}))
        conn.execute(sa.insert(ModelRegistry).values(
            symbol=source.symbol, model_type=source.model_type, version=version, as_of=as_of,
            config_hash=source.config_hash, artifact_sha256=sha, status="candidate", composite_score=None,
            created_at=registry.now(), updated_at=registry.now()))
    return version


@pytest.fixture
def momentum(brain_db_url):  # noqa: ANN001
    engine, settings = make_engine(brain_db_url), _settings(brain_db_url)
    market = _momentum_market()
    store.upsert(engine, "candles", market[market.ts < pd.Timestamp(DAY1 + dt.timedelta(days=1), tz="UTC")])
    out = _chain(engine, settings, "MOM/USD", ["baseline"], DAY1, None)
    assert out.rollback["action"] == "promote"
    good = registry.champion(engine, "MOM/USD")
    bad = _inverted_copy(engine, good, DAY1 + dt.timedelta(days=1))
    return engine, settings, market, good, bad


def test_too_little_evidence_keeps_the_champion(momentum):
    engine, settings, _market, good, bad = momentum
    registry.pin_champion(engine, "MOM/USD", "baseline", bad, "test: a bad model takes over")
    live = promote.live_check(engine, settings, "MOM/USD", DAY1)  # no bar after its training data yet
    assert live["action"] == "insufficient_evidence"
    assert registry.champion(engine, "MOM/USD").version == bad


def test_a_worse_champion_is_rolled_back_live(momentum):
    engine, settings, market, good, bad = momentum
    registry.pin_champion(engine, "MOM/USD", "baseline", bad, "test: a bad model takes over")
    store.upsert(engine, "candles", market)
    live = promote.live_check(engine, settings, "MOM/USD", DAY2)
    assert live["action"] == "rollback", live
    assert registry.champion(engine, "MOM/USD").version == good.version
    assert _statuses(engine)[("baseline", bad)] == "rolled_back"
    last = registry.champion_history(engine, "MOM/USD")[-1]
    assert (last.action, last.version, last.from_version) == ("rollback", good.version, bad)
    assert last.evidence["n"] >= settings.min_evidence_bars and last.evidence["p_value"] <= 0.05
    # The same nightly step again changes nothing.
    before = snapshots.snapshot(engine)
    assert promote.live_check(engine, settings, "MOM/USD", DAY2)["action"] == "rollback"
    snapshots.assert_same_database(_without_wall_clock(before), _without_wall_clock(snapshots.snapshot(engine)))


def test_a_better_champion_is_kept_live(momentum):
    engine, settings, market, good, bad = momentum
    registry.pin_champion(engine, "MOM/USD", "baseline", bad, "test: the bad model trades first")
    registry.pin_champion(engine, "MOM/USD", "baseline", good.version, "test: the good model is back")
    store.upsert(engine, "candles", market)
    live = promote.live_check(engine, settings, "MOM/USD", DAY2)
    assert live["action"] == "keep", live
    assert registry.champion(engine, "MOM/USD").version == good.version


def test_a_significantly_worse_candidate_is_not_promoted(momentum):
    """Retrain-time rule on the same fixed construction: the bad copy as candidate keeps the champion."""
    engine, settings, market, good, bad = momentum
    store.upsert(engine, "candles", market)
    cand = registry.manifest(engine, "MOM/USD", "baseline", bad)
    # The bad copy claims data up to DAY2's end so the champion's unseen bars are its out-of-sample ones.
    cand_r = promote.out_of_time_returns(engine, settings, cand, good.data_end, day_end(DAY2))
    champ_r = promote.out_of_time_returns(engine, settings, good, good.data_end, day_end(DAY2))
    from brain_tasks.ml.rollback import promotion_decision

    assert promotion_decision(cand_r, champ_r, min_samples=288).action == "keep"
    assert promotion_decision(champ_r, cand_r, min_samples=288).action == "promote"
    assert promotion_decision(champ_r.iloc[:100], cand_r.iloc[:100], min_samples=288).action == \
        "insufficient_evidence"


# --- the migration repairs what 0001-era code wrote ----------------------------------------------

def test_the_migration_repairs_two_champions(db_url):
    upgrade(db_url, "0001")
    engine = make_engine(db_url)
    stamp = registry.now()
    rows = [dict(symbol="ETH/BTC", model_type="baseline", version=v, as_of=day, config_hash="c" * 64,
                 artifact_sha256=str(v) * 64, status="champion", composite_score=None,
                 selected_regimes={"normal": {"confidence": 0.5, "reason": "old"}} if v == 2 else {},
                 created_at=stamp, updated_at=stamp)
            for v, day in ((1, dt.date(2018, 1, 30)), (2, dt.date(2018, 1, 25)))]
    old_registry = sa.Table("model_registry", sa.MetaData(), autoload_with=engine)  # the 0001 columns
    with engine.begin() as conn:
        conn.execute(sa.insert(old_registry), rows)
    upgrade(db_url)
    status = {r.version: r.status for r in registry.registry_rows(engine, "ETH/BTC")}
    assert status == {1: "champion", 2: "previous"}
    history = registry.champion_history(engine, "ETH/BTC")
    assert [(h.action, h.version) for h in history] == [("promote", 1)]
    assert registry.regime_choice(engine, "ETH/BTC") == {}  # v2's old choice was not the latest day's
