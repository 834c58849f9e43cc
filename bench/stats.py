"""Calibration of the statistics on serially dependent, heavy-tailed data: false alarms and power.

Run with ``python bench/stats.py`` (a few minutes on one core; ``--quick`` for a tenth of the
repetitions).  Prints one markdown table per test: the rate at which each test fires, by dependence
level (AR(1) phi) and tails (normal or Student-t with 3 degrees of freedom), next to what the iid
version of the same test does, then what out-of-sample importance costs relative to training.
Everything is seeded: the same command prints the same table.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import signal, stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for `bench.markdown` when run as a script

from bench.markdown import table  # noqa: E402
from brain_tasks.ml.drift import drift_windows, feature_drift, ks_statistic
from brain_tasks.ml.features import CANDLE_FEATURES, make_features
from brain_tasks.ml.metrics import probabilistic_sharpe_ratio
from brain_tasks.ml.pipeline import TrainConfig, train_and_evaluate
from brain_tasks.ml.regimes import REGIMES, select_per_regime
from brain_tasks.ml.rollback import live_rollback_decision

ROOT = Path(__file__).resolve().parents[1]
N_REF, N_CUR = 720, 168
PPY_5M = 105_120.0


def _innovations(rng: np.random.Generator, shape: tuple[int, ...], t3: bool) -> np.ndarray:
    return rng.standard_t(3, shape) / math.sqrt(3.0) if t3 else rng.standard_normal(shape)


def _ar1(rng: np.random.Generator, phi: float, shape: tuple[int, int], t3: bool = False) -> np.ndarray:
    """Stationary AR(1) rows (burn-in 2000) of the given (reps, n) shape."""
    reps, n = shape
    e = _innovations(rng, (reps, n + 2000), t3)
    return signal.lfilter([1.0], [1.0, -phi], e, axis=1)[:, 2000:]


def _sd(rate: float, reps: int) -> str:
    """The rate with its count, and its binomial standard error (at the observed rate)."""
    return f"{rate:.3f} ({round(rate * reps)}/{reps}, sd {math.sqrt(rate * (1 - rate) / reps):.3f})"


def _iid_ks_alarm(ref: np.ndarray, cur: np.ndarray, level: float) -> bool:
    d = ks_statistic(ref, cur)
    en = math.sqrt(ref.size * cur.size / (ref.size + cur.size))
    return bool(stats.kstwobign.sf((en + 0.12 + 0.11 / en) * d) <= level)


def drifttable(scale: float) -> None:
    rows = []
    reps = int(300 * scale)
    for t3 in (False, True):
        for phi in (0.0, 0.5, 0.9, 0.98):
            rng = np.random.default_rng(int(phi * 100) + 1000 * t3)
            x = _ar1(rng, phi, (reps, N_REF + N_CUR), t3)
            ours = np.mean([feature_drift(pd.DataFrame({"x": r[:N_REF]}), pd.DataFrame({"x": r[N_REF:]}))
                            ["drifted"].iloc[0] for r in x])
            iid = np.mean([_iid_ks_alarm(r[:N_REF], r[N_REF:], 0.05) for r in x])
            rows.append(["false alarm, 1 feature", f"{phi:g}", "t3" if t3 else "normal", str(reps),
                         _sd(ours, reps), f"{iid:.3f}"])
    fam = int(60 * scale)
    for phi, t3 in ((0.0, False), (0.5, False), (0.9, False), (0.98, False), (0.9, True)):
        rng = np.random.default_rng(int(phi * 100) + 7)
        any_ours, any_iid = [], []
        for _ in range(fam):
            x = _ar1(rng, phi, (20, N_REF + N_CUR), t3).T
            ref, cur = pd.DataFrame(x[:N_REF]), pd.DataFrame(x[N_REF:])
            any_ours.append(feature_drift(ref, cur)["drifted"].any())
            any_iid.append(any(_iid_ks_alarm(x[:N_REF, j], x[N_REF:, j], 0.05 / 20) for j in range(20)))
        rows.append(["false alarm, any of 20 (family-wise)", f"{phi:g}", "t3" if t3 else "normal", str(fam),
                     _sd(float(np.mean(any_ours)), fam), f"{np.mean(any_iid):.3f}"])
    for phi, shift, p in ((0.0, 0.5, 1), (0.0, 0.5, 20), (0.5, 0.5, 1), (0.9, 1.0, 1)):
        rng = np.random.default_rng(99 + p)
        n_rep = int((200 if p == 1 else 60) * scale)
        hits = []
        for _ in range(n_rep):
            x = _ar1(rng, phi, (p, N_REF + N_CUR)).T * math.sqrt(1 - phi**2)  # unit marginal sd
            x[N_REF:, 0] += shift
            hits.append(feature_drift(pd.DataFrame(x[:N_REF]), pd.DataFrame(x[N_REF:]))["drifted"].iloc[0])
        rows.append([f"power: {shift:g} sd mean shift" + (", 1 of 20 features" if p > 1 else ""), f"{phi:g}",
                     "normal", str(n_rep), _sd(float(np.mean(hits)), n_rep), ""])
    rows.extend(_package_features(scale))
    table(f"Feature drift: effective-sample-size KS + Holm, alpha 0.05, {N_REF} vs {N_CUR} rows "
           "(last column: the same KS counting every row as independent)",
           ["case", "phi", "tails", "runs", "our rate (count, sd)", "iid KS rate"], rows)


def _garch_candles(rng: np.random.Generator, n: int, vol: float = 0.002) -> pd.DataFrame:
    sigma = np.empty(n)
    s = vol
    for i in range(n):
        s = math.sqrt(0.05 * vol**2 + 0.9 * s**2 + 0.05 * (vol * rng.standard_normal()) ** 2)
        sigma[i] = s
    close = 100.0 * np.exp(np.cumsum(rng.standard_t(4, n) / math.sqrt(2) * sigma))
    open_ = np.concatenate([[100.0], close[:-1]])
    wiggle = np.abs(rng.standard_normal(n)) * sigma * close
    return pd.DataFrame({
        "ts": pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC"), "open": open_,
        "high": np.maximum(open_, close) + wiggle, "low": np.minimum(open_, close) - wiggle, "close": close,
        "volume": rng.lognormal(3.0, 0.5, n),
    })


def _package_features(scale: float) -> list[list[str]]:
    """The package's own rolling features on a GARCH random walk with t4 returns and no change, in
    the nightly windows of a 5m timeframe (``drift_windows``: 288 current vs 1152 reference bars)."""
    reps = int(40 * scale)
    rng = np.random.default_rng(2026)
    names = [f for f in CANDLE_FEATURES if not f.startswith(("tod_", "dow_"))]
    any_ours, counts, any_iid = [], [], []
    for _ in range(reps):
        feats = make_features(_garch_candles(rng, 2000), timeframe="5m")[names].dropna()
        ref_mask, cur_mask = drift_windows(feats.index, "5m")
        ref, cur = feats[ref_mask], feats[cur_mask]
        out = feature_drift(ref, cur)
        any_ours.append(out["drifted"].any())
        counts.append(int(out["drifted"].sum()))
        any_iid.append(any(_iid_ks_alarm(ref[c].to_numpy(), cur[c].to_numpy(), 0.05 / len(names)) for c in names))
    case = f"false alarm, any of the package's {len(names)} candle features (mean count {np.mean(counts):.2f})"
    return [[case, "GARCH", "t4", str(reps), _sd(float(np.mean(any_ours)), reps),
             f"{np.mean(any_iid):.3f}"]]


def psrtable(scale: float) -> None:
    reps, n = int(2000 * scale), 500
    rows = []
    for t3 in (False, True):
        for phi in (-0.3, 0.0, 0.3):
            x = _ar1(np.random.default_rng(int(phi * 10) + 50 + t3), phi, (reps, n), t3) * 0.01
            hac = np.mean([probabilistic_sharpe_ratio(r) > 0.95 for r in x])
            iid = np.mean([probabilistic_sharpe_ratio(r, method="iid") > 0.95 for r in x])
            rows.append(["PSR > 0.95, zero true Sharpe", f"{phi:g}", "t3" if t3 else "normal", str(reps),
                         _sd(hac, reps), f"{iid:.3f}"])
    for phi in (0.0, 0.3):
        x = _ar1(np.random.default_rng(61), phi, (reps, n), False)
        x = (x / x.std(axis=1, keepdims=True) + 0.1) * 0.01  # per-bar Sharpe 0.1
        hac = np.mean([probabilistic_sharpe_ratio(r) > 0.95 for r in x])
        iid = np.mean([probabilistic_sharpe_ratio(r, method="iid") > 0.95 for r in x])
        rows.append(["power: PSR > 0.95 at per-bar Sharpe 0.1", f"{phi:g}", "normal", str(reps), _sd(hac, reps),
                     f"{iid:.3f}"])
    table(f"Probabilistic Sharpe Ratio (HAC standard error), {n} bars (last column: iid formula)",
           ["case", "phi", "tails", "runs", "our rate (count, sd)", "iid rate"], rows)


def rollbacktable(scale: float) -> None:
    reps, n = int(2000 * scale), 500
    rows = []
    for t3 in (False, True):
        for phi in (-0.3, 0.0, 0.3):
            rng = np.random.default_rng(int(phi * 10) + 70 + t3)
            d = _ar1(rng, phi, (reps, n), t3) * 0.002
            market = rng.normal(0, 0.01, (reps, n))
            ours = np.mean([live_rollback_decision(market[i] - d[i], market[i]).action == "rollback"
                            for i in range(reps)])
            iid = np.mean(stats.ttest_1samp(d, 0.0, axis=1, alternative="greater").pvalue <= 0.05)
            rows.append(["false rollback, equal versions", f"{phi:g}", "t3" if t3 else "normal", str(reps),
                         _sd(ours, reps), f"{iid:.3f}"])
    for phi in (0.0, 0.3):
        rng = np.random.default_rng(81)
        d = _ar1(rng, phi, (reps, n), False)
        d = (d / d.std(axis=1, keepdims=True) + 0.15) * 0.002  # shortfall of 0.15 sd of the difference
        market = rng.normal(0, 0.01, (reps, n))
        ours = np.mean([live_rollback_decision(market[i] - d[i], market[i]).action == "rollback"
                        for i in range(reps)])
        iid = np.mean(stats.ttest_1samp(d, 0.0, axis=1, alternative="greater").pvalue <= 0.05)
        rows.append(["power: shortfall 0.15 sd per bar", f"{phi:g}", "normal", str(reps), _sd(ours, reps),
                     f"{iid:.3f}"])
    table(f"Rollback / promotion test (paired HAC, one-sided alpha 0.05), {n} paired bars "
           "(last column: iid paired t-test)", ["case", "phi", "tails", "runs", "our rate (count, sd)", "iid rate"], rows)


def _symbol(rng: np.random.Generator, n: int, planted: float = 0.0) -> dict[str, pd.DataFrame]:
    """Three models' OOS frames on one symbol: t4 returns with clustered volatility, persistent
    regimes and positions, 2 bps per unit of turnover; lightgbm knows the sign of a ``planted`` share."""
    vol = np.exp(signal.lfilter([1.0], [1.0, -0.98], rng.normal(0, 0.1, n + 500))[500:]) * 0.003
    bar = rng.standard_t(4, n) / np.sqrt(2) * vol
    level = signal.lfilter([1.0], [1.0, -0.99], rng.normal(0, 0.14, n + 500))[500:]
    regime = np.array(REGIMES)[(level > np.array([[-0.7], [0.7], [1.6]])).sum(axis=0)]
    ts = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    out = {}
    for model in ("lightgbm", "xgboost", "baseline"):
        pos = np.sign(signal.lfilter([1.0], [1.0, -0.9], rng.normal(size=n + 100))[100:])
        if model == "lightgbm" and planted:
            pos = np.where(rng.random(n) < planted, np.sign(bar), pos)
        strat = pos * bar - np.abs(np.diff(pos, prepend=0.0)) * 2e-4
        out[model] = pd.DataFrame({"ts": ts, "strategy_return": strat, "bar_return": bar, "regime": regime})
    return out


def selectiontable(scale: float) -> None:
    rows = []
    rng = np.random.default_rng(31)
    reps = int(300 * scale)
    tradeable = [any(c["tradeable"] for c in select_per_regime(_symbol(rng, 3000), periods_per_year=PPY_5M).values())
                 for _ in range(reps)]
    rows.append(["pure noise: symbol tradeable in any scope", str(reps), _sd(float(np.mean(tradeable)), reps)])
    for planted in (0.15, 0.3):
        n_rep = int(60 * scale)
        right = []
        for _ in range(n_rep):
            choice = select_per_regime(_symbol(rng, 3000, planted), periods_per_year=PPY_5M)
            right.append(choice["all"]["model"] == "lightgbm")
        rows.append([f"planted signal ({planted:.0%} of signs known): lightgbm chosen overall", str(n_rep),
                     _sd(float(np.mean(right)), n_rep)])
    table("Per-regime selection (standardised DSR >= 0.95 over 3 models + buy-and-hold x 5 scopes, 3000 bars)",
           ["case", "symbols", "rate (count, sd)"], rows)


def importancetable() -> None:
    eth = pd.read_feather(ROOT / "sample" / "freqtrade-testdata" / "ETH_BTC-5m.feather").rename(columns={"date": "ts"})
    synthetic = _garch_candles(np.random.default_rng(5), 30_000)
    rows = []
    for name, candles in (("ETH/BTC sample (5760 bars)", eth), ("GARCH synthetic (30000 bars)", synthetic)):
        for model_type in ("lightgbm", "xgboost", "baseline"):
            t0 = time.process_time()
            train_and_evaluate(candles, model_type, TrainConfig(), with_importance=False)
            train = time.process_time() - t0
            t0 = time.process_time()
            train_and_evaluate(candles, model_type, TrainConfig(), with_importance=True)
            imp = time.process_time() - t0 - train
            rows.append([name, model_type, f"{train:.2f}", f"{imp:.2f}", f"{imp / train:.2f}"])
    table("Out-of-sample importance cost (default TrainConfig: 5 folds, 1000 sampled test rows in all)",
           ["data", "model", "training CPU s", "importance CPU s", "ratio"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the repetitions")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    start = time.perf_counter()
    for section in (drift_table, psr_table, rollback_table, selection_table):
        section(scale)
    importancetable()
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
