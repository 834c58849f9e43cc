"""The command line on the embedded default: a real worker process, SQLite, the bundled sample."""

from __future__ import annotations

import json

import subprocess
import sys

import pytest

from brain_tasks.brain import store
from brain_tasks.brain.db import make_engine
from brain_tasks.vocabulary import Origin
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
    # The demo's replay: both pairs x 5 daily steps x baseline and lightgbm, its policy table printed and
    # its section in the report; its versions are marked as the replay's, apart from the retrain's.
    assert "replay of ETH/BTC, LTC/BTC x baseline, lightgbm, 2018-01-24 .. 2018-01-28" in text
    assert "p vs brain" in text and "PBO" in text and "replay took" in text
    assert '<h2 id="replays">Replays</h2>' in html
    engine = make_engine(url)
    registry = store.read_table(engine, "model_registry")
    replayed = int((registry["origin"] == Origin.REPLAY).sum())
    assert replayed == 2 * 5 * 2
    manifests = store.read_table(engine, "model_manifests")
    assert (manifests.model_type != "ppo_sizer").sum() == 4 + replayed
    # A ppo_sizer only for a symbol whose selection trades its champion; each retrain row says what the
    # sizer did (the nightly's rows carry none).
    runs = store.read_table(engine, "training_runs")
    retrain = runs[runs.symbol.isin(["ETH/BTC", "LTC/BTC"]) & (runs.kind == "retrain")]
    sizer_of = {r.symbol: (json.loads(r.details) if isinstance(r.details, str) else r.details)["sizer"]
                for r in retrain.itertuples()}
    assert sorted(sizer_of) == ["ETH/BTC", "LTC/BTC"]
    assert all(s["status"] in ("succeeded", "skipped") for s in sizer_of.values()), sizer_of
    assert (manifests.model_type == "ppo_sizer").sum() == sum(s["status"] == "succeeded" for s in sizer_of.values())
    assert len(store.read_table(engine, "feature_drift")) > 0
    models = _cli(["models", "--symbol", "ETH/BTC"], env, tmp_path).stdout
    assert "lightgbm" in models and "baseline" in models and "LTC/BTC" not in models
