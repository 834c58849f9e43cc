"""The freqtrade extra stays optional: the core install neither depends on freqtrade nor imports it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from tests.integrations import ftenv


def test_freqtrade_is_an_extra_pinned_to_one_version_and_not_a_core_dependency() -> None:
    project = tomllib.loads((ftenv.REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("freqtrade")]
    extra = project["optional-dependencies"]["freqtrade"]
    assert [d for d in extra if re.fullmatch(r"freqtrade==\d+\.\d+(\.\d+)?", d)], extra


def test_the_core_package_never_imports_freqtrade_or_the_integrations() -> None:
    code = ("import sys, brain_tasks, brain_tasks.client, brain_tasks.cli, brain_tasks.tasks, "
            "brain_tasks.service.serving, brain_tasks.brain.replays\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'freqtrade' "
            "or m.startswith('brain_tasks.integrations')))")
    done = subprocess.run([sys.executable, "-c", code], env=ftenv.env(), capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    # Only the integration module names freqtrade in an import.
    importers = [p.relative_to(ftenv.REPO).as_posix() for p in (ftenv.REPO / "brain_tasks").rglob("*.py")
                 if re.search(r"^\s*(from|import) freqtrade\b", p.read_text(encoding="utf-8"), re.M)]
    assert importers == ["brain_tasks/integrations/freqtrade.py"]
