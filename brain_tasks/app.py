"""The Celery app: `celery -A brain_tasks worker|beat|flower|inspect` (found through brain_tasks/celery.py)."""

from __future__ import annotations

import os

# One OpenMP thread per training process, set before any native library loads: concurrency comes
# from worker processes, and OpenMP threads on top of them only oversubscribe the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from celery import Celery  # noqa: E402

from brain_tasks.schedule import beat_schedule  # noqa: E402
from brain_tasks.settings import get_settings  # noqa: E402

# Every task shares the failure and progress policy of BrainTask (brain_tasks/policy.py).
app = Celery("brain_tasks", task_cls="brain_tasks.policy:BrainTask")
app.config_from_object("brain_tasks.celeryconfig")
# Workers import the tasks; Engine code that only enqueues by name imports this module alone, which
# keeps LightGBM and XGBoost out of the Engine's process.
app.conf.include = ["brain_tasks.tasks"]
app.conf.beat_schedule = beat_schedule(get_settings())
