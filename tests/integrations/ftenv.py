"""freqtrade's own virtual environment for the integration tests: created once, cached, keyed by the pin.

freqtrade is not a dependency of the core install, so its tests run it where a user would: a separate
venv with the pinned freqtrade (the `freqtrade` extra of pyproject.toml) and the core's dependencies,
except torch and stable-baselines3 (the sequence models and the sizing agent; neither the strategy nor
a backtest loads them).  brain_tasks itself comes from the source tree on PYTHONPATH, so the venv does
not go stale when the code changes; only a change of the pin or of the dependency list builds a new
one (the directory name carries a digest of both).

The first build installs from the package index (about 2 minutes here, mostly downloads); later runs
reuse `.venv-freqtrade/<pin>-<digest>/`.  Builds by concurrent test processes are serialised by a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
ROOT = REPO / ".venv-freqtrade"
LEFT_OUT = ("torch", "stable-baselines3")  # never imported by the strategy or a backtest: GBs saved


def requirements() -> tuple[str, list[str]]:
    """The freqtrade pin and the packages the venv installs (the pin first)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pin = next(r for r in project["optional-dependencies"]["freqtrade"] if r.startswith("freqtrade"))
    core = [r for r in project["dependencies"] if re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0] not in LEFT_OUT]
    return pin, [pin, *core, "pytest>=8"]


def venv_dir() -> Path:
    pin, reqs = requirements()
    digest = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:10]
    return ROOT / f"{pin.split('==')[-1]}-{digest}"


def python() -> Path:
    """The venv's python, building the venv first when it is missing (or a build was interrupted)."""
    target = venv_dir()
    exe = target / "bin" / "python"
    if (target / ".ready").exists():
        return exe
    ROOT.mkdir(exist_ok=True)
    with open(ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".ready").exists():
            return exe
        shutil.rmtree(target, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(target)], check=True)
        _, reqs = requirements()
        log = target / "install.log"
        with open(log, "w") as out:
            done = subprocess.run([str(exe), "-m", "pip", "install", *reqs], stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        if done.returncode != 0:
            raise RuntimeError(f"building the freqtrade venv failed; see {log}")
        (target / ".ready").write_text("\n".join(reqs) + "\n")
    return exe


def env() -> dict[str, str]:
    """Environment for a process in the venv: brain_tasks and tests importable from the source tree."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
