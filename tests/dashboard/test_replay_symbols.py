"""A symbol known only through a replay (its versions have origin 'replay', its attempt kind 'replay')
is not in the dashboard's symbol list, as the registry views already leave replay versions out (real
PostgreSQL and SQLite)."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient

from brain_tasks.brain import dashboard_views as dv
from brain_tasks.brain import runs
from brain_tasks.brain.db import make_engine
from brain_tasks.dashboard import create_app
from brain_tasks.service.steps import train
from brain_tasks.settings import Settings, from_environ
from brain_tasks.vocabulary import Origin
from tests.test_jobs import _load

DAY = dt.date(2018, 1, 20)
TOKEN = "t" * 32


def test_replay_only_symbols_are_not_listed(brain_db_url, tmp_path):
    engine = make_engine(brain_db_url)
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url})
    for symbol in ("ETH/BTC", "LTC/BTC"):
        _load(engine, symbol, end="2018-01-21")
    assert train.train_symbol(engine, settings, "ETH/BTC", "baseline", DAY).ok
    assert train.train_symbol(engine, settings, "LTC/BTC", "baseline", DAY, origin=Origin.REPLAY).ok
    runs.start_attempt(engine, "replay-x", "attempt-x", Origin.REPLAY, DAY, ["LTC/BTC"], ["baseline"],
                       dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    runs.start_attempt(engine, "retrain-x", "attempt-y", "retrain", DAY, ["ETH/BTC"], ["baseline"],
                       dt.datetime(2030, 1, 1, tzinfo=dt.UTC))

    assert dv.symbols_with_versions(engine) == ["ETH/BTC"]
    assert list(dv.last_run_states(engine)) == ["ETH/BTC"]
    # Another exchange's settings: no candles of these symbols count, only what the Brain did with them.
    client = TestClient(create_app(Settings(database_url=brain_db_url, exchange="binance", home=tmp_path / "h",
                                            dashboard_token=TOKEN)))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/symbols", headers=auth).json() == ["ETH/BTC"]
    assert [r["symbol"] for r in client.get("/api/overview", headers=auth).json()["rows"]] == ["ETH/BTC"]
    assert client.get("/api/symbols/ETH/BTC", headers=auth).json()["versions"]
    page = client.get("/", headers=auth).text
    assert "ETH/BTC" in page and "LTC/BTC" not in page
