"""Training benchmark: one 105,000-row x 39-feature symbol, each trainer in its own process.

Run with ``python bench/train.py``.  Per trainer it prints the time of one fit on the full matrix,
the time of the default importance (sampled rows) as a fraction of that fit, the whole walk-forward
``train_and_evaluate`` with the default config, and the process's peak memory (ru_maxrss).  The data
is the team's seeded synthetic market (candles, funding, open interest, liquidations), about a year
of 5m bars.  The sequence models (one torch thread) also print the epochs they ran and the best one;
``--no-walk-forward`` skips the walk-forward (six fits each), e.g.
``python bench/train.py --models lstm,cnn,transformer --no-walk-forward``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_BARS = 105_000
SYMBOL = "BENCH/USDT:USDT"
SEED = 7


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _market() -> dict:
    import pandas as pd

    from brain_tasks.market.synthetic import SyntheticSource

    start = pd.Timestamp("2024-01-01", tz="UTC")
    source = SyntheticSource(SEED, start=start, end=start + pd.Timedelta(minutes=5 * N_BARS))
    return {
        "candles": source.fetch_candles(SYMBOL, "5m"),
        "funding": source.fetch_funding(SYMBOL),
        "open_interest": source.fetch_open_interest(SYMBOL, "5m"),
        "liquidations": source.fetch_liquidations(SYMBOL),
    }


def worker(model_type: str, importance_rows: int, walk_forward: bool = True) -> dict:
    """Measure one trainer; runs in a fresh process so ru_maxrss is this trainer's peak."""
    from brain_tasks.ml.importance import compute_importance
    from brain_tasks.ml.models import make_trainer
    from brain_tasks.ml.pipeline import TrainConfig, build_dataset, train_and_evaluate

    market = _market()
    config = TrainConfig()
    X, y, _ = build_dataset(
        market["candles"],
        config,
        funding=market["funding"],
        open_interest=market["open_interest"],
        liquidations=market["liquidations"],
    )
    rss_data = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = make_trainer(model_type, config.model_params(model_type), seed=config.seed, n_threads=1).fit(X, y)
    fit_s, fit_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    methods = ("shap", "permutation", "correlation")
    # What pipeline.explain passes: the most recent rows (consecutive, which a window model needs).
    Xi, yi = X.iloc[-4 * importance_rows:], y.iloc[-4 * importance_rows:]
    t0 = time.perf_counter()
    compute_importance(trainer, Xi, yi, methods=methods, sample_rows=importance_rows, seed=0)
    importance_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compute_importance(trainer, Xi, yi, methods=methods[:1], sample_rows=importance_rows, seed=0)
    shap_s = time.perf_counter() - t0
    training = getattr(trainer.model, "description", {}).get("training", {})
    epochs = f"{len(training['validation_loss'])}/{training['best_epoch'] + 1}" if training else "-"
    per_epoch = fit_s / len(training["validation_loss"]) if training else float("nan")
    if not walk_forward:
        return {"model_type": model_type, "rows": len(X), "features": X.shape[1], "fit_s": fit_s,
                "fit_cpu_s": fit_cpu_s, "epoch_s": per_epoch,
                "importance_s": importance_s, "shap_or_variance_s": shap_s, "pipeline_s": float("nan"),
                "epochs": epochs, "rss_after_data_mb": rss_data,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    t0 = time.perf_counter()
    result = train_and_evaluate(
        market["candles"],
        model_type,
        config,
        funding=market["funding"],
        open_interest=market["open_interest"],
        liquidations=market["liquidations"],
    )
    pipeline_s = time.perf_counter() - t0
    return {
        "model_type": model_type,
        "rows": len(X),
        "features": X.shape[1],
        "fit_s": fit_s,
        "importance_s": importance_s,
        "shap_or_variance_s": shap_s,
        "pipeline_s": pipeline_s,
        "oos_sharpe": result.metrics["sharpe"],
        "epochs": epochs,
        "fit_cpu_s": fit_cpu_s,
        "epoch_s": per_epoch,
        "rss_after_data_mb": rss_data,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def sizer_worker() -> dict:
    """Time the position-sizing agent (PPO, default SizerConfig, one torch thread) on the benchmark
    symbol's out-of-sample predictions; the linear baseline makes them (the fastest walk-forward)."""
    from brain_tasks.ml.pipeline import TrainConfig, train_and_evaluate
    from brain_tasks.ml.sizing import SizerConfig, train_sizer

    market = _market()
    config = TrainConfig()
    oos = train_and_evaluate(market["candles"], "baseline", config, funding=market["funding"],
                             open_interest=market["open_interest"], liquidations=market["liquidations"],
                             with_importance=False).oos
    sizer = SizerConfig(timeframe=config.timeframe, cost_bps=config.cost_bps, delay=config.execution_lag + 1,
                        embargo=config.horizon + config.execution_lag)
    # A worker pays for importing torch and SB3 (and torch.optim's first use) once, not per symbol.
    t0 = time.perf_counter()
    import stable_baselines3  # noqa: F401
    import torch

    torch.optim.Adam(torch.nn.Linear(1, 1).parameters())
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = train_sizer(oos, sizer)
    return {"oos_bars": len(oos), "import_s": import_s, "train_bars": result.split.train_end, "test_bars": len(result.oos),
            "timesteps": sizer.total_timesteps, "sizer_s": time.perf_counter() - t0, "sizes": result.gate.active,
            "sharpe": {k: v["sharpe"] for k, v in result.sizer_metrics.items()},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def print_sizer(env: dict) -> None:
    proc = subprocess.run([sys.executable, __file__, "--sizer-worker"], env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        print(f"sizer FAILED\n{proc.stderr[-2000:]}")
        return
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    sharpe = ", ".join(f"{k} {v:.2f}" for k, v in r["sharpe"].items())
    print(f"sizer (ppo_sizer, {r['timesteps']} PPO timesteps, 1 thread): {r['sizer_s']:.1f} s for one symbol "
          f"(goal <= 60 s; once per process: {r['import_s']:.1f} s importing torch + SB3); {r['train_bars']} training / {r['test_bars']} test bars of {r['oos_bars']} OOS bars; "
          f"test Sharpe {sharpe}; sizes: {r['sizes']}; peak {r['peak_rss_mb']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="lightgbm,xgboost,baseline,lstm,cnn,transformer")
    parser.add_argument("--no-walk-forward", action="store_true", help="skip train_and_evaluate")
    parser.add_argument("--importance-rows", type=int, default=1000, help="rows sampled for importance")
    parser.add_argument("--sizer-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-sizer", action="store_true", help="skip timing the position-sizing agent")
    args = parser.parse_args()
    if args.sizer_worker:
        print(json.dumps(sizer_worker()))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.importance_rows, not args.no_walk_forward)))
        return
    # One OpenMP thread per training process, as the workers run (see FIELD-NOTES).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    print(
        f"brain_tasks training bench: {N_BARS} bars of 5m synthetic data, default TrainConfig, 1 thread, "
        f"importance on {args.importance_rows} sampled rows (shap/variance + permutation + correlation)"
    )
    header = (
        f"{'trainer':<11} {'rows':>7} {'feat':>4} {'fit s':>7} {'cpu s':>7} {'epochs':>6} {'s/epoch':>7} "
        f"{'importance s':>12} {'imp/fit':>8} "
        f"{'shap s':>7} {'walk-fwd s':>10} {'data MB':>8} {'peak MB':>8}"
    )
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(header)
    print("-" * len(header))
    for model_type in args.models.split(","):
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", model_type, "--importance-rows", str(args.importance_rows),
             *(["--no-walk-forward"] if args.no_walk_forward else [])],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(f"{model_type:<11} FAILED\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{r['model_type']:<11} {r['rows']:>7} {r['features']:>4} {r['fit_s']:>7.2f} {r['fit_cpu_s']:>7.2f} "
            f"{r['epochs']:>6} {r['epoch_s']:>7.2f} "
            f"{r['importance_s']:>12.2f} "
            f"{r['importance_s'] / r['fit_s']:>8.2f} {r['shap_or_variance_s']:>7.2f} {r['pipeline_s']:>10.2f} "
            f"{r['rss_after_data_mb']:>8.0f} {r['peak_rss_mb']:>8.0f}"
        )
    print(
        "fit = one fit on all rows (wall and CPU seconds); epochs = epochs run / best epoch and s/epoch "
        "(sequence models: a fit takes at most `epochs` x s/epoch); walk-fwd = "
        "train_and_evaluate (5 folds + final model + importance); importance on the last 4 x importance-rows "
        "rows as pipeline.explain; peak MB = ru_maxrss of the trainer's process, data MB = RSS once the "
        "feature matrix is built"
    )
    if not args.no_sizer:
        print_sizer(env)


if __name__ == "__main__":
    main()
