"""BrainStrategy's dry-run cases (tests/integrations/freqtrade_cases.py), run in freqtrade's own venv.

freqtrade is not a dependency of the core install, so the project venv cannot import the strategy;
the cases run where a user's freqtrade runs them, in the pinned freqtrade's venv (built and cached by
tests/integrations/ftenv.py), and this test fails with their report when one of them fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integrations import ftenv

CASES = Path(__file__).with_name("freqtrade_cases.py")


@pytest.mark.slow
def test_brain_strategy_dry_run_cases_in_freqtrades_venv(tmp_path: Path) -> None:
    python = ftenv.python()
    done = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                           str(tmp_path / "cases"), str(CASES)], env=ftenv.env(), cwd=ftenv.REPO,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1] and "skipped" not in done.stdout.splitlines()[-1]
