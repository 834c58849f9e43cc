"""Calibration of the replay's statistics (brain_tasks.ml.replay) and the size of its stored returns.

Run with ``python bench/replay_stats.py`` (about a minute on one core; ``--quick`` for a quarter of
the repetitions).  Seeded: the same command prints the same tables.  Prints:
- the Ledoit & Wolf (2008) HAC Sharpe-difference test's size (observed rejection rate under a true
  null, at 1%, 5% and 10%) on iid normal returns and on AR(1) returns with Student-t(4) innovations,
  next to the same delta method with an iid covariance; then its power at a few planted differences;
- the PBO (CSCV, 16 blocks) on pure-noise matrices (its spread from one matrix to the next, which
  is what a single replay sees) and on matrices where one policy has a real edge;
- bytes per bar of ``pack_returns`` for the kinds of return series a replay stores, the total for a
  year of 5m bars x 1,000 symbols x 8 policies, and the time ``trade_policy`` takes for a year.
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
from brain_tasks.ml import replay
from brain_tasks.ml.regimes import REGIMES

PPY_5M = 105_120.0


def _rate(hits: int, reps: int) -> str:
    p = hits / reps
    return f"{p:.3f} (sd {math.sqrt(max(p * (1 - p), 1e-12) / reps):.3f})"


def _ar1(rng: np.random.Generator, phi: float, n: int, df: int | None) -> np.ndarray:
    """Unit-variance stationary AR(1) (burn-in 500); normal innovations or Student-t(df)."""
    e = rng.standard_normal(n + 500) if df is None else rng.standard_t(df, n + 500) / math.sqrt(df / (df - 2))
    return signal.lfilter([1.0], [1.0, -phi], e)[500:] * math.sqrt(1.0 - phi * phi)


def _iid_z(a: np.ndarray, b: np.ndarray) -> float:
    """The same delta method with the plain sample covariance of (a, b, a^2, b^2): what ignoring
    the serial dependence gives (Jobson & Korkie 1981 / Memmel 2003 in their general form)."""
    cols, grad, srs = [], [], []
    for x, sign in ((a, 1.0), (b, -1.0)):
        mu, gamma = x.mean(), np.mean(x * x)
        var = gamma - mu * mu
        srs.append(mu / math.sqrt(var))
        cols += [x, x * x]
        grad += [sign * gamma / var**1.5, -sign * mu / (2 * var**1.5)]
    g = np.asarray(grad)
    se = math.sqrt(g @ np.cov(np.column_stack(cols), rowvar=False, ddof=0) @ g / len(a))
    return (srs[0] - srs[1]) / se


NULL_CASES = (("iid normal", 0.0, None, 0.0), ("AR(1) 0.3, t(4)", 0.3, 4, 0.0), ("AR(1) 0.6, t(4)", 0.6, 4, 0.0),
              ("AR(1) 0.6, t(4), corr 0.5", 0.6, 4, 0.5))


def sharpe_test_size(reps: int) -> None:
    """Both series have the same true per-bar Sharpe 0.05 (annualised 16 on 5m bars: a size check
    at a Sharpe well away from 0, where the squared moments matter)."""
    rows = []
    for n in (1000, 5000):
        for label, phi, df, rho in NULL_CASES:
            rng = np.random.default_rng(1000 * n + int(phi * 10) + int(rho * 100))
            p_hac, z_iid = [], []
            for _ in range(reps):
                x, y = _ar1(rng, phi, n, df), _ar1(rng, phi, n, df)
                y = rho * x + math.sqrt(1 - rho * rho) * y
                a, b = 0.05 + x, 0.05 + y
                p_hac.append(replay.sharpe_difference_test(a, b, PPY_5M).p_value)
                z_iid.append(_iid_z(a, b))
            p_hac_a, p_iid = np.array(p_hac), 2 * stats.norm.sf(np.abs(z_iid))
            rows.append([label, str(n), str(reps)]
                        + [_rate(int((p_hac_a < lv).sum()), reps) for lv in (0.01, 0.05, 0.10)]
                        + [f"{(p_iid < 0.05).mean():.3f}"])
    table("Sharpe-difference test: size under the null (equal true Sharpe)",
           ["returns", "bars", "reps", "HAC at 1%", "HAC at 5%", "HAC at 10%", "iid covariance at 5%"], rows)


def sharpe_test_power(reps: int) -> None:
    """Per-bar Sharpe a = delta, b = 0, AR(1) 0.3 with t(4) innovations; rejection = two-sided p < 0.05
    with the right sign.  Annualised on 5m bars, delta 0.01 is a Sharpe of 3.2.  The "theory" rows are
    the normal approximation's power for the same design."""
    rows = []
    for n in (2000, 10000):
        cells = []
        for delta in (0.01, 0.03, 0.05, 0.1):
            rng = np.random.default_rng(int(delta * 1000) + n)
            hits = 0
            for _ in range(reps):
                t = replay.sharpe_difference_test(delta + _ar1(rng, 0.3, n, 4), _ar1(rng, 0.3, n, 4), PPY_5M)
                hits += t.p_value < 0.05 and t.diff > 0
            cells.append(_rate(hits, reps))
        rows.append([str(n), str(reps), *cells])
        # Asymptotic power: each Sharpe estimate's variance is about (1 + phi) / (1 - phi) / n at a small Sharpe.
        se = math.sqrt(2 * (1 + 0.3) / (1 - 0.3) / n)
        rows.append([str(n), "theory", *(f"{stats.norm.sf(1.96 - d / se):.3f}" for d in (0.01, 0.03, 0.05, 0.1))])
    table("Sharpe-difference test: power (AR(1) 0.3, t(4), independent policies)",
           ["bars", "reps", "delta 0.01/bar", "0.03", "0.05", "0.1"], rows)


