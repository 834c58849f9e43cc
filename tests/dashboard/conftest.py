"""A small Brain for the dashboard tests: the report's fixture (champion, rejected versions, candidates,
drift, findings, a failed run) plus metrics, a champion history, 60 symbols of candles for paging and a finished replay
(tests/replay_rows.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from brain_tasks.brain.tables import (Base, Candle, ChampionHistory, ModelComparison, ModelMetric, ModelRegistry,
                                      SignalAudit, SignalRecord)
from brain_tasks.settings import Settings
from tests.replay_rows import write_replay
from tests.test_report import BTC, DAY1, DAY2, ETH, STAMP, build_brain

AUTH, TOKEN = "operator:correct horse", "t0ken-for-tests"
UTC = dt.timezone.utc
N_EXTRA = 60


def extra_symbol(i: int) -> str:
    return f"X{i:03d}/USDT"


def build_dashboard_brain(engine: sa.Engine) -> None:
    brain = build_brain(engine)
    metrics = [dict(symbol=BTC, model_type="lightgbm", version=1, evaluation="walk_forward", regime="all",
                    metric=name, value=value, as_of=DAY1)
               for name, value in (("sharpe", 0.1), ("total_return", -0.143), ("max_drawdown", -0.21))]
    metrics.append(dict(metrics[0], evaluation="live", value=-0.4))
    brain.add(ModelMetric, metrics)
    brain.add(ChampionHistory, [dict(symbol=BTC, event_id="promote:2024-03-01:c0ffee", action="promote",
                                     model_type="lightgbm", version=1, from_model_type=None, from_version=None,
                                     as_of=DAY1, reason="no champion yet: first version", evidence={},
                                     created_at=STAMP)])
    brain.add(ModelComparison, [dict(symbol=ETH, as_of=DAY2, config_hash="c0ffee", model_type="buy_and_hold",
                                     version=0, composite_score=0.0, rank=3, is_best=False,
                                     metrics={"total_return": 0.05, "max_drawdown": -0.08, "sharpe": 0.7})])
    # ETH becomes a champion too, with a better Sharpe than BTC's.
    with engine.begin() as conn:
        conn.execute(sa.update(ModelRegistry).where(ModelRegistry.symbol == ETH, ModelRegistry.model_type == "xgboost")
                     .values(status="champion"))
    brain.add(ModelMetric, [dict(symbol=ETH, model_type="xgboost", version=1, evaluation="walk_forward", regime="all",
                                 metric=name, value=value, as_of=DAY2)
                            for name, value in (("sharpe", 0.9), ("total_return", 0.02), ("max_drawdown", -0.05))])
    # BTC's newest signal was out of distribution, and the nightly audit found one served signal differs.
    bar = STAMP.replace(minute=0, second=0, microsecond=0)
    brain.add(SignalRecord, [dict(symbol=BTC, ts=bar, model_type="lightgbm", version=1, regime="high", prediction=0.001,
                                  position=0, size=0.0, confidence=0.7, tradeable=False, stale=False,
                                  reason="not tradeable: inputs outside the training distribution (dissimilarity "
                                         "1.70): vol_z_48 +9.1 sd", artifact_sha256=None, data_age_seconds=3.0,
                                  served_at=bar, in_distribution=False, dissimilarity=1.7,
                                  model_age_seconds=90_000.0, context=None)])
    brain.add(SignalAudit, [dict(symbol=BTC, ts=bar, model_type="lightgbm", version=1, served_at=bar,
                                 audited_at=STAMP, same=False, differences=[{"field": "prediction", "served": 0.001,
                                                                             "now": 0.002}],
                                 corrections=[{"kind": "candles", "ts": bar.isoformat(), "field": "close",
                                               "served": 1.0, "now": 1.1}],
                                 note=f"differs: prediction; rows changed since serving: candles {bar.isoformat()} close")])
    now = dt.datetime.now(UTC).replace(second=0, microsecond=0)
    brain.add(Candle, [dict(exchange="binance", symbol=extra_symbol(i), timeframe="5m",
                            ts=now - dt.timedelta(minutes=5 * i), open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0)
                       for i in range(N_EXTRA)])
    write_replay(engine)


@pytest.fixture
def dash_url(tmp_path: Path) -> Iterator[str]:
    from brain_tasks.brain.db import dispose_engine

    url = f"sqlite:///{tmp_path / 'dash.db'}"
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    build_dashboard_brain(engine)
    engine.dispose()
    yield url
    dispose_engine(url)


@pytest.fixture
def dash_settings(dash_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=dash_url, exchange="binance", home=tmp_path / "home", dashboard_auth=AUTH,
                    dashboard_token=TOKEN)
