"""`brain-tasks dashboard`: the web app an operator keeps open (pages, JSON API, Prometheus metrics)."""

from brain_tasks.dashboard.web import create_app

__all__ = ["create_app"]
