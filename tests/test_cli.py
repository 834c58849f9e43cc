"""The command line on the embedded default: a real worker process, SQLite, the bundled sample."""

from __future__ import annotations

import json

import subprocess
import sys

import pytest

from brain_tasks.brain import store
from brain_tasks.brain.db import make_engine
from tests.workers import brain_env


def _cli(args: list[str], env: dict, cwd, timeout: float = 600) -> subprocess.CompletedProcess:  # noqa: ANN001
    proc = subprocess.run([sys.executable, "-m", "brain_tasks.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"brain-tasks {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_db_upgrade_twice_is_a_no_op(tmp_path):
    env = brain_env(f"sqlite:///{tmp_path / 'brain.db'}", None, tmp_path / ".brain")
    first = _cli(["db", "upgrade"], env, tmp_path).stdout
    second = _cli(["db", "upgrade"], env, tmp_path).stdout
    assert first == second and "revision" in first


@pytest.mark.slow
def test_demo_on_the_embedded_default_prints_the_summary_and_writes_the_report(tmp_path):
    url = f"sqlite:///{tmp_path / 'brain.db'}"
    env = brain_env(url, None, tmp_path / ".brain", BRAIN_SIZER_TIMESTEPS="2048")
    out = _cli(["demo", "--symbols", "ETH/BTC,LTC/BTC", "--models", "lightgbm,baseline",
                "--out", str(tmp_path / "report")], env, tmp_path)
    text = out.stdout
    assert "embedded mode" in out.stderr  # says crash recovery is weaker
    assert "succeeded" in text and "ETH/BTC" in text and "LTC/BTC" in text
    assert "champion" in text  # the registry table
    html = (tmp_path / "report" / "index.html").read_text()
    assert "ETH/BTC" in html and "<img" in html
    engine = make_engine(url)
    manifests = store.read_table(engine, "model_manifests")
    assert (manifests.model_type != "ppo_sizer").sum() == 4
    # A ppo_sizer only for a symbol whose selection trades its champion; each row says what the sizer did.
    runs = store.read_table(engine, "training_runs")
    retrain = runs[(runs.symbol != "*") & (runs.kind == "retrain")]
    sizer_of = [(json.loads(d) if isinstance(d, str) else d)["sizer"] for d in retrain.details]
    assert len(sizer_of) == 2 and all(s["status"] in ("succeeded", "skipped") for s in sizer_of)
    assert (manifests.model_type == "ppo_sizer").sum() == sum(s["status"] == "succeeded" for s in sizer_of)
    assert len(store.read_table(engine, "feature_drift")) > 0
    models = _cli(["models", "--symbol", "ETH/BTC"], env, tmp_path).stdout
    assert "lightgbm" in models and "baseline" in models and "LTC/BTC" not in models
