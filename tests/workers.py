"""Real Celery worker processes for tests, benchmarks and end-to-end runs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Mapping

from brain_tasks.service.embedded import worker_command

REPO = Path(__file__).resolve().parent.parent


def brain_env(database_url: str, broker_url: str | None, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker / engine process: inherited, minus any BRAIN_* of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAIN_")}
    env.update({"BRAIN_DATABASE_URL": database_url, "BRAIN_HOME": str(home),
                "BRAIN_SAMPLE_DIR": str(REPO / "sample" / "freqtrade-testdata"), "PYTHONPATH": str(REPO)})
    if broker_url:
        env["BRAIN_BROKER_URL"] = broker_url
    env.update(extra)
    return env


@contextlib.contextmanager
def worker(env: Mapping[str, str], *, name: str = "w1", queues: str = "collect,train,analysis",
           concurrency: int = 1, log_dir: Path) -> Iterator[subprocess.Popen]:
    """A `celery worker` process; stopped (TERM, then KILL) when the block exits."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{name}.log", "ab")
    cmd = worker_command(name, queues, concurrency)
    # A session of its own, so a test can kill the whole process group (main process + pool children).
    proc = subprocess.Popen(cmd, env=dict(env), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                            start_new_session=True)
    try:
        log_path = log_dir / f"{name}.log"
        deadline = time.monotonic() + 120
        while b" ready." not in log_path.read_bytes():
            if proc.poll() is not None:
                raise AssertionError(f"worker {name} exited ({proc.returncode}):\n"
                                     + log_path.read_text(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {name} not ready after 120 s")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def run_python(code: str, env: Mapping[str, str], timeout: float = 600) -> str:
    """Run `code` in a separate Python process (an "Engine") and return its stdout."""
    proc = subprocess.run([sys.executable, "-c", code], env=dict(env), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise AssertionError(f"engine process failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- a synthetic fan-out (tests/test_fanout.py, bench/fanout.py) ----------------------------------
# Many symbols of the synthetic market (brain_tasks.market.synthetic, seeded: its fixed path ends on
# 2024-03-01), the cheapest model, hourly bars (60 days = 1,440 per symbol: enough for the walk-forward's
# out-of-sample folds, little to collect) and the position sizer off.
SYNTHETIC_AS_OF = "2024-02-29"
SYNTHETIC_FANOUT = {"BRAIN_EXCHANGE": "synthetic", "BRAIN_TIMEFRAME": "1h", "BRAIN_MODELS": "baseline",
                    "BRAIN_SIZER_TIMESTEPS": "0"}
# Rows every symbol of a fresh fan-out leaves (one model type, first run): exact counts, or None for
# "at least one" where the count follows the data (regimes seen, features kept).
FANOUT_ROWS_PER_SYMBOL: dict[str, int | None] = {
    "model_manifests": 1, "model_registry": 1, "rollback_logs": 1, "champion_history": 1,
    "model_comparisons": 3,  # the model, flat and buy-and-hold
    "regime_choices": 5,     # four volatility regimes and "all"
    "training_runs": 1, "model_metrics": None, "feature_importance": None, "candles": None,
}


def synthetic_symbols(n: int, prefix: str = "SYN") -> list[str]:
    """`n` distinct ccxt-style symbols of the synthetic market: SYN0000/USDT, SYN0001/USDT, ..."""
    return [f"{prefix}{i:04d}/USDT" for i in range(n)]


def rows_by_symbol(database_url: str, tables: list[str]) -> dict[str, dict[str, int]]:
    """{table: {symbol: rows}} of the Brain at `database_url` (one GROUP BY per table)."""
    import sqlalchemy as sa

    from brain_tasks.brain.db import make_engine

    out: dict[str, dict[str, int]] = {}
    with make_engine(database_url).connect() as conn:
        for table in tables:
            t = sa.table(table, sa.column("symbol"))
            out[table] = {s: int(n) for s, n in conn.execute(
                sa.select(t.c.symbol, sa.func.count()).group_by(t.c.symbol))}
    return out


def check_fanout(database_url: str, status: dict, symbols: list[str], candles_per_symbol: int) -> dict[str, int]:
    """Assert that a fan-out of `symbols` finished with every symbol succeeded (`status`: its run_status)
    and left each symbol's rows in the Brain; return the rows per table (model_artifacts included)."""
    import sqlalchemy as sa

    from brain_tasks.brain.db import make_engine

    assert status["state"] == "succeeded", f"run {status['run_id']} ended {status['state']}: {status.get('error')}"
    states = {s: v["state"] for s, v in status["symbols"].items()}
    bad = {s: (v["state"], v["step"], v["error"]) for s, v in status["symbols"].items() if v["state"] != "succeeded"}
    assert sorted(states) == sorted(symbols), "the run's symbols are not the ones sent"
    assert not bad, f"{len(bad)} symbols did not succeed, e.g. {list(bad.items())[:3]}"
    expected = {**FANOUT_ROWS_PER_SYMBOL, "candles": candles_per_symbol}
    counts = rows_by_symbol(database_url, sorted(expected))
    for table, want in expected.items():
        rows = {s: n for s, n in counts[table].items() if s != "*"}
        missing = sorted(set(symbols) - set(rows))
        assert not missing, f"{table}: no rows for {len(missing)} symbols, e.g. {missing[:3]}"
        extra = sorted(set(rows) - set(symbols))
        assert not extra, f"{table}: rows of symbols not sent, e.g. {extra[:3]}"
        if want is not None:
            off = {s: n for s, n in rows.items() if n != want}
            assert not off, f"{table}: expected {want} rows per symbol, got e.g. {list(off.items())[:3]}"
    totals = {table: sum(by.values()) for table, by in counts.items()}
    with make_engine(database_url).connect() as conn:
        # Two artifacts per version: the model's bytes and its out-of-sample predictions.
        totals["model_artifacts"] = int(conn.execute(sa.text("SELECT count(*) FROM model_artifacts")).scalar_one())
    assert totals["model_artifacts"] >= len(symbols), f"{totals['model_artifacts']} artifacts, {len(symbols)} symbols"
    return totals
