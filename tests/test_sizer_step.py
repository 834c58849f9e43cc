"""The sizer step on real sample pairs: stored as a `ppo_sizer` version with three comparison rows,
idempotent, served from the Brain; its failure never fails the chain; and a real worker runs it by
name and as the last link of the per-symbol chain."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from brain_tasks.service.chain import ChainState, ModelOutcome
from brain_tasks.service.steps import sizer as sizer_step
from brain_tasks.vocabulary import Status
from brain_tasks.brain import registry, store
from brain_tasks.brain.db import dispose_engine, make_engine
from brain_tasks.brain.migrate import upgrade
from brain_tasks.ml.sizing import SIZERS, Sizer, size_for
from brain_tasks.settings import from_environ, get_settings
from tests import servers
from tests.test_jobs import _chain, _load
from tests.workers import brain_env, run_python, worker
from tests import snapshots

DAY = dt.date(2018, 1, 30)
FAST = {"BRAIN_SIZER_TIMESTEPS": "2048"}  # the machinery, not the agent's skill, is under test here


@pytest.fixture
def chained(brain_db_url):
    engine = make_engine(brain_db_url)
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url, **FAST})
    _load(engine, "ETH/BTC")
    prev = _chain(engine, settings, "ETH/BTC", ["baseline"], DAY, "r1")
    assert prev.status == "succeeded"
    return engine, settings, prev


def _sizer(engine, settings, prev: ChainState, symbol: str = "ETH/BTC", day: dt.date = DAY) -> ModelOutcome:  # noqa: ANN001
    """The sizer step's outcome for the chain state `prev` of `symbol` as of `day`."""
    return sizer_step.train_sizer(engine, settings, prev.update(symbol=symbol, as_of=day)).sizer


def test_the_sizer_is_a_version_with_three_comparison_rows_and_is_served_from_the_brain(chained):
    engine, settings, prev = chained
    out = _sizer(engine, settings, prev)
    assert out.status == "succeeded" and out.trained and out.version == 1, out
    assert out.sizes in SIZERS and out.source == "baseline v1"
    manifest = registry.manifest(engine, "ETH/BTC", "ppo_sizer", 1)
    assert manifest.config_hash == out.config_hash and manifest.as_of == DAY
    fmt, data = registry.load_artifact(engine, manifest.artifact_sha256)
    assert fmt == "sizer-safetensors" and not data.startswith(b"PK")
    assert {(r.model_type, r.status) for r in registry.registry_rows(engine, "ETH/BTC")} == {
        ("baseline", "champion"), ("ppo_sizer", "candidate")}
    rows = [c for c in registry.comparisons(engine, "ETH/BTC", DAY) if c.config_hash == out.config_hash]
    assert sorted(c.model_type for c in rows) == sorted(SIZERS)
    assert [c.model_type for c in rows if c.is_best] == [out.sizes] and rows[0].is_best
    assert all(c.metrics["reason"] == out.gate and c.metrics["n_test_bars"] > 300 for c in rows)
    metrics = registry.metrics_of(engine, "ETH/BTC", "ppo_sizer", 1)["all"]
    assert {"sharpe", "p_vs_sign", "p_vs_vol_target", "p_vs_flat", "n_train_bars", "n_test_bars"} <= set(metrics)
    # The report's equity curve reads the sizer's test bars like any version's OOS frame.
    oos = registry.oos_frame(engine, manifest.oos_sha256)
    assert {"ts", "strategy_return", "regime", "sign_return", "vol_target_return"} <= set(oos.columns)

    sizer = sizer_step.current_sizer(engine, "ETH/BTC")
    assert sizer.active == out.sizes and sizer.reason == out.gate
    assert sizer.source == ("baseline", 1)
    assert sizer.description["test_start"] > str(registry.oos_frame(
        engine, registry.champion(engine, "ETH/BTC").oos_sha256)["ts"].min())
    for use in SIZERS:
        assert -1.0 <= size_for(sizer, {"pred": 0.002, "realised_vol": 0.004, "regime": "high"}, use=use) <= 1.0

    before = snapshots.snapshot(engine)
    again = _sizer(engine, settings, prev)
    assert not again.trained and again.version == 1 and again.sizes == out.sizes
    later = _sizer(engine, settings, prev, day=DAY + dt.timedelta(days=1))
    assert not later.trained and "inputs unchanged" in later.reason
    snapshots.assert_same_database(before, snapshots.snapshot(engine))

    # Skips are statuses.
    failed = prev.update(status=Status.FAILED, error="upstream")
    assert _sizer(engine, settings, failed).status == "skipped"
    off = dataclasses.replace(settings, sizer_timesteps=0)
    assert "off" in _sizer(engine, off, prev).reason
    assert "no champion" in _sizer(engine, settings, prev, "XMR/BTC").reason
    assert sizer_step.current_sizer(engine, "XMR/BTC") is None


