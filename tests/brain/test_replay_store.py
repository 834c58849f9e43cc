"""brain/replays.py: idempotent writes and the read API, on PostgreSQL and SQLite; the origin mark."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from brain_tasks.brain import replays
from brain_tasks.brain.db import make_engine
from brain_tasks.ml.replay import pack_returns
from brain_tasks.vocabulary import Action, Status

T0 = dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)


def _rows(replay_id: str) -> tuple[list[dict], list[dict]]:
    decisions = [dict(replay_id=replay_id, symbol="AAA", step=k, policy=p, as_of=dt.date(2024, 1, k),
                      step_end=T0 + dt.timedelta(days=k - 1),
                      choices={"low": {"model_type": "baseline", "version": k}, "*": {"model_type": "flat",
                                                                                       "version": None}},
                      action=Action.PROMOTE if p == "brain" else Action.NONE, reason="why", details={"n": k})
                 for k in (1, 2) for p in ("brain", "flat")]
    idx = pd.date_range(T0, periods=50, freq="5min", tz="UTC")
    r = pd.Series(np.random.default_rng(0).normal(0, 1e-3, 50), index=idx)
    results = [dict(replay_id=replay_id, symbol=s, policy=p, metrics={"sharpe": 1.5, "p_value": float("nan")},
                    n_bars=50, inputs="d", returns=pack_returns(r), positions=pack_returns(pd.Series(1.0, index=idx)))
               for s in ("AAA", replays.POOLED) for p in ("brain", "flat")]
    return decisions, results


def test_writes_are_idempotent_and_reads_round_trip(brain_db_url: str) -> None:
    engine = make_engine(brain_db_url)
    rid = "replay-2024-01-01-2024-01-02-abc"
    assert replays.save_replay(engine, replay_id=rid, symbols=["AAA"], models=["baseline"], start=dt.date(2024, 1, 1),
                               end=dt.date(2024, 1, 2), every="1d", grid={"dsr_level": [0.9]}, config_hash="c" * 64,
                               params={"steps": 2}, state=Status.PENDING)
    assert not replays.save_replay(engine, replay_id=rid, symbols=["AAA"], models=["baseline"],
                                   start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 2), every="1d", grid={},
                                   config_hash="c" * 64, params={}, state=Status.PENDING)
    decisions, results = _rows(rid)
    assert replays.write_decisions(engine, decisions) == 4
    assert replays.write_results(engine, results) == 4
    assert replays.write_decisions(engine, decisions) == 0  # a re-run writes the same rows
    assert replays.write_results(engine, results) == 0
    replays.set_state(engine, rid, Status.OK, summary={"pooled": {"pbo": {"pbo": 0.4}, "dsr": {"dsr": 0.3,
                                                                                              "best": "brain"}}},
                      finished=True)
    got = replays.get_replay(engine, rid)
    assert got["state"] == Status.OK and got["grid"] == {"dsr_level": [0.9]} and got["finished_at"]
    listed = replays.list_replays(engine)
    assert [x["replay_id"] for x in listed] == [rid] and listed[0]["headline"]["pbo"] == 0.4
    assert len(replays.decisions(engine, rid)) == 4
    assert len(replays.decisions(engine, rid, policy="brain")) == 2
    table = replays.decision_table(engine, rid, policy="brain")
    assert {t["regime"] for t in table} == {"low", "*"} and table[0]["step"] == "2024-01-01"
    assert set(table[0]) == {"symbol", "step", "step_index", "policy", "regime", "model_type", "version", "action",
                             "reason"}
    res = replays.results(engine, rid, symbol=replays.POOLED)
    assert {r["policy"] for r in res} == {"brain", "flat"} and res[0]["metrics"]["p_value"] is None
    back = replays.returns(engine, rid, "AAA")
    assert set(back) == {"brain", "flat"} and len(back["brain"]) == 50
    np.testing.assert_allclose(back["brain"].to_numpy(),
                               pd.Series(np.random.default_rng(0).normal(0, 1e-3, 50)).to_numpy(), rtol=1e-6)
    curves = replays.curves(engine, rid, "AAA", max_points=10)
    assert len(curves["flat"]) <= 10
    assert replays.get_replay(engine, "nope") is None
