"""Recover runs the broker lost: the coordinator behind the `brain_tasks.reconcile_runs` beat task.

The truth about an attempt is in training_runs, not in Redis.  A symbol whose deadline passed while
nothing of its attempt is alive (no worker runs, holds or schedules one of its tasks, and none waits
in a queue or in Redis' unacked set) lost its chain: it is re-driven, i.e. its whole per-symbol canvas
is sent again (safe, since every step finds finished work and returns it), at most `max_redrives`
times, then marked failed with the reason.  An attempt whose symbols have all finished is closed
with its summary, computed from the rows, even when the fan-out's chord died with the broker.

The liveness test is per attempt: while any task of the attempt lives, its stalled symbols wait.
That errs towards waiting (a symbol queued behind hundreds of others is not "lost") at the price of
recovering a lost symbol only once the rest of its attempt has drained.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any, Callable, Iterable

import sqlalchemy as sa
from celery import Celery

from brain_tasks.brain import runs
from brain_tasks.settings import Settings, is_redis_url, redis_client

# kombu's Redis transport: a queue is a list per priority step, delivered-but-unacked messages a hash.
_PRIORITY_SEP, _PRIORITY_STEPS, _UNACKED = "\x06\x16", (0, 3, 6, 9), "unacked"


def _attempt_of_kwargs(kwargs: Any) -> str | None:
    return kwargs.get("attempt_id") if isinstance(kwargs, dict) else None


def _attempt_of_message(message: dict[str, Any]) -> str | None:
    """The attempt id in a Celery (protocol 2) message's kwargs."""
    body = message.get("body")
    try:
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)
        return _attempt_of_kwargs(args[1]) if isinstance(args, list) and len(args) > 1 else None
    except (ValueError, TypeError):
        return None


def attempts_in_redis(app: Celery) -> set[str]:
    """Attempts with a message waiting in a queue or delivered but not acknowledged (Redis broker, or the
    master its sentinels name)."""
    client = redis_client(app.conf.broker_url, (app.conf.broker_transport_options or {}).get("master_name"))
    try:
        raw: list[bytes] = []
        for queue in app.conf.task_queues or ():
            for step in _PRIORITY_STEPS:
                key = queue.name if step == 0 else f"{queue.name}{_PRIORITY_SEP}{step}"
                raw.extend(client.lrange(key, 0, -1))
        found = set()
        for item in raw:
            attempt = _attempt_of_message(json.loads(item))
            if attempt:
                found.add(attempt)
        for item in client.hvals(_UNACKED):
            entry = json.loads(item)
            attempt = _attempt_of_message(entry[0] if isinstance(entry, list) else entry)
            if attempt:
                found.add(attempt)
        return found
    finally:
        client.close()


def attempts_on_workers(app: Celery, timeout: float = 2.0) -> set[str]:
    """Attempts with a task that a worker is running, holds (prefetched) or has scheduled (retry ETA)."""
    inspect = app.control.inspect(timeout=timeout)
    found: set[str] = set()
    for method in (inspect.active, inspect.reserved, inspect.scheduled):
        for requests in (method() or {}).values():
            for request in requests or ():
                request = request.get("request", request)  # scheduled entries wrap the request
                attempt = _attempt_of_kwargs(request.get("kwargs"))
                if attempt:
                    found.add(attempt)
    return found


def live_attempts(app: Celery) -> set[str]:
    """Every attempt with a live task, as far as the workers and the broker can tell."""
    found = attempts_on_workers(app)
    if is_redis_url(str(app.conf.broker_url)):
        found |= attempts_in_redis(app)
    return found


def _replay_days(engine: sa.Engine, head: Any) -> list[dt.date] | None:
    """A replay attempt's steps' as-of days (its run id is the replay id); None for other kinds."""
    if head.kind != "replay":
        return None
    from brain_tasks.service.replay_run import plan_of

    plan = plan_of(engine, head.run_id)
    return None if plan is None else [s.as_of for s in plan.steps]


def replay_unfinished(engine: sa.Engine, replay_id: str) -> bool:
    from brain_tasks.brain import replays
    from brain_tasks.vocabulary import OPEN

    row = replays.get_replay(engine, replay_id)
    return row is not None and row["state"] in OPEN


def reconcile(engine: sa.Engine, settings: Settings, live: Iterable[str] | Callable[[], Iterable[str]],
              send: Any, now: dt.datetime | None = None) -> dict[str, Any]:
    """One pass over the open attempts; `send(signature)` enqueues a re-driven canvas.  `live` is the
    set of attempts with a live task, or a function computing it (asked at most once, and only when a
    symbol is overdue: asking the workers and scanning the queues is the expensive part).

    Returns what it did: attempts closed, symbols re-driven and symbols given up on.
    """
    from brain_tasks import workflows

    now = now or dt.datetime.now(dt.timezone.utc)
    known: set[str] | None = None if callable(live) else set(live)

    def alive(attempt: str) -> bool:
        nonlocal known
        if known is None:
            known = set(live())  # type: ignore[operator]
        return attempt in known

    done: dict[str, Any] = {"closed": {}, "redriven": [], "failed": []}
    for head in runs.open_attempts(engine):
        attempt = head.attempt_id
        overdue = runs.overdue_symbols(engine, attempt, now)
        if overdue and not alive(attempt):
            for row in overdue:
                where = f"step {row.step}" if row.step else "its first step"
                if row.redrives >= settings.max_redrives:
                    runs.fail_symbol(engine, attempt, row.symbol,
                                     f"stalled at {where} with no live task; gave up after {row.redrives} re-drives")
                    done["failed"].append([attempt, row.symbol])
                    continue
                deadline = now + dt.timedelta(seconds=settings.stall_timeout)
                since = f" since {row.progress_at:%Y-%m-%d %H:%M:%S}" if row.progress_at else ""
                note = f"re-driven: stalled at {where}{since} with no live task"
                if runs.redrive(engine, attempt, row.symbol, deadline, note):
                    send(workflows.redrive_canvas(head.kind, row.symbol, head.as_of, head.models, head.run_id,
                                                  attempt, days=_replay_days(engine, head)))
                    done["redriven"].append([attempt, row.symbol])
        summary = runs.close_attempt(engine, attempt)
        if summary is not None:
            done["closed"][attempt] = summary["state"]
            if head.kind == "replay" and replay_unfinished(engine, head.run_id):
                # The chord's pooling step died with the fan-out: send it (it is idempotent).
                send(workflows.replay_pool_sig(head.run_id, attempt))
    return done
