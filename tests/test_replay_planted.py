"""Seeded planted markets through a whole replay (in process, SQLite): what the Brain does when an edge
flips sign, and when there is no edge at all.

(b) A linear edge on a hidden state the volume reveals flips sign at a date (`tests/planted.py`): from
    the second step whose versions saw the flipped market on (the evidence rule delays the first by one
    step), `brain` is flat in every regime, and its drawdown on the bars after the flip is smaller than
    `newest:baseline`'s.
(c) Pure noise (the synthetic market, whose returns nothing predicts): `brain` is flat on most bars, no
    policy beats `flat` significantly (one-sided HAC Sharpe test, 5%), and the PBO lies in [0.3, 0.7].
    One replay's PBO is a noisy number: with about 8 policies it lands in [0.3, 0.7] only about half the
    time on noise (`bench/replay_stats.py`), so the test checks the mean of the per-symbol PBOs of six
    independent noise symbols (sd about 0.1) and reports the pooled one.  The symbols' seeds were fixed
    before the first run, not chosen for the outcome.

(a) One model type's edge per regime (`tests/planted.py: model_specific_edges`): in the 'low' regime a
    linear edge along the difference of two features that agree 90% of the time (volume's z-score and the
    close's place in the bar's range), which a linear model reads with two coefficients and an
    axis-aligned tree only by a staircase of splits; in the other regimes a threshold on |x| (the volume
    state) that no linear function represents.  `brain` chooses `baseline` in 'low' and `lightgbm` in
    'normal' and 'high' on most (symbol, step) pairs, never the other type there, and its pooled Sharpe
    beats `newest:baseline`, `newest:lightgbm` and `best_composite`, each with the replay's own HAC
    p-value < 0.05.  Default settings (DSR level 0.95, 288 evidence bars): no setting variant is needed,
    because the history is long enough (55 days, 6 symbols) for the walk-forward evidence per regime to
    pass the deflated gate.  The edges are strong (planted Sharpe ratios far above any real market's):
    the test checks the selection, not that such edges exist.  The generator's parameters were tuned on
    other seeds (1-6, 300-305; `bench/planted_regimes.py` prints the per-regime figures); the test's
    seeds 400-405 were fixed before its first run.  Why earlier attempts failed: docs/replay.md.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from brain_tasks.brain import replays, store
from brain_tasks.brain.db import make_engine
from brain_tasks.brain.migrate import upgrade
from brain_tasks.market.synthetic import SyntheticSource
from brain_tasks.ml.metrics import bars_per_year
from brain_tasks.ml.regimes import REGIMES
from brain_tasks.ml.replay import sharpe_difference_test
from brain_tasks.settings import from_environ
from tests import planted
from tests.replay_chain import run_replay


@pytest.fixture
def brain(tmp_path):  # noqa: ANN001
    url = f"sqlite:///{tmp_path / 'brain.db'}"
    upgrade(url)
    return make_engine(url), from_environ({"BRAIN_DATABASE_URL": url})


def _drawdown(returns: pd.Series) -> float:
    equity = np.exp(np.cumsum(np.log1p(returns.fillna(0.0).to_numpy())))
    return float((equity / np.maximum.accumulate(equity) - 1.0).min())


def test_b_when_the_edge_flips_brain_goes_flat_and_loses_less_than_newest(brain):
    engine, settings = brain
    flip_day = 11  # 2024-01-12
    flip = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=flip_day)
    symbols = ["FLIP1/USD", "FLIP2/USD"]
    for i, s in enumerate(symbols):
        frame = planted.flipping_edge(200 + i, 15, flip_day=flip_day)
        store.upsert(engine, "candles", frame.assign(exchange="freqtrade", symbol=s, timeframe="5m"))
    plan, result, _ = run_replay(engine, settings, symbols, ["baseline"], "2024-01-10", "2024-01-14")
    assert result["state"] == "succeeded"
    # The evidence rule allows one step of delay: the first version that saw the flipped day has only
    # 275 paired bars against the champion (< BRAIN_MIN_EVIDENCE_BARS = 288), so it is not promoted, it is
    # rejected, and the champion stands in for it in the selection (`steps.choose.selection_candidates`:
    # the evidence of the step before, so the previous choice stands); the next step's has two days, is
    # promoted, and its per-regime selection finds nothing to trade.
    for d in replays.decisions(engine, plan.replay_id, policy="brain"):
        if pd.Timestamp(d["as_of"], tz="UTC") >= flip + pd.Timedelta(days=1):
            assert {d["choices"][r]["model_type"] for r in REGIMES} == {"flat"}, d
    pooled = replays.returns(engine, plan.replay_id)
    after = {p: r[r.index >= flip] for p, r in pooled.items()}
    brain_dd, newest_dd = _drawdown(after["brain"]), _drawdown(after["newest:baseline"])
    assert brain_dd > newest_dd and newest_dd < -0.05, (brain_dd, newest_dd)


def test_c_on_noise_brain_stays_flat_nothing_beats_flat_and_pbo_is_near_one_half(brain):
    engine, settings = brain
    src = SyntheticSource(7, start="2024-01-01", end="2024-01-13")
    symbols = [f"N{i}/USD" for i in range(6)]
    for s in symbols:
        store.upsert(engine, "candles", src.fetch_candles(s, "5m").assign(exchange="freqtrade", symbol=s,
                                                                          timeframe="5m"))
    plan, result, _ = run_replay(engine, settings, symbols, ["baseline", "lightgbm"], "2024-01-10", "2024-01-12")
    assert result["state"] == "succeeded"
    shown = replays.get_replay(engine, plan.replay_id)["summary"]
    assert shown["pooled"]["policies"]["brain"]["time_in_market"] < 0.5
    pooled = replays.returns(engine, plan.replay_id)
    ppy = bars_per_year(settings.timeframe)
    for policy, r in pooled.items():
        if policy != "flat":
            test = sharpe_difference_test(r.dropna(), pooled["flat"].dropna(), ppy)
            assert test.p_greater > 0.05, (policy, test)
    per_symbol = [shown["symbols"][s]["pbo"]["pbo"] for s in symbols]
    assert 0.3 <= float(np.mean(per_symbol)) <= 0.7, (per_symbol, shown["pooled"]["pbo"])


def test_a_each_type_is_chosen_in_the_regime_of_its_edge_and_brain_beats_every_single_policy(brain):
    engine, settings = brain
    symbols = [f"TYPE{i}/USD" for i in range(6)]
    for i, s in enumerate(symbols):
        frame, _ = planted.model_specific_edges(400 + i, 55)
        store.upsert(engine, "candles", frame.assign(exchange="freqtrade", symbol=s, timeframe="5m"))
    plan, result, _ = run_replay(engine, settings, symbols, ["baseline", "lightgbm"], "2024-02-19", "2024-02-24")
    assert result["state"] == "succeeded"
    decided = replays.decisions(engine, plan.replay_id, policy="brain")
    chosen = Counter((r, d["choices"][r]["model_type"]) for d in decided for r in REGIMES)
    n = len(decided)
    assert n == len(symbols) * len(plan.steps)
    for regime, carrier, other in (("low", "baseline", "lightgbm"), ("normal", "lightgbm", "baseline"),
                                   ("high", "lightgbm", "baseline")):
        assert chosen[(regime, carrier)] > n / 2 and chosen[(regime, other)] == 0, sorted(chosen.items())
    assert chosen[("extreme", "baseline")] == 0, sorted(chosen.items())
    pooled = replays.get_replay(engine, plan.replay_id)["summary"]["pooled"]["policies"]
    for rival in ("newest:baseline", "newest:lightgbm", "best_composite"):
        assert pooled["brain"]["sharpe"] > pooled[rival]["sharpe"] and pooled[rival]["p_value"] < 0.05, \
            (rival, pooled["brain"]["sharpe"], pooled[rival])
