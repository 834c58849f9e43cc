"""The deployment's Celery settings file, kept where Celery's docs put it.

The settings themselves live in the package (`brain_tasks/celeryconfig.py`), which is what the app
loads: importing the app never picks up a `celeryconfig.py` from the caller's working directory (an
Engine's own file would otherwise silently set the broker and serializer).  This file re-exports them
for tools that expect `celeryconfig` by name (e.g. `celery --config celeryconfig`); every value comes
from the environment through `brain_tasks.settings`.
"""

from brain_tasks.celeryconfig import *  # noqa: F401,F403
