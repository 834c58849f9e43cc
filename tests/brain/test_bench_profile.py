"""bench/profile_symbol.py runs end to end on a small symbol (its figures are for the real run)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "profile_symbol.py"


@pytest.mark.postgres
def test_profile_prints_both_paths_and_they_agree(pg_url: str, capsys: pytest.CaptureFixture) -> None:
    spec = importlib.util.spec_from_file_location("bench_profile_symbol", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    server = pg_url.rsplit("/", 1)[0] + "/postgres"
    assert bench.main(["--bars", "3000", "--repeat", "1", "--no-train", "--url", server]) == 0
    out = capsys.readouterr().out
    for reader in ("read_candles", "read_funding", "read_open_interest", "read_liquidations", "load_market"):
        assert re.search(rf"^{reader}\s+\d+\s+\d+\.\d{{3}}\s+\d+\.\d{{3}}\s+\d+\.\dx\s+True$", out, re.MULTILINE), out
    assert "load_market x 4" in out and "validation query" in out
