"""The demo's words are true, and its plots say nothing on stderr (issue 25, item 9).

Found as: the README and `demo --help` said 10 symbols x 3 model types while the demo ran 11 x 4 plus
the sizer (3-6 minutes, mostly lstm on every pair), and a matplotlib AutoDateLocator warning leaked
into its output."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure

from brain_tasks.cli import DEMO_DEEP_PAIRS, DEMO_EXTRA_MODELS, main
from brain_tasks.report import _time_axis
from brain_tasks.settings import DEFAULT_MODELS, Settings

ROOT = Path(__file__).resolve().parents[1]


def _sample_pairs() -> list[str]:
    files = sorted(Settings().sample_dir.rglob("*-5m*.feather"))
    return [f.name.split("-")[0] for f in files]


def test_the_demo_help_and_the_readme_say_what_the_demo_runs():
    pairs = _sample_pairs()
    assert len(pairs) == 11 and len(DEFAULT_MODELS) == 3 and DEMO_EXTRA_MODELS == ("lstm",)
    assert {p.replace("/", "_") for p in DEMO_DEEP_PAIRS} <= set(pairs)
    helps = " ".join(CliRunner().invoke(main, ["demo", "--help"]).output.split())
    assert "(11 pairs)" in helps and "(3 model types)" in helps and "lstm on ETH/BTC" in helps
    assert "all eleven" in helps and "ten" not in helps.replace("ten spot", "")
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "11 symbols x 3 model types" in readme and "lstm on ETH/BTC" in readme
    assert not re.search(r"\b(10|ten) symbols x|x 4 model types", readme)
    # It says how long the demo takes, measured.
    assert re.search(r"took \d+ s on this project's 2-core machine", readme)


@pytest.mark.parametrize("hours", np.geomspace(1, 24 * 365 * 3, 40).round(1))
def test_the_report_time_axis_never_warns(hours: float):
    """Every range from an hour to three years, among them the 4-5 day ranges that warned."""
    fig = Figure(figsize=(10, 2))
    ax = fig.add_subplot()
    start = dt.datetime(2018, 1, 1)
    ax.plot([start, start + dt.timedelta(hours=float(hours))], [0, 1])
    _time_axis(ax)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ticks = ax.xaxis.get_major_locator()()
    assert 2 <= len(ticks) <= 10
