"""The README's Engine section runs as written, on a fresh clone, against the bundled sample.

Its python code blocks are extracted and executed in a fresh Python process on the embedded default
(no broker), over a database freshly created and loaded with the sample by the commands a new user runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from tests.workers import REPO, brain_env

SECTION = "## From Engine code"


def engine_section_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end > 0 else None]
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", section, re.S)]


def test_the_engine_section_has_code_to_run():
    blocks = engine_section_blocks()
    assert len(blocks) >= 2 and all("BrainClient()" in b for b in blocks)


@pytest.mark.slow
def test_the_engine_section_runs_as_written_against_the_sample(tmp_path):
    # Only the model list is narrowed (a documented variable) to keep the retrain short; the code is the README's.
    env = brain_env(f"sqlite:///{tmp_path / 'brain.db'}", None, tmp_path / ".brain", BRAIN_MODELS="baseline")
    for args in (["db", "upgrade"], ["ingest", "--path", str(REPO / "sample" / "freqtrade-testdata"),
                                     "--symbols", "ETH/BTC,LTC/BTC"]):
        proc = subprocess.run([sys.executable, "-m", "brain_tasks.cli", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    check = "\nimport json\nprint('RUNS', json.dumps(brain.runs(5)))\n"
    script = "\n\n".join(engine_section_blocks()) + check
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = json.loads(proc.stdout.split("RUNS ", 1)[1])
    attempts = [a for r in runs for a in r["attempts"]]
    assert [a["state"] for a in attempts] == ["succeeded"], attempts
    assert attempts[0]["counts"] == {"succeeded": 2}