def _pbo_noise(rng: np.random.Generator, t: int, n: int, common: float) -> np.ndarray:
    """T x N zero-skill returns; ``common`` is the share of variance from one shared factor (policies
    that hold the same positions much of the time, as brain and newest do)."""
    shared = rng.standard_normal((t, 1))
    return 0.01 * (math.sqrt(common) * shared + math.sqrt(1 - common) * rng.standard_normal((t, n)))


def pbotable(reps: int) -> None:
    t = 8640  # 30 days of 5m bars: 540 bars per block at S = 16
    rows = []
    for n, common in ((8, 0.0), (8, 0.7), (40, 0.0)):
        rng = np.random.default_rng(n + int(common * 10))
        pbos = np.array([replay.pbo_cscv(_pbo_noise(rng, t, n, common))["pbo"] for _ in range(reps)])
        rows.append([f"noise, {n} policies, common factor {common:g}", str(reps), f"{pbos.mean():.3f}",
                     f"{pbos.std(ddof=1):.3f}", f"{np.mean((pbos >= 0.3) & (pbos <= 0.7)):.2f}",
                     f"{np.quantile(pbos, 0.05):.3f} / {np.quantile(pbos, 0.95):.3f}"])
    for edge in (0.005, 0.01, 0.02, 0.05):
        rng = np.random.default_rng(int(edge * 1e4))
        pbos = []
        for _ in range(reps):
            x = _pbo_noise(rng, t, 8, 0.0)
            x[:, 3] += 0.01 * edge
            pbos.append(replay.pbo_cscv(x)["pbo"])
        p = np.array(pbos)
        rows.append([f"8 policies, one with Sharpe {edge:g}/bar ({edge * math.sqrt(PPY_5M):.1f}/yr)", str(reps),
                     f"{p.mean():.3f}", f"{p.std(ddof=1):.3f}", f"{np.mean((p >= 0.3) & (p <= 0.7)):.2f}",
                     f"{np.quantile(p, 0.05):.3f} / {np.quantile(p, 0.95):.3f}"])
    info = replay.pbo_cscv(np.zeros((t, 2)) + np.arange(2))
    table(f"PBO by CSCV, T = {t} bars, S = 16 blocks of {info['bars_per_block']} bars, "
           f"{info['n_combinations']} combinations",
           ["matrix", "matrices", "mean PBO", "sd", "share in [0.3, 0.7]", "5% / 95% quantile"], rows)


