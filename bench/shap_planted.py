"""Why mean |SHAP| missed a planted feature, and what the tree models' defaults do about it.

Run with ``python bench/shap_planted.py`` (about five minutes on a shared 2-core machine;
``--seeds 2`` and ``--pairs ETH`` for a quick look).

Part 1, a planted market (``tests.planted_volume.planted_volume_candles``: the log volume carries an AR(1)
state, phi 0.8, that moves the next 5m return by 0.3 of its noise; 20 days of 5m bars, the sample's
length).  Per model type, parameter set and seed, the default ``TrainConfig`` otherwise: the rank of
the best planted feature (``vol_z_48`` / ``vol_z_288``) by out-of-sample permutation and by stored
mean |SHAP| (both out of sample: each walk-forward fold's model on its own test block), the feature
mean |SHAP| put first, and the out-of-sample Sharpe.

Part 2, the real sample (ten BTC-quoted pairs, 20 days each): the same two parameter sets'
out-of-sample metrics per model type, so the change of defaults is priced on real data too.

Parameter sets: ``before`` are the defaults before this benchmark (lightgbm 150 rounds at 0.05,
15 leaves, 100 rows per leaf; xgboost 150 rounds at 0.05, depth 4, min_child_weight 50);
``current`` is ``brain_tasks.ml.models.DEFAULT_PARAMS``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # after OMP_NUM_THREADS is set
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEFORE = {
    "lightgbm": {"num_boost_round": 150, "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 100},
    "xgboost": {"num_boost_round": 150, "eta": 0.05, "max_depth": 4, "min_child_weight": 50},
}
PAIRS = ("ADA", "DASH", "ETC", "ETH", "LTC", "NXT", "TRX", "XLM", "XMR", "ZEC")


def _config(model_type: str, params: str):
    from brain_tasks.ml.pipeline import TrainConfig

    if params == "current":
        return TrainConfig()
    return TrainConfig(**{f"{model_type}_params": BEFORE[model_type]})


def _rank(imp: pd.DataFrame, method: str, features: tuple[str, ...]) -> tuple[int, str]:
    rows = imp[imp["method"] == method].reset_index(drop=True)
    best = int(rows[rows["feature"].isin(features)]["rank"].min())
    return best, str(rows.iloc[0]["feature"])


def _fold_leaders() -> list[list[str]]:
    """Record, per training, each fold's own mean-|SHAP| leader: the folds' importance frames as the
    pipeline hands them to `aggregate_importance` (a bench-only wrapper; nothing else changes)."""
    from brain_tasks.ml import pipeline

    leaders: list[list[str]] = []
    aggregate = pipeline.aggregate_importance

    def recording(folds):  # noqa: ANN001, ANN202
        leaders.append([str(f[f["method"] == "shap"].sort_values("importance", ascending=False)["feature"].iloc[0])
                        for f in folds])
        return aggregate(folds)

    pipeline.aggregate_importance = recording
    return leaders


def planted(models: list[str], seeds: int, n: int) -> None:
    from brain_tasks.ml.pipeline import train_and_evaluate
    from tests.planted_volume import PLANTED_FEATURES, planted_volume_candles

    leaders = _fold_leaders()

    print(f"\nplanted volume signal, {n} 5m bars ({n / 288:.0f} days), default TrainConfig; rank = best rank of "
          f"{'/'.join(PLANTED_FEATURES)}")
    header = (f"{'model':<9} {'params':<8} {'seed':>4} {'perm rank':>9} {'SHAP rank':>9} {'SHAP first':<12} "
              f"{'OOS Sharpe':>10}  SHAP first per fold (training rows grow fold by fold)")
    print(header)
    print("-" * len(header))
    summary = []
    for model_type in models:
        for params in ("before", "current"):
            firsts, sharpes = [0, 0], []
            for seed in range(seeds):
                result = train_and_evaluate(planted_volume_candles(n, seed), model_type, _config(model_type, params))
                perm, _ = _rank(result.importance, "permutation", PLANTED_FEATURES)
                shap, shap_first = _rank(result.importance, "shap", PLANTED_FEATURES)
                firsts[0] += perm == 1
                firsts[1] += shap == 1
                sharpes.append(result.metrics["sharpe"])
                folds = ", ".join(f"{name}({fold['n_train']})" for name, fold in zip(leaders[-1], result.folds))
                print(f"{model_type:<9} {params:<8} {seed:>4} {perm:>9} {shap:>9} {shap_first:<12} "
                      f"{result.metrics['sharpe']:>10.2f}  {folds}", flush=True)
            summary.append((model_type, params, firsts, float(np.median(sharpes))))
    print(f"\n{'model':<9} {'params':<8} {'planted first: perm':>20} {'SHAP':>6} {'median OOS Sharpe':>18}")
    for model_type, params, (perm, shap), sharpe in summary:
        print(f"{model_type:<9} {params:<8} {f'{perm} of {seeds}':>20} {f'{shap} of {seeds}':>6} {sharpe:>18.2f}")


def sample(models: list[str], pairs: list[str]) -> None:
    from brain_tasks.ml.pipeline import train_and_evaluate

    print(f"\nthe real sample: {len(pairs)} BTC-quoted pairs, default TrainConfig, out-of-sample walk-forward")
    header = (f"{'model':<9} {'params':<8} {'median Sharpe':>13} {'Sharpe > 0':>10} {'mean return':>11} "
              f"{'mean maxDD':>10} {'CPU s':>6}")
    print(header)
    print("-" * len(header))
    for model_type in models:
        for params in ("before", "current"):
            rows, c0 = [], time.process_time()
            for base in pairs:
                candles = pd.read_feather(ROOT / "sample" / "freqtrade-testdata" / f"{base}_BTC-5m.feather")
                result = train_and_evaluate(candles.rename(columns={"date": "ts"}), model_type,
                                            _config(model_type, params), with_importance=False)
                rows.append(result.metrics)
            m = pd.DataFrame(rows)
            print(f"{model_type:<9} {params:<8} {m['sharpe'].median():>13.2f} "
                  f"{f'{(m.sharpe > 0).sum()} of {len(m)}':>10} {m['total_return'].mean():>11.2%} "
                  f"{m['max_drawdown'].mean():>10.2%} {time.process_time() - c0:>6.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lightgbm,xgboost")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--bars", type=int, default=5760)
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--skip-sample", action="store_true")
    args = parser.parse_args()
    from brain_tasks.ml.models import DEFAULT_PARAMS

    models = args.models.split(",")
    for m in models:
        print(f"{m} current defaults: {DEFAULT_PARAMS[m]}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, one thread")
    planted(models, args.seeds, args.bars)
    if not args.skip_sample:
        sample(models, args.pairs.split(","))


if __name__ == "__main__":
    main()
