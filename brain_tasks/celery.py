"""`celery -A brain_tasks worker|beat|flower|inspect`: Celery looks for `brain_tasks.celery.app`."""

from brain_tasks.app import app

__all__ = ["app"]
