"""brain_tasks: the Brain Library as a distributed Celery system."""

from brain_tasks import _moved

__version__ = "0.1.0"

_moved.install()
