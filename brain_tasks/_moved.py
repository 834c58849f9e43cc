"""Module paths that moved when the service layer got its own folder keep working for one release, with a warning.

Engine code may import `brain_tasks.serving`, `brain_tasks.sizer_jobs`, `brain_tasks.brain.models` and
the like.  Each old path is served by a module that forwards every name to the new one and warns once
(DeprecationWarning); the next release drops this file.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED = {
    "brain_tasks.serving": "brain_tasks.service.serving",
    "brain_tasks.publish": "brain_tasks.service.steps.publish",
    "brain_tasks.reconcile": "brain_tasks.service.reconcile",
    "brain_tasks.embedded": "brain_tasks.service.embedded",
    "brain_tasks.collect": "brain_tasks.service.steps.collect",
    "brain_tasks.collect_news": "brain_tasks.service.feeds",
    "brain_tasks.sizer_jobs": "brain_tasks.service.steps.sizer",
    "brain_tasks.requests": "brain_tasks.intake",
    "brain_tasks.runs": "brain_tasks.intake",
    "brain_tasks.brain.models": "brain_tasks.brain.tables",
    "brain_tasks.brain.quality": "brain_tasks.brain.findings",
    "brain_tasks.ml.serving": "brain_tasks.ml.inference",
    "brain_tasks.dashboard.app": "brain_tasks.dashboard.web",
    "brain_tasks.dashboard.metrics": "brain_tasks.dashboard.prometheus",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as a forwarding module."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def exec_module(self, module: ModuleType) -> None:
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} moved to {new}; the old path goes away in the next release",
                      DeprecationWarning, stacklevel=2)
        target = importlib.import_module(new)
        module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith("__")})
        module.__getattr__ = lambda name: getattr(target, name)  # names the target gains later


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
