"""bench/ingest.py runs end to end on a small batch (its figures are for the real run, not checked here)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from brain_tasks.brain.db import make_engine

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ingest.py"


def _load():  # noqa: ANN202 - a module object
    spec = importlib.util.spec_from_file_location("bench_ingest", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.postgres
def test_ingest_bench_prints_rates_and_ratios_and_cleans_up(pg_url: str, capsys: pytest.CaptureFixture) -> None:
    bench = _load()
    assert bench.main(["--rows", "3000", "--symbols", "3", "--url", pg_url]) == 0
    out = capsys.readouterr().out
    for phase in ("copy", "upsert 1", "upsert 2"):
        assert re.search(rf"^{phase}\s+[\d,]+\s+\d+\.\d\d", out, re.MULTILINE), out
    with make_engine(pg_url).connect() as conn:
        schemas = conn.execute(sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_%'")).all()
    assert schemas == []


def test_make_candles_is_deterministic_and_sized() -> None:
    bench = _load()
    a, b = bench.make_candles(1001, 4), bench.make_candles(1001, 4)
    assert len(a) == 1001 and a["symbol"].nunique() == 4
    assert a.equals(b)
    assert not a.duplicated(subset=["exchange", "symbol", "timeframe", "ts"]).any()


@pytest.mark.postgres
def test_history_depth_prints_both_read_times_and_the_plan(pg_url: str, capsys: pytest.CaptureFixture) -> None:
    bench = _load()
    assert bench.main(["--history-depth", "--symbols", "3", "--days", "2", "--base-symbols", "2",
                       "--url", pg_url]) == 0
    out = capsys.readouterr().out
    # The plan printed is that of the statement read_candles sends (a tiny table may be scanned whole).
    assert re.search(r"plan of one symbol.s read at 1,728 rows:\n\s+Aggregate .*\n(.*\n)*?\s+Execution Time", out), out
    assert re.search(r"^\s+1,728 candles(\s+\d+\.\d{3}){4}$", out, re.MULTILINE), out
    assert re.search(r"^\s+ratio\s+\d+\.\d\d\s+\d+\.\d\d", out, re.MULTILINE), out
    with make_engine(pg_url).connect() as conn:
        schemas = conn.execute(sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_%'")).all()
    assert schemas == []


def test_symbol_candles_are_one_symbols_full_history() -> None:
    bench = _load()
    frame = bench.symbol_candles(5, 600)
    assert len(frame) == 600 and set(frame["symbol"]) == {"SYM005/USDT"}
    assert frame["ts"].is_monotonic_increasing and frame.equals(bench.symbol_candles(5, 600))