def test_a_failing_sizer_never_fails_the_chain(sqlite_url, monkeypatch):
    from brain_tasks.tasks import train_sizer

    upgrade(sqlite_url)
    monkeypatch.setenv("BRAIN_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    try:
        def bug(*_a, **_k):
            raise KeyError("a column that is not there")

        monkeypatch.setattr(sizer_step, "train_sizer", bug)
        prev = ChainState.start("ETH/BTC", DAY).update(selection={"low": "baseline"}).to_json()
        out = train_sizer.apply(args=[prev, "ETH/BTC", "2018-01-30"], kwargs={"run_id": "r"}).get()
        assert {k: v for k, v in out.items() if k != "sizer"} == {k: v for k, v in prev.items() if k != "sizer"}
        assert out["sizer"]["status"] == "failed" and out["sizer"]["error"].startswith("KeyError")
        logged = store.read_table(make_engine(sqlite_url), "data_quality_logs", where={"symbol": "ETH/BTC"})
        assert list(logged["check"]) == ["train_sizer"]
    finally:
        get_settings.cache_clear()


SEND = """
import json
from celery import Celery
app = Celery(broker={broker!r}, backend={broker!r})
app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
sized = app.send_task("brain_tasks.train_sizer", args=[json.loads({prev!r}), "ETH/BTC", "2018-01-30"], queue="train")
chain = app.send_task("brain_tasks.retrain_symbol", args=["LTC/BTC", "2018-01-30", ["baseline"]], queue="analysis")
print(json.dumps({{"sized": sized.get(timeout=600), "chain": chain.get(timeout=600)}}))
"""


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
def test_a_real_worker_trains_the_sizer_by_name_and_as_the_chains_last_link(tmp_path, pg_url, redis_url):
    url = servers.create_database(pg_url)
    try:
        upgrade(url)
        engine = make_engine(url)
        settings = from_environ({"BRAIN_DATABASE_URL": url, **FAST})
        _load(engine, "ETH/BTC")
        prev = _chain(engine, settings, "ETH/BTC", ["baseline"], DAY, "r1")
        env = brain_env(url, redis_url, tmp_path, **FAST)
        with worker(env, log_dir=tmp_path):
            out = json.loads(run_python(SEND.format(broker=redis_url, prev=json.dumps(prev.to_json())), env).splitlines()[-1])
        sized = out["sized"]
        assert sized["status"] == "succeeded" and sized["sizer"]["status"] == "succeeded", sized
        assert sized["sizer"]["trained"] and sized["sizer"]["sizes"] in SIZERS
        assert out["chain"]["state"] == "succeeded" and out["chain"]["succeeded"] == ["LTC/BTC"], out["chain"]
        for symbol in ("ETH/BTC", "LTC/BTC"):
            manifest = registry.latest_version(engine, symbol, "ppo_sizer")
            assert manifest is not None and manifest.as_of == DAY, symbol
            rows = [c for c in registry.comparisons(engine, symbol, DAY) if c.config_hash == manifest.config_hash]
            assert sorted(c.model_type for c in rows) == sorted(SIZERS) and sum(c.is_best for c in rows) == 1
            assert isinstance(Sizer.from_bytes(registry.current_sizer(engine, symbol)[1]), Sizer)
        assert "Task brain_tasks.train_sizer" in (tmp_path / "w1.log").read_text()
    finally:
        dispose_engine(url)
        servers.drop_database(url)


def test_the_served_signal_is_sized_by_the_symbols_sizer(chained):
    """predict() hands the sizer the same observation its training used and takes its target: the
    signal's size and side are the sizer's, and the reason says which rule sized it."""
    from brain_tasks.service import serving
    from brain_tasks.ml.sizing import latest_observation

    engine, settings, prev = chained
    out = _sizer(engine, settings, prev)
    sizer = sizer_step.current_sizer(engine, "ETH/BTC")
    stamp = dt.datetime(2018, 1, 30, 4, 56, tzinfo=dt.timezone.utc)  # just after the sample's last close
    flat = serving.predict(engine, settings, "ETH/BTC", stamp=stamp, record=False)
    if not flat.tradeable:  # no edge on the sample: flat, and the sizer is not asked
        assert flat.size == 0.0 and "sized by" not in flat.reason
    # An operator's choice to trade the champion everywhere: now the sizer sizes it.
    registry.write_regime_choice(engine, "ETH/BTC", DAY, {
        regime: {"model_type": "baseline", "version": 1, "confidence": 1.0, "tradeable": True, "reason": "test"}
        for regime in ("low", "normal", "high", "extreme", "all")})
    serving.server(engine).decisions.clear()
    signal = serving.predict(engine, settings, "ETH/BTC", stamp=stamp, record=False)
    assert signal.tradeable and f"sized by {out.sizes}" in signal.reason
    assert 0.0 <= signal.size <= 1.0 and (signal.size == 0.0) == (signal.position == 0)
    # The same target from the observation built by hand: the last predictions of the champion.
    for use in SIZERS:
        assert -1.0 <= size_for(sizer, latest_observation([signal.prediction], [float("nan")], signal.regime,
                                                          sizer), use=use) <= 1.0
