"""brain_tasks: the Brain Library as a distributed Celery system."""

__version__ = "0.1.0"
