"""Serving on SQLite and PostgreSQL: parity with training, no look-ahead, the signals table's
idempotency, stale data, the flat choice and live tracking."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from brain_tasks.service import serving
from brain_tasks.service.steps import publish, train
from brain_tasks.service.steps.reads import dataset_for
from brain_tasks.brain import registry, store
from brain_tasks.brain import signals as signal_rows
from brain_tasks.brain.db import make_engine
from brain_tasks.client import BrainClient, NoDataError, NoModelError, StaleDataError
from brain_tasks.dashboard.data import overview_rows
from brain_tasks.ml import inference as ml
from brain_tasks.ml.features import make_features
from brain_tasks.ml.regimes import REGIMES
from brain_tasks.settings import from_environ
from brain_tasks.vocabulary import LOSES_TO_FLAT
from tests.workers import REPO

SYMBOL = "ETH/BTC"
AS_OF = dt.date(2018, 1, 15)
CUT = pd.Timestamp("2018-01-16", tz="UTC")  # train on six days (about 1700 bars): a short, fast test
FIVE_MIN = dt.timedelta(minutes=5)


def _candles() -> pd.DataFrame:
    df = pd.read_feather(REPO / "sample" / "freqtrade-testdata" / "ETH_BTC-5m.feather")
    return df.rename(columns={"date": "ts"}).assign(exchange="freqtrade", symbol=SYMBOL, timeframe="5m")


def _store(engine, frame: pd.DataFrame) -> None:
    store.upsert(engine, "candles", frame)


def operator_choice(engine, version: int) -> None:  # noqa: ANN001
    """An operator's choice to trade baseline `version` in every regime (the sample's champion loses to
    flat, and serving does not fall back to such a champion)."""
    registry.write_regime_choice(engine, SYMBOL, AS_OF, {
        r: {"model_type": "baseline", "version": version, "confidence": None, "tradeable": True,
            "reason": "an operator's choice"} for r in REGIMES})


def _train(url: str):
    """ETH/BTC up to CUT, a baseline version trained as of AS_OF, made champion and chosen in every regime
    by an operator: its walk-forward result loses to flat, so as the fallback for a regime without a
    choice it would be served flat (test_a_champion_that_loses_to_flat_is_not_the_fallback)."""
    engine = make_engine(url)
    settings = from_environ({"BRAIN_DATABASE_URL": url, "BRAIN_SIGNAL_MAX_AGE": str(10**10)})
    candles = _candles()
    _store(engine, candles[candles.ts < CUT])
    out = train.train_symbol(engine, settings, SYMBOL, "baseline", AS_OF)
    registry.pin_champion(engine, SYMBOL, "baseline", out.version, "test")
    operator_choice(engine, out.version)
    return engine, settings, registry.manifest(engine, SYMBOL, "baseline", out.version), candles


@pytest.fixture
def trained(brain_db_url):
    return _train(brain_db_url)


@pytest.fixture
def trained_sqlite(sqlite_url):
    from brain_tasks.brain.migrate import upgrade

    upgrade(sqlite_url)
    return _train(sqlite_url)


def _training_rows(engine, settings, manifest):
    X, _y = dataset_for(engine, settings, manifest)
    oos = registry.oos_frame(engine, manifest.oos_sha256)
    oos_ts = pd.DatetimeIndex(pd.to_datetime(oos["ts"], utc=True))
    model = serving.load_model(engine, manifest.artifact_sha256)
    final = pd.Series(model.predict(X[manifest.feature_names]), index=X.index)
    return X, oos.set_index(oos_ts), model, final


def test_every_out_of_sample_bar_is_served_exactly_as_trained(trained_sqlite):
    """Each bar of the version's out-of-sample block, computed by the serving code from the candles up
    to that bar only: the feature row is the training row bit for bit, the prediction the final
    model's, the regime training's label.  (The pure part; the database part runs on both backends
    below.)"""
    engine, settings, manifest, candles = trained_sqlite
    X, oos, model, final = _training_rows(engine, settings, manifest)
    config = ml.serve_config(manifest.config)
    stored = candles[candles.ts < CUT].reset_index(drop=True)
    assert len(oos) > 500
    for i, ts in enumerate(oos.index):
        upto = stored[stored.ts <= ts]
        rows = ml.model_rows(ml.feature_frame({"candles": upto}, config), manifest.feature_names, "baseline")
        assert rows.index[-1] == ts
        served, trained_row = rows.iloc[-1].to_numpy(), X.loc[ts, manifest.feature_names].to_numpy()
        assert np.array_equal(served.view(np.int64), trained_row.view(np.int64)), ts  # bit for bit
        assert ml.predict_last(model, rows) == final.loc[ts]
        if i % 10 == 0:
            assert ml.regime_at(upto, config) == oos.loc[ts, "regime"]


def test_every_out_of_sample_bar_is_served_from_its_bounded_window_exactly_as_trained(trained_sqlite):
    """The same from only the last `ml.required_history` candles up to each bar (what serving reads):
    the feature row bit for bit, the final model's prediction, training's regime label."""
    engine, settings, manifest, candles = trained_sqlite
    X, oos, model, final = _training_rows(engine, settings, manifest)
    config = ml.serve_config(manifest.config)
    rows = ml.required_history(config)
    stored = candles[candles.ts < CUT].reset_index(drop=True)
    # The feature windows start well after the training data's first bar (the regime's 2064 bars span
    # these six days: tests/ml/test_window_exact.py cuts those).
    assert len(stored) > ml.features.required_history(config.timeframe) + 1000
    for i, ts in enumerate(oos.index):
        window = stored[stored.ts <= ts].iloc[-rows:]
        served = ml.model_rows(ml.feature_frame({"candles": window}, config, 1), manifest.feature_names, "baseline")
        assert served.index[-1] == ts
        row, trained_row = served.iloc[-1].to_numpy(), X.loc[ts, manifest.feature_names].to_numpy()
        assert np.array_equal(row.view(np.int64), trained_row.view(np.int64)), ts
        assert ml.predict_last(model, served) == final.loc[ts]
        if i % 5 == 0:
            assert ml.regime_at(window, config) == oos.loc[ts, "regime"]


def test_served_signals_equal_training_and_later_bars_change_nothing(trained):
    engine, settings, manifest, candles = trained
    _X, oos, _model, final = _training_rows(engine, settings, manifest)
    oos_ts = oos.index
    # And through the database, the registry and the signals table, on a sample of those bars.
    picked = list(oos_ts[::97]) + [oos_ts[-1]]
    stamp = CUT.to_pydatetime()
    before = {ts: serving.predict(engine, settings, SYMBOL, at=ts, stamp=stamp) for ts in picked}
    for ts, signal in before.items():
        assert signal.ts == ts and signal.prediction == final.loc[ts]
        assert (signal.model_type, signal.version) == ("baseline", manifest.version)
        assert signal.artifact_sha256 == manifest.artifact_sha256

    # Appending later bars never changes an earlier bar's signal.
    _store(engine, candles)
    for ts, signal in before.items():
        again = serving.predict(engine, settings, SYMBOL, at=ts, stamp=stamp, record=False)
        assert again == signal


def test_a_bounded_window_serves_what_the_whole_history_would(trained, monkeypatch):
    """Bar after bar on 20 days of history (the serving window is 7 of them) with a two-day gap inside
    the window (it reaches further back for its rows) and the cache cut every few bars: each signal is
    the one computed from every candle since the training data began."""
    engine, settings, manifest, candles = trained
    monkeypatch.setattr(serving, "TRIM_SLACK", dt.timedelta(minutes=30))
    gap = (candles.ts >= pd.Timestamp("2018-01-22", tz="UTC")) & (candles.ts < pd.Timestamp("2018-01-24", tz="UTC"))
    _store(engine, candles[~gap])
    history = candles[~gap & (candles.ts >= pd.Timestamp(manifest.data_start))].reset_index(drop=True)
    config = ml.serve_config(manifest.config)
    assert len(history) > 2 * ml.required_history(config)
    model = serving.load_model(engine, manifest.artifact_sha256)
    for ts in history.ts.iloc[-60::4]:
        signal = serving.predict(engine, settings, SYMBOL, stamp=ts.to_pydatetime() + FIVE_MIN, record=False)
        upto = history[history.ts <= ts]
        rows = ml.model_rows(ml.feature_frame({"candles": upto}, config), manifest.feature_names, "baseline")
        assert signal.ts == ts and signal.prediction == ml.predict_last(model, rows)
        assert signal.regime == ml.regime_at(upto, config)
    markets = serving.server(engine).markets
    key = next(k for k in markets if k.symbol == SYMBOL)
    held = markets[key].frames["candles"]
    # What the process keeps is the window (and a day of events before it), not the history.
    assert len(held) < ml.required_history(config) + 2 * 288 + 24 < len(history) - 2000


def test_the_same_bar_twice_is_one_row_and_a_new_bar_a_new_one(trained):
    engine, settings, manifest, candles = trained
    last = candles[candles.ts < CUT].ts.iloc[-1].to_pydatetime()
    first = publish.publish_signals(engine, settings, [SYMBOL], stamp=last + FIVE_MIN)
    again = publish.publish_signals(engine, settings, [SYMBOL], stamp=last + FIVE_MIN + dt.timedelta(seconds=30))
    assert first["status"] == "succeeded" and first["new_rows"] == 1 and again["new_rows"] == 0
    rows = signal_rows.frame(engine, SYMBOL)
    assert len(rows) == 1 and rows.ts.iloc[0] == last
    assert rows.served_at.iloc[0] == pd.Timestamp(last + FIVE_MIN)  # the first record is kept

    _store(engine, candles[candles.ts == CUT])  # the next bar closes
    third = publish.publish_signals(engine, settings, [SYMBOL], stamp=CUT.to_pydatetime() + FIVE_MIN)
    assert third["new_rows"] == 1
    rows = signal_rows.frame(engine, SYMBOL)
    assert list(rows.ts) == [last, CUT]
    client = BrainClient(settings, app=object())
    latest = client.latest_signal(SYMBOL)
    assert latest is not None and latest.ts == CUT and latest.version == manifest.version
    # predict records the same decision it computes: no new row for a bar already published.
    served = client.predict(SYMBOL)
    assert dataclasses.replace(served, data_age_seconds=latest.data_age_seconds) == latest
    assert len(signal_rows.frame(engine, SYMBOL)) == 2


def test_stale_data_raises_and_publishes_a_stale_flat_signal(trained):
    engine, _settings, _manifest, candles = trained
    settings = from_environ({"BRAIN_DATABASE_URL": engine.url.render_as_string(hide_password=False)})
    last = candles[candles.ts < CUT].ts.iloc[-1].to_pydatetime()
    late = last + dt.timedelta(hours=1)  # eleven bars missed; the default limit is one bar
    with pytest.raises(StaleDataError) as info:
        serving.predict(engine, settings, SYMBOL, stamp=late)
    assert info.value.last_bar == last and info.value.age_seconds == 3300
    fresh = serving.predict(engine, settings, SYMBOL, stamp=last + FIVE_MIN + dt.timedelta(seconds=5))
    assert fresh.data_age_seconds == 5

    out = publish.publish_signals(engine, settings, [SYMBOL], stamp=late)
    assert list(out["stale"]) == [SYMBOL] and not out["published"]
    row = signal_rows.latest(engine, SYMBOL)
    assert row["stale"] and not row["tradeable"] and row["position"] == 0 and row["model_type"] == "flat"
    assert row["ts"] == late - FIVE_MIN  # the bar that should have closed, not the old one again
    assert "stale" in row["reason"] and row["data_age_seconds"] == 3300


def test_a_flat_or_untradeable_choice_gives_position_zero_and_says_why(trained):
    engine, settings, manifest, candles = trained
    last = candles[candles.ts < CUT].ts.iloc[-1]
    flat = {r: {"model_type": "flat", "version": None, "confidence": 0.4, "tradeable": False,
                "reason": "nothing beat doing nothing"} for r in REGIMES}
    registry.write_regime_choice(engine, SYMBOL, AS_OF, flat)
    signal = serving.predict(engine, settings, SYMBOL, at=last)
    assert (signal.model_type, signal.version, signal.position, signal.tradeable) == ("flat", None, 0, False)
    assert signal.prediction is None and "nothing beat doing nothing" in signal.reason
    assert signal.regime in REGIMES

    held = {r: {"model_type": "baseline", "version": manifest.version, "confidence": 0.51, "tradeable": False,
                "reason": "PSR below the bar"} for r in REGIMES}
    registry.write_regime_choice(engine, SYMBOL, AS_OF, held)
    signal = serving.predict(engine, settings, SYMBOL, at=last - FIVE_MIN)
    assert signal.model_type == "baseline" and signal.prediction is not None
    assert signal.position == 0 and signal.size == 0 and not signal.tradeable and signal.confidence == 0.51
    assert signal.reason.startswith("not tradeable") and "PSR below the bar" in signal.reason


def test_a_champion_that_loses_to_flat_is_not_the_fallback(trained):
    """With no per-regime choice for the bar's regime serving falls back to the champion, but not to one
    whose walk-forward result loses to flat: the chooser never trades such a model, so it is served flat
    with the reason (as `BrainClient.current_choice` marks it)."""
    engine, settings, manifest, candles = trained
    last = candles[candles.ts < CUT].ts.iloc[-1]
    registry.write_regime_choice(engine, SYMBOL, AS_OF, {})  # no choice: every regime falls back to the champion

    def overall(sharpe: float, total_return: float) -> None:
        registry.write_metrics(engine, SYMBOL, "baseline", manifest.version, "walk_forward", AS_OF,
                               {"all": {"sharpe": sharpe, "total_return": total_return}})

    overall(1.5, 0.04)
    signal = serving.Server(engine).predict(settings, SYMBOL, at=last, record=False)
    assert (signal.model_type, signal.version) == ("baseline", manifest.version) and signal.prediction is not None
    assert "champion baseline" in signal.reason and LOSES_TO_FLAT not in signal.reason
    assert [r.tradeable for r in overview_rows(engine, settings)] == ["trades"]  # the dashboard says the same

    overall(-2.0, -0.07)  # a new Server: a version's walk-forward verdict is read once per Server
    signal = serving.Server(engine).predict(settings, SYMBOL, at=last, record=False)
    assert (signal.model_type, signal.version, signal.position, signal.size) == ("flat", None, 0, 0.0)
    assert not signal.tradeable and signal.prediction is None
    assert LOSES_TO_FLAT in signal.reason and "champion baseline v1" in signal.reason
    assert signal.context["champion"] == ["baseline", manifest.version]
    assert BrainClient(settings, app=object()).current_choice(SYMBOL)["trade"] is False
    assert [r.tradeable for r in overview_rows(engine, settings)] == ["flat"]


def test_errors_are_typed(trained):
    engine, settings, _manifest, candles = trained
    with pytest.raises(NoDataError):
        serving.predict(engine, settings, "NOPE/BTC")
    with pytest.raises(NoDataError):  # before the model's training data began
        serving.predict(engine, settings, SYMBOL, at=candles.ts.iloc[0] - FIVE_MIN)
    # In the warm-up no regime is known yet, so the champion is the fallback; it loses to flat: served flat.
    warm = serving.predict(engine, settings, SYMBOL, at=candles.ts.iloc[10], record=False)
    assert (warm.model_type, warm.regime, warm.position) == ("flat", None, 0) and "warm-up" in warm.reason
    other = candles.assign(symbol="LTC/BTC").iloc[:50]
    _store(engine, other)
    with pytest.raises(NoModelError):
        serving.predict(engine, settings, "LTC/BTC", at=other.ts.iloc[-1])
    many = BrainClient(settings, app=object()).predict_many([SYMBOL, "LTC/BTC"])
    assert many[SYMBOL].symbol == SYMBOL and isinstance(many["LTC/BTC"], NoModelError)
    out = publish.publish_signals(engine, settings, [SYMBOL, "LTC/BTC", "NOPE/BTC"])
    assert SYMBOL in out["published"] and "LTC/BTC" in out["skipped"] and "NOPE/BTC" in out["failed"]


def test_live_metrics_join_signals_with_the_bars_that_followed(trained):
    engine, settings, manifest, candles = trained
    _store(engine, candles)
    after = candles[candles.ts >= CUT].ts.iloc[:40]
    for ts in after:  # the bar-close task, bar after bar
        publish.publish_signals(engine, settings, [SYMBOL], stamp=ts.to_pydatetime() + FIVE_MIN)
    summary = publish.track_live(engine, settings, dt.date(2018, 1, 17), [SYMBOL])
    assert summary == {SYMBOL: {f"baseline v{manifest.version}": 40}}
    live = registry.metrics_of(engine, SYMBOL, "baseline", manifest.version, evaluation="live")
    assert live["all"]["n_bars"] == 40 and {"sharpe", "max_drawdown", "psr"} <= set(live["all"])
    # The same numbers by hand: positions from the served predictions, returns after the one-bar lag.
    config = ml.serve_config(manifest.config)
    served = signal_rows.frame(engine, SYMBOL)
    close = candles.set_index("ts")["close"]
    nxt = close.shift(-2) / close.shift(-1) - 1.0
    pos = np.sign(served.prediction.to_numpy())
    strat = pos * nxt.loc[served.ts].to_numpy() - np.abs(np.diff(pos, prepend=0.0)) * config.cost_bps / 1e4
    assert live["all"]["total_return"] == pytest.approx(np.prod(1 + strat) - 1, rel=1e-9)


def test_importing_the_client_loads_no_ml_library():
    code = ("import sys, brain_tasks.client, brain_tasks.service.serving, brain_tasks.service.steps.publish;"
            "print(sorted(m for m in ('lightgbm', 'xgboost', 'torch', 'shap', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_features_computed_from_a_later_first_bar_are_the_same_bits():
    """Why serving may read a bounded window (see ml/serving.py): with `required_history` candles up to
    it, a bar's features and regime are the whole history's, bit for bit (tests/ml/test_window_exact.py
    checks every bar and adversarial data)."""
    from brain_tasks.ml.features import required_history

    candles = _candles().drop(columns=["exchange", "symbol", "timeframe"])
    full = make_features(candles, timeframe="5m").iloc[-1]
    tail = make_features(candles.iloc[-required_history("5m"):], timeframe="5m").iloc[-1]
    assert np.array_equal(full.to_numpy().view(np.int64), tail.to_numpy().view(np.int64))
    config = ml.serve_config({})
    assert ml.regime_at(candles, config) == ml.regime_at(candles.iloc[-ml.required_history(config):], config)


def test_cached_rows_never_serve_a_decision_the_stored_rows_would_not(trained, monkeypatch):
    """The per-process cache of old rows is checked by counts once per bar (a backfilled gap is seen at
    the next bar) and the fresh tail is re-read on every call (a rewritten recent bar is seen at once);
    an unchanged bar is not recomputed."""
    import sqlalchemy as sa

    from brain_tasks.brain.tables import Candle

    engine, settings, _manifest, candles = trained
    stored = candles[candles.ts < CUT]
    stamp = CUT.to_pydatetime() + FIVE_MIN
    gap = stored.iloc[-200]
    with engine.begin() as conn:
        conn.execute(sa.delete(Candle).where(Candle.symbol == SYMBOL, Candle.ts == gap.ts.to_pydatetime()))

    def fresh(when: dt.datetime) -> object:
        serving.server(engine).markets.clear()
        serving.server(engine).decisions.clear()
        return serving.predict(engine, settings, SYMBOL, stamp=when, record=False)

    first = serving.predict(engine, settings, SYMBOL, stamp=stamp, record=False)
    calls = []
    monkeypatch.setattr(ml, "feature_frame", lambda *a, _f=ml.feature_frame: calls.append(1) or _f(*a))
    assert serving.predict(engine, settings, SYMBOL, stamp=stamp, record=False) == first and not calls

    _store(engine, stored[stored.ts == gap.ts])  # the gap is backfilled: the bar already decided stays so
    assert serving.predict(engine, settings, SYMBOL, stamp=stamp, record=False) == first
    _store(engine, candles[candles.ts == CUT])  # the next bar closes: the old rows are counted again
    later = stamp + FIVE_MIN
    backfilled = serving.predict(engine, settings, SYMBOL, stamp=later, record=False)
    assert calls and backfilled == fresh(later)

    _store(engine, candles[candles.ts == CUT].assign(close=candles[candles.ts == CUT].close * 1.01))  # rewritten
    rewritten = serving.predict(engine, settings, SYMBOL, stamp=later, record=False)
    assert rewritten == fresh(later) and rewritten.prediction != backfilled.prediction


def test_brain_tasks_signals_lists_what_was_served(trained, monkeypatch):
    from click.testing import CliRunner

    from brain_tasks import cli

    engine, settings, _manifest, candles = trained
    last = candles[candles.ts < CUT].ts.iloc[-1].to_pydatetime()
    strict = from_environ({"BRAIN_DATABASE_URL": engine.url.render_as_string(hide_password=False)})
    publish.publish_signals(engine, settings, [SYMBOL], stamp=last + FIVE_MIN)
    publish.publish_signals(engine, strict, [SYMBOL], stamp=last + dt.timedelta(hours=1) + FIVE_MIN)
    monkeypatch.setattr(cli, "get_settings", lambda: strict)
    out = CliRunner().invoke(cli.main, ["signals", "--symbol", SYMBOL])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert len(lines) == 3 and "stale" in lines[1] and "baseline" in lines[2]
    assert "no signals yet" in CliRunner().invoke(cli.main, ["signals", "--symbol", "LTC/BTC"]).output


def test_bar_close_runs_at_each_close_of_the_timeframe_as_one_canvas():
    from celery.schedules import crontab

    from brain_tasks.schedule import beat_schedule
    from brain_tasks.workflows import bar_close_canvas

    entry = beat_schedule(from_environ({"BRAIN_SYMBOLS": "ETH/BTC,LTC/BTC"}))["bar-close"]
    assert entry["task"] == "brain_tasks.bar_close" and entry["schedule"] == crontab(minute="*/5")
    assert entry["kwargs"] == {"symbols": ["ETH/BTC", "LTC/BTC"]} and entry["options"]["expires"] == 300
    hourly = beat_schedule(from_environ({"BRAIN_TIMEFRAME": "1h"}))["bar-close"]["schedule"]
    assert hourly == crontab(minute=0, hour="*/1")
    every = beat_schedule(from_environ({"BRAIN_SIGNALS_EVERY": "3"}))["bar-close"]["schedule"]
    assert every == dt.timedelta(seconds=3)
    canvas = bar_close_canvas(["ETH/BTC", "LTC/BTC"])  # collect both bars, then publish both signals
    assert [t.task for t in canvas.tasks] == ["brain_tasks.collect_candles"] * 2
    assert canvas.body.task == "brain_tasks.publish_signals" and canvas.body.immutable
    assert canvas.body.args == (["ETH/BTC", "LTC/BTC"],)


def test_a_bar_missing_at_the_close_gets_a_stale_signal_not_the_previous_one(trained):
    engine, _settings, _manifest, candles = trained
    strict = from_environ({"BRAIN_DATABASE_URL": engine.url.render_as_string(hide_password=False)})
    last = candles[candles.ts < CUT].ts.iloc[-1].to_pydatetime()
    on_time = publish.publish_signals(engine, strict, [SYMBOL], stamp=last + FIVE_MIN + dt.timedelta(seconds=3))
    assert list(on_time["published"]) == [SYMBOL]
    # The next close passes and its bar was not collected: 3 s later the bar-close task says so.
    late = publish.publish_signals(engine, strict, [SYMBOL], stamp=last + 2 * FIVE_MIN + dt.timedelta(seconds=3))
    assert list(late["stale"]) == [SYMBOL] and late["new_rows"] == 1
    assert signal_rows.latest(engine, SYMBOL)["ts"] == last + FIVE_MIN