def _year_of_policies(rng: np.random.Generator, n: int) -> dict[str, pd.Series]:
    """One symbol's year of 5m returns under the kinds of policies a replay stores."""
    idx = pd.date_range("2025-01-01", periods=n, freq="5min", tz="UTC")
    r = rng.standard_t(4, n) * 0.002 / math.sqrt(2.0)
    persistent = np.sign(signal.lfilter([1.0], [1.0, -0.98], rng.standard_normal(n)))  # holds ~ 50 bars
    cautious = np.where(signal.lfilter([1.0], [1.0, -0.999], rng.standard_normal(n)) > 15, persistent, 0.0)
    out = {"flat (all zero)": np.zeros(n), "buy_and_hold": r, "model, always in the market": persistent * r,
           "brain-like, in the market part of the time": cautious * r}
    return {k: pd.Series(v, index=idx) for k, v in out.items()}


def storagetable() -> None:
    n = 105_120  # a year of 5m bars
    rng = np.random.default_rng(5)
    rows, per_bar = [], {}
    for name, series in _year_of_policies(rng, n).items():
        t0 = time.perf_counter()
        data = replay.pack_returns(series)
        pack_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        replay.unpack_returns(data)
        unpack_ms = (time.perf_counter() - t0) * 1e3
        per_bar[name] = len(data) / n
        share = float((series != 0).mean())
        rows.append([name, f"{share:.2f}", f"{len(data):,}", f"{len(data) / n:.3f}", f"{pack_ms:.1f}", f"{unpack_ms:.1f}"])
    table(f"pack_returns: one year of 5m bars ({n:,} bars), float32 + byte shuffle + zlib",
           ["series", "share of non-zero bars", "bytes", "bytes per bar", "pack ms", "unpack ms"], rows)
    dense = max(per_bar.values())
    cells = 1000 * n
    worst = 8 * cells * dense
    mix = cells * (per_bar["flat (all zero)"] + per_bar["buy_and_hold"] + 4 * per_bar["model, always in the market"]
                   + 2 * per_bar["brain-like, in the market part of the time"])
    print(f"\n1,000 symbols x 8 policies x 1 year of 5m bars: {worst / 1e9:.2f} GB if every policy is always in "
          f"the market ({dense:.3f} bytes per bar), {mix / 1e9:.2f} GB for flat + buy_and_hold + 4 always-in "
          f"+ 2 brain-like; uncompressed float32 would be {8 * cells * 4 / 1e9:.2f} GB.")


def trade_policy_speed() -> None:
    """trade_policy over a year of 5m bars, 365 daily steps, 3 models chosen per regime."""
    n = 105_120
    rng = np.random.default_rng(6)
    idx = pd.date_range("2025-01-01", periods=n, freq="5min", tz="UTC")
    r = pd.Series(rng.normal(0, 0.002, n), index=idx)
    regimes = pd.Series(rng.choice(REGIMES, n), index=idx)
    preds = {m: pd.Series(rng.normal(size=n), index=idx) for m in ("lightgbm", "xgboost", "baseline")}
    ends = list(pd.date_range(idx[0] - pd.Timedelta("5min"), periods=365, freq="1D"))
    names = ("lightgbm", "xgboost", "baseline", "flat")
    choices = [{reg: names[rng.integers(4)] for reg in REGIMES} for _ in ends]
    t0 = time.perf_counter()
    trades = replay.trade_policy(r, regimes, preds, choices, ends, 5.0)
    took = time.perf_counter() - t0
    t0 = time.perf_counter()
    replay.policy_metrics(trades, PPY_5M)
    took_m = time.perf_counter() - t0
    print(f"\ntrade_policy, one year of 5m bars x 365 daily steps x 3 models: {took * 1e3:.0f} ms; "
          f"policy_metrics on it: {took_m * 1e3:.0f} ms.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the repetitions")
    scale = 0.25 if parser.parse_args().quick else 1.0
    t0 = time.perf_counter()
    sharpe_test_size(int(2000 * scale))
    sharpe_test_power(int(400 * scale))
    pbotable(int(100 * scale))
    storagetable()
    trade_policy_speed()
    print(f"\n(took {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
