"""Identities of runs, shared by the client, the CLI and the tasks (no heavy imports here).

A run's id is derived from what it does, not drawn at random: the same daily retrain enqueued twice
is the same run.  Each enqueue is a new attempt of it, with rows of its own in training_runs
(brain_tasks/brain/runs.py), so a re-run never reads an earlier attempt's states.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Iterable

RUN_SUMMARY_SYMBOL = "*"


def as_of_date(value: str | dt.date | dt.datetime | None) -> dt.date:
    """Parse an as-of date (ISO string or date); default: today in UTC.  A bad date is a BadDateError."""
    from brain_tasks.requests import check_as_of

    return check_as_of(value)


def run_id_for(kind: str, as_of: dt.date, symbols: Iterable[str] = (), models: Iterable[str] = ()) -> str:
    digest = hashlib.sha256(
        json.dumps({"symbols": sorted(symbols), "models": sorted(models)}).encode()).hexdigest()[:12]
    return f"{kind}-{as_of.isoformat()}-{digest}"
