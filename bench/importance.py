"""What out-of-sample importance costs next to training, per model type, at two sizes.

Run with ``python bench/importance.py`` (about two minutes on one core; ``--sizes small`` for the
sample symbol only).  Sizes: ``small`` = the sample's ETH/BTC (5,760 5m candles, the size of a
symbol in the fan-out benchmarks), ``large`` = ~105,000 5m bars of the seeded synthetic market with
funding, open interest and liquidations (a year of 5m, as bench/train.py).  Per (size, model type),
in one process with one thread: CPU seconds of ``train_and_evaluate(with_importance=False)``
(training: 5 walk-forward fits + the final fit + metrics), the CPU seconds the importance adds
(``TrainResult.importance_cpu_s``, measured around the fold_importance calls), and their ratio.
The goal (issue 16) is a ratio <= 0.5 summed over the fan-out; ``baseline`` is the model a
1000-symbol fan-out uses.

``--tasks`` also runs ``service.steps.train.train_symbol`` (in process, on a throwaway PostgreSQL) for every sample
pair and model type, and sums what each task returns: its CPU (reading, features, training,
importance, writing) and of it the importance, i.e. the fan-out profile of one nightly.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd  # after OMP_NUM_THREADS is set

ROOT = Path(__file__).resolve().parents[1]
LARGE_BARS = 105_000
SEED = 7


def _small() -> dict:
    candles = pd.read_feather(ROOT / "sample" / "freqtrade-testdata" / "ETH_BTC-5m.feather")
    return {"candles": candles.rename(columns={"date": "ts"})}


def _large() -> dict:
    from brain_tasks.market.synthetic import SyntheticSource

    symbol = "BENCH/USDT:USDT"
    start = pd.Timestamp("2024-01-01", tz="UTC")
    source = SyntheticSource(SEED, start=start, end=start + pd.Timedelta(minutes=5 * LARGE_BARS))
    return {"candles": source.fetch_candles(symbol, "5m"), "funding": source.fetch_funding(symbol),
            "open_interest": source.fetch_open_interest(symbol, "5m"),
            "liquidations": source.fetch_liquidations(symbol)}


def measure(market: dict, model_type: str, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` training CPU without importance, and the importance CPU of a run with it."""
    from brain_tasks.ml.pipeline import TrainConfig, build_dataset, train_and_evaluate

    config = TrainConfig()
    kwargs = {k: v for k, v in market.items() if k != "candles"}
    dataset = build_dataset(market["candles"], config, **kwargs)
    train, imp, recorded_train = [], [], []
    for _ in range(repeats):
        c0 = time.process_time()
        train_and_evaluate(market["candles"], model_type, config, **kwargs, with_importance=False, dataset=dataset)
        train.append(time.process_time() - c0)
        c0 = time.process_time()
        result = train_and_evaluate(market["candles"], model_type, config, **kwargs, with_importance=True,
                                    dataset=dataset)
        total = time.process_time() - c0
        # Older results have no cost fields: fall back to the difference of the two runs.
        imp.append(getattr(result, "importance_cpu_s", total - train[-1]))
        recorded_train.append(getattr(result, "train_cpu_s", float("nan")))
    return {"rows": len(dataset[0]), "features": dataset[0].shape[1], "train": min(train), "importance": min(imp),
            "recorded_train": min(recorded_train)}


def tasks(models: list[str]) -> None:
    """The fan-out profile: Σ CPU of train_symbol per model type over the ten sample pairs."""
    import sys

    sys.path.insert(0, str(ROOT))
    from brain_tasks.service.steps import train as train_step
    from brain_tasks.brain.db import make_engine
    from brain_tasks.brain.migrate import upgrade
    from brain_tasks.service.steps.collect import ingest_freqtrade
    from brain_tasks.intake import as_of_date
    from brain_tasks.settings import from_environ
    from tests import servers

    sample = ROOT / "sample" / "freqtrade-testdata"
    pairs = sorted(f.name.split("-")[0].replace("_", "/") for f in sample.glob("*_BTC-5m.feather"))
    with servers.postgres_server() as pg:
        url = servers.create_database(pg)
        upgrade(url)
        engine = make_engine(url)
        ingest_freqtrade(engine, sample, symbols=pairs, timeframe="5m", exchange="freqtrade")
        settings = from_environ({"BRAIN_DATABASE_URL": url})
        train_step.train_symbol(engine, settings, pairs[0], models[0], as_of_date("2018-01-29"))  # warm-up
        print(f"\nfan-out profile: train_symbol for {len(pairs)} sample pairs, in process, sums of the task results")
        header = f"{'model':<9} {'task CPU s':>10} {'walk-fwd CPU s':>14} {'importance CPU s':>16} {'imp / rest':>10}"
        print(header)
        print("-" * len(header))
        sums = [0.0, 0.0, 0.0]
        for model_type in models:
            rs = [train_step.train_symbol(engine, settings, p, model_type, as_of_date("2018-01-30")) for p in pairs]
            task, train, imp = (sum(getattr(r, k) for r in rs) for k in ("cpu_s", "train_cpu_s", "importance_cpu_s"))
            sums = [sums[0] + task, sums[1] + train, sums[2] + imp]
            print(f"{model_type:<9} {task:>10.2f} {train:>14.2f} {imp:>16.2f} {imp / (task - imp):>10.2f}")
        task, train, imp = sums
        print(f"{'all':<9} {task:>10.2f} {train:>14.2f} {imp:>16.2f} {imp / (task - imp):>10.2f}")
        print("imp / rest = importance CPU / the task's other CPU (the goal: <= 0.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="baseline,lightgbm,xgboost")
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--repeats", type=int, default=3, help="small size: best of this many runs")
    parser.add_argument("--tasks", action="store_true", help="also the train_symbol profile over the sample pairs")
    args = parser.parse_args()
    from brain_tasks.ml.pipeline import TrainConfig, train_and_evaluate

    # Warm up imports and first-call costs (numba/TreeSHAP tables, scipy) outside the timings.
    warm = _small()
    for model_type in args.models.split(","):
        train_and_evaluate(warm["candles"], model_type, TrainConfig(), with_importance=True)
    print(f"out-of-sample importance vs training, default TrainConfig (5 folds, importance_rows "
          f"{TrainConfig().importance_rows}), 1 thread; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    header = (f"{'size':<6} {'rows':>7} {'feat':>4} {'model':<9} {'train CPU s':>11} {'importance CPU s':>16} "
              f"{'ratio':>6}")
    print(header)
    print("-" * len(header))
    totals: dict[str, list[float]] = {}
    for size in args.sizes.split(","):
        market = _small() if size == "small" else _large()
        for model_type in args.models.split(","):
            r = measure(market, model_type, args.repeats if size == "small" else 1)
            totals.setdefault(size, [0.0, 0.0])
            totals[size][0] += r["train"]
            totals[size][1] += r["importance"]
            print(f"{size:<6} {r['rows']:>7} {r['features']:>4} {model_type:<9} {r['train']:>11.3f} "
                  f"{r['importance']:>16.3f} {r['importance'] / r['train']:>6.2f}")
    for size, (train, imp) in totals.items():
        print(f"{size}: all models together: training {train:.2f} s, importance {imp:.2f} s, ratio {imp / train:.2f}")
    if args.tasks:
        tasks(args.models.split(","))


if __name__ == "__main__":
    main()
