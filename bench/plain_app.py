"""A plain Celery app for bench/overhead.py: Celery's defaults, JSON, one trivial task."""

import os

from celery import Celery

app = Celery("plain", broker=os.environ["PLAIN_BROKER_URL"], backend=os.environ["PLAIN_BROKER_URL"])
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                result_accept_content=["json"])
if os.environ.get("PLAIN_LIKE_BRAIN"):
    # The project's delivery and monitoring choices on an otherwise plain app: what they cost alone.
    app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
                    worker_pool_start_method="spawn")


@app.task(name="plain.ping")
def ping(value: object = None) -> dict:
    return {"pong": value}
