"""Planted market (a) of the replay: which model type earns what in which volatility regime, and what the
Brain does with it.

Run with ``python bench/planted_regimes.py`` (about two minutes on one core; ``--no-replay`` for the first
table only).  Seeded: the same command prints the same tables.  Prints:
- per seed of `tests.planted.model_specific_edges` (55 days), each model type's walk-forward
  out-of-sample Sharpe per regime (`ml.pipeline.train_and_evaluate`, the chain's own training, run on
  the whole history) and what `ml.regimes.select_per_regime` chooses per regime, with the DSR;
- the replay of tests/test_replay_planted.py::test_a (6 symbols, seeds 400-405, 6 daily steps,
  baseline and lightgbm, default settings): the pooled table of every policy (Sharpe, HAC p-value of
  the difference against brain, time in market), how often brain chose each model per regime over the
  (symbol, step) pairs, and each policy's pooled return per regime.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from brain_tasks.ml.metrics import bars_per_year  # noqa: E402
from brain_tasks.ml.pipeline import TrainConfig, train_and_evaluate  # noqa: E402
from brain_tasks.ml.regimes import REGIMES, select_per_regime, volatility_regimes  # noqa: E402
from bench.markdown import table  # noqa: E402
from tests import planted  # noqa: E402

MODELS = ("baseline", "lightgbm")
DAYS = 55
PPY = bars_per_year("5m")


def walk_forward(seeds: list[int]) -> None:
    rows = []
    for seed in seeds:
        candles, _ = planted.model_specific_edges(seed, DAYS)
        oos, per_regime = {}, {}
        for m in MODELS:
            result = train_and_evaluate(candles, m, TrainConfig(timeframe="5m", seed=42), with_importance=False)
            oos[m] = result.oos
            per_regime[m] = result.regime_metrics
        choice = select_per_regime(oos, periods_per_year=PPY)
        rows.append([str(seed)] + [" / ".join(f"{per_regime[m][r]['sharpe']:.0f}" for m in MODELS) for r in REGIMES]
                    + [" ".join(f"{choice[r]['model']} ({choice[r]['confidence']:.2f})" for r in ("low", "normal", "high"))])
    table(f"Walk-forward out-of-sample Sharpe per regime, {DAYS} days (baseline / lightgbm), and the choice (DSR)",
           ["seed", *REGIMES, "chosen in low, normal, high (DSR)"], rows)


def replay() -> None:
    from brain_tasks.brain import replays, store
    from brain_tasks.brain.db import make_engine
    from brain_tasks.brain.migrate import upgrade
    from brain_tasks.settings import from_environ
    from tests.replay_chain import run_replay

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/brain.db"
        upgrade(url)
        engine, settings = make_engine(url), from_environ({"BRAIN_DATABASE_URL": url})
        symbols = [f"TYPE{i}/USD" for i in range(6)]
        regimes = {}
        for i, s in enumerate(symbols):
            frame, _ = planted.model_specific_edges(400 + i, DAYS)
            store.upsert(engine, "candles", frame.assign(exchange="freqtrade", symbol=s, timeframe="5m"))
            regimes[s] = volatility_regimes(frame, window=48, lookback=2016)
        plan, _, _ = run_replay(engine, settings, symbols, list(MODELS), "2024-02-19", "2024-02-24")
        pooled = replays.get_replay(engine, plan.replay_id)["summary"]["pooled"]["policies"]
        table("Replay of test_a: pooled policies (6 symbols x 6 daily steps, 2024-02-19..24)",
               ["policy", "Sharpe", "HAC p vs brain (two-sided)", "p (brain higher)", "time in market"],
               [[p, f"{m['sharpe']:.1f}", f"{m['p_value']:.2g}" if m.get("p_value") is not None else "-",
                 f"{m['p_greater']:.2g}" if m.get("p_greater") is not None else "-", f"{m['time_in_market']:.2f}"]
                for p, m in sorted(pooled.items(), key=lambda kv: -kv[1]["sharpe"])])
        decided = replays.decisions(engine, plan.replay_id, policy="brain")
        chosen = Counter((r, d["choices"][r]["model_type"]) for d in decided for r in REGIMES)
        names = sorted({m for _, m in chosen})
        table(f"brain's choice per regime over {len(decided)} (symbol, step) pairs", ["regime", *names],
               [[r, *(str(chosen[(r, m)]) for m in names)] for r in REGIMES])
        sums: dict[tuple[str, str], float] = Counter()
        for s in symbols:
            rets = replays.returns(engine, plan.replay_id, s)
            for p, r in rets.items():
                r = r.dropna()
                label = regimes[s].reindex(r.index)
                for regime in REGIMES:
                    sums[(p, regime)] += float(r[label == regime].sum()) / len(symbols)
        policies = ["brain", "newest:baseline", "newest:lightgbm", "best_composite"]
        table("Pooled (equal-weight) sum of net returns per regime", ["regime", *policies],
               [[regime, *(f"{sums[(p, regime)]:+.3f}" for p in policies)] for regime in REGIMES])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5,6,300,301,302,303,304,305")
    parser.add_argument("--no-replay", action="store_true")
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    np.set_printoptions(linewidth=200)
    walk_forward([int(s) for s in args.seeds.split(",")])
    if not args.no_replay:
        replay()


if __name__ == "__main__":
    main()
