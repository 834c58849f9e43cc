"""Dashboard benchmark: response times of the overview and of a symbol page on PostgreSQL.

The Brain holds --symbols symbols (default 1,000), each with a day of 5m candles, three versions
(one champion) with walk-forward metrics, a buy-and-hold comparison row, a per-regime choice, 40
features of importance and 7 days of drift, 30 days of runs and a few data-quality findings; one
symbol (YEAR/USDT) has a year of 5m candles and a year-long out-of-sample record behind its champion.
Rows are written through `brain/store.py` upserts.  The app is served by uvicorn on 127.0.0.1 and
asked over HTTP with basic auth, after one warm-up request per URL.

    python bench/dashboard.py [--symbols 1000] [--requests 30] [--url postgresql+psycopg://...]

Goals (printed beside the figures): overview p95 <= 300 ms, symbol page <= 1 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

UTC = dt.timezone.utc
YEAR_SYMBOL = "YEAR/USDT"
MODELS = ("lightgbm", "xgboost", "baseline")
REGIMES = ("low", "normal", "high", "extreme")
N_FEATURES = 40
RUN_DAYS = 30
GOALS_MS = {"overview": 300.0, "symbol": 1000.0}
AUTH = ("bench", "bench-password")


def oos_parquet(n: int, seed: int, end: pd.Timestamp) -> bytes:
    rng = np.random.default_rng(seed)
    bar = rng.normal(0, 0.003, n)
    pred = 0.1 * bar + rng.normal(0, 0.003, n)
    frame = pd.DataFrame({"ts": pd.date_range(end=end, periods=n, freq="5min", tz="UTC"),
                          "fold": np.repeat(np.arange(5), -(-n // 5))[:n], "pred": pred, "label": np.sign(bar),
                          "bar_return": bar, "strategy_return": np.sign(pred) * bar - 0.0005 * (rng.random(n) < 0.1),
                          "regime": np.array(REGIMES)[(np.arange(n) // 500) % 4]})
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, compression="zstd")
    return buf.getvalue()


def populate(url: str, n_symbols: int) -> None:
    from brain_tasks.brain import store
    from brain_tasks.brain.db import make_engine

    engine = make_engine(url)
    now = pd.Timestamp.now(tz="UTC").floor("5min")
    today = now.date()
    symbols = [f"S{i:04d}/USDT" for i in range(n_symbols - 1)] + [YEAR_SYMBOL]
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    # Candles: a day for every symbol, a year for one.
    day = pd.date_range(end=now, periods=288, freq="5min", tz="UTC")
    store.upsert(engine, "candles", pd.DataFrame({
        "exchange": "freqtrade", "symbol": np.repeat(symbols[:-1], len(day)), "timeframe": "5m",
        "ts": np.tile(day, len(symbols) - 1), "open": 1.0, "high": 1.01, "low": 0.99, "close": 1.0, "volume": 10.0}))
    year = pd.date_range(end=now, periods=365 * 288, freq="5min", tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, len(year))))
    store.upsert(engine, "candles", pd.DataFrame({
        "exchange": "freqtrade", "symbol": YEAR_SYMBOL, "timeframe": "5m", "ts": year, "open": close,
        "high": close * 1.001, "low": close * 0.999, "close": close, "volume": 10.0}))
    # Artifacts: one shared small out-of-sample record, and a year-long one for YEAR/USDT.
    small, big = oos_parquet(2000, 2, now), oos_parquet(len(year) - 2000, 3, now)
    digests = {}
    for name, data in (("small", small), ("big", big)):
        digests[name] = hashlib.sha256(data).hexdigest()
        store.upsert(engine, "model_artifacts", [dict(sha256=digests[name], artifact_format="oos-parquet", data=data,
                                                      size_bytes=len(data), created_at=now)])
    stamp = now.to_pydatetime()
    manifests, registry, metrics, comparisons, choices, importance = [], [], [], [], [], []
    for i, symbol in enumerate(symbols):
        oos = digests["big"] if symbol == YEAR_SYMBOL else digests["small"]
        champion = MODELS[i % 3]
        for m in MODELS:
            common = dict(symbol=symbol, model_type=m, version=1, as_of=today, config_hash="c" * 64,
                          artifact_sha256=oos)
            manifests.append(dict(common, oos_sha256=oos, hyperparameters={}, config={"timeframe": "5m"},
                                  feature_names=[f"f{k}" for k in range(N_FEATURES)], feature_hash="f" * 64,
                                  dataset_digest="d" * 64, data_start=stamp - dt.timedelta(days=30), data_end=stamp,
                                  n_rows=8640, code_version="bench", seed=42, created_at=stamp))
            registry.append(dict(common, status="champion" if m == champion else "rejected",
                                 composite_score=float(rng.normal()), created_at=stamp,
                                 updated_at=stamp))
            values = {"sharpe": rng.normal(0, 1), "total_return": rng.normal(0, 0.1),
                      "max_drawdown": -abs(rng.normal(0.1, 0.05)), "sortino": rng.normal(0, 1), "psr": rng.random()}
            metrics += [dict(symbol=symbol, model_type=m, version=1, evaluation="walk_forward", regime="all",
                             metric=k, value=float(v), as_of=today) for k, v in values.items()]
            comparisons.append(dict(symbol=symbol, as_of=today, config_hash="c" * 64, model_type=m, version=1,
                                    composite_score=float(rng.normal()), rank=MODELS.index(m) + 1,
                                    is_best=m == champion, metrics={k: float(v) for k, v in values.items()}))
            importance += [dict(symbol=symbol, model_type=m, version=1, method="permutation", feature=f"f{k}",
                                importance=float(rng.random()), rank=k + 1, as_of=today) for k in range(N_FEATURES)]
        comparisons.append(dict(symbol=symbol, as_of=today, config_hash="c" * 64, model_type="buy_and_hold", version=0,
                                composite_score=0.0, rank=4, is_best=False,
                                metrics={"total_return": float(rng.normal(0, 0.2)),
                                         "max_drawdown": -abs(float(rng.normal(0.2, 0.1))), "sharpe": 0.0}))
        choices += [dict(symbol=symbol, regime=r, model_type=champion if (i + k) % 3 else "flat",
                         version=1 if (i + k) % 3 else None, confidence=0.6, tradeable=bool((i + k) % 3),
                         reason="bench", as_of=today, details={}, updated_at=stamp) for k, r in enumerate(REGIMES)]
    for table, rows in (("model_manifests", manifests), ("model_registry", registry), ("model_metrics", metrics),
                        ("model_comparisons", comparisons), ("regime_choices", choices),
                        ("feature_importance", importance)):
        store.upsert(engine, table, pd.DataFrame(rows))
    drift = [dict(symbol=s, as_of=today - dt.timedelta(days=d), feature=f"f{k}", psi=float(rng.random() * 0.3),
                  psi_threshold=0.2, ks_stat=0.1, ks_pvalue=0.5, drifted=bool(rng.random() < 0.1),
                  reference_start=stamp, reference_end=stamp, current_start=stamp, current_end=stamp,
                  n_reference=720, n_current=168)
             for s in symbols for d in range(7) for k in range(N_FEATURES)]
    store.upsert(engine, "feature_drift", pd.DataFrame(drift))
    runs = []
    for d in range(RUN_DAYS):
        as_of = today - dt.timedelta(days=d)
        run_id = f"retrain-{as_of.isoformat()}-bench"
        started = stamp - dt.timedelta(days=d, hours=1)
        attempt = dict(run_id=run_id, attempt_id=f"{run_id}-attempt", kind="retrain", redrives=0)
        runs.append(dict(attempt, symbol="*", as_of=as_of, state="partial", models=list(MODELS), error=None,
                         details={}, started_at=started, finished_at=started + dt.timedelta(minutes=40)))
        runs += [dict(attempt, symbol=s, as_of=as_of, state="failed" if (j + d) % 97 == 0 else "succeeded",
                      models=[], error="bench failure" if (j + d) % 97 == 0 else None, details={},
                      started_at=started, finished_at=started + dt.timedelta(minutes=30))
                 for j, s in enumerate(symbols)]
    store.upsert(engine, "training_runs", pd.DataFrame(runs))
    findings = [dict(source="freqtrade", symbol=s, timeframe="5m", data_kind="candles", check="gap",
                     ts_start=stamp - dt.timedelta(hours=h), ts_end=None, severity="warning", details={},
                     first_seen=stamp, last_seen=stamp, resolved=h % 2 == 0, resolved_at=None)
                for s in symbols[::10] for h in range(4)]
    store.upsert(engine, "data_quality_logs", pd.DataFrame(findings))
    print(f"populated {n_symbols} symbols ({len(year):,} 5m bars for {YEAR_SYMBOL}, {len(runs):,} run rows, "
          f"{len(drift):,} drift rows) in {time.perf_counter() - t0:.1f} s")


def timed(client: object, url: str, n: int) -> list[float]:
    """Times of `n` requests after a first one (connections, template compilation, caches), whose
    time is kept in FIRST."""
    t = time.perf_counter()
    client.get(url).raise_for_status()
    FIRST[url] = (time.perf_counter() - t) * 1000
    out = []
    for _ in range(n):
        t = time.perf_counter()
        resp = client.get(url)
        out.append((time.perf_counter() - t) * 1000)
        resp.raise_for_status()
    return out


FIRST: dict[str, float] = {}


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def run(url: str, n_symbols: int, n_requests: int) -> None:
    import httpx

    from brain_tasks.brain.migrate import upgrade
    from brain_tasks.dashboard import create_app
    from brain_tasks.settings import Settings
    from tests.dashboard.browser import serve

    upgrade(url)
    populate(url, n_symbols)
    settings = Settings(database_url=url, dashboard_auth=":".join(AUTH))
    cases = [("overview", "overview, default (page 1 of 50 rows)", "/"),
             ("overview", "overview, sorted by Sharpe desc", "/?sort=sharpe&order=desc"),
             ("overview", "overview, filtered (flat, stale=no), page 2", "/?tradeable=flat&stale=no&page=2"),
             ("overview", "API /api/overview per_page=500", "/api/overview?per_page=500"),
             ("symbol", f"symbol page {YEAR_SYMBOL} (a year of 5m bars)", f"/symbols/{YEAR_SYMBOL}"),
             ("symbol", f"API /api/symbols/{YEAR_SYMBOL}", f"/api/symbols/{YEAR_SYMBOL}"),
             ("symbol", "symbol page S0001/USDT", "/symbols/S0001/USDT"),
             (None, "/metrics", "/metrics")]
    # Cold: the overview reads the Brain on every request (overview_ttl=0); warm: the app's default, which
    # keeps the overview's rows for 5 s so sorting and paging reuse them.
    with serve(create_app(settings, overview_ttl=0)) as cold, serve(create_app(settings)) as warm, \
            httpx.Client(base_url=cold, auth=AUTH, timeout=60) as client, \
            httpx.Client(base_url=warm, auth=AUTH, timeout=60) as warm_client:
        print(f"\n{'request':<52} {'first':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  goal")
        for path in ("/", "/?sort=sharpe&order=desc"):
            times = timed(warm_client, path, n_requests)
            print(f"{'warm overview ' + path:<52} {FIRST[path]:>8.1f} {statistics.median(times):>8.1f} "
                  f"{p95(times):>8.1f} "
                  f"{max(times):>8.1f}  (rows kept 5 s)")
        for kind, label, path in cases:
            times = timed(client, path, n_requests if kind != "symbol" else max(5, n_requests // 3))
            goal = GOALS_MS.get(kind or "")
            verdict = "" if goal is None else f"p95 <= {goal:.0f} ms: {'met' if p95(times) <= goal else 'MISSED'}"
            label = ("cold " if kind == "overview" else "") + label
            print(f"{label:<52} {FIRST[path]:>8.1f} {statistics.median(times):>8.1f} {p95(times):>8.1f} "
                  f"{max(times):>8.1f}  {verdict}")
        size = len(client.get(f"/symbols/{YEAR_SYMBOL}").content)
        print(f"\nsymbol page size for {YEAR_SYMBOL}: {size / 1024:.0f} KiB (series cut to at most 2,000 points); "
              "'first' of a symbol page reads, checks and cuts its out-of-sample artifact, later requests "
              "reuse the cut series (an artifact never changes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--url", default=None, help="an empty PostgreSQL database (default: a throwaway server)")
    args = parser.parse_args()
    if args.url:
        run(args.url, args.symbols, args.requests)
        return
    from tests.servers import postgres_server

    with postgres_server() as url:
        run(url, args.symbols, args.requests)


if __name__ == "__main__":
    main()
