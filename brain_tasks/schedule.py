"""The beat schedule: data, built from the settings."""

from __future__ import annotations

import datetime as dt
import re

from celery.schedules import crontab

from brain_tasks.settings import Settings


def beat_schedule(settings: Settings) -> dict[str, dict]:
    """Daily retrain at the configured UTC time, the nightly analysis after it, funding every 8 hours,
    candles hourly and the data-quality check daily; with news feeds configured, sentiment hourly."""
    rh, rm = settings.retrain_at
    nh, nm = settings.nightly_at
    symbols = list(settings.symbols)
    models = list(settings.models)
    schedule = {
        "daily-retrain": {
            "task": "brain_tasks.daily_retrain",
            "schedule": crontab(hour=rh, minute=rm),
            "kwargs": {"symbols": symbols, "models": models},
        },
        "nightly-analysis": {
            "task": "brain_tasks.nightly_analysis",
            "schedule": crontab(hour=nh, minute=nm),
            "kwargs": {"symbols": symbols},
        },
        "collect-funding": {
            "task": "brain_tasks.collect_universe",
            "schedule": crontab(hour="0,8,16", minute=5),
            "kwargs": {"kind": "funding", "symbols": symbols},
        },
        "collect-candles": {
            "task": "brain_tasks.collect_universe",
            "schedule": crontab(minute=2),
            "kwargs": {"kind": "candles", "symbols": symbols},
        },
        "data-quality-check": {
            "task": "brain_tasks.data_quality_check",
            "schedule": crontab(hour=1, minute=15),
            "kwargs": {"symbols": symbols},
        },
        # Runs the broker lost are re-driven and dead chords' attempts closed (brain_tasks/reconcile.py).
        "reconcile-runs": {
            "task": "brain_tasks.reconcile_runs",
            "schedule": float(settings.reconcile_interval),
        },
    }
    if settings.news_feeds:
        # Hourly, a few minutes past the hour: only whole hours are stored, so the last one is ready.
        schedule["collect-sentiment"] = {"task": "brain_tasks.collect_sentiment", "schedule": crontab(minute=4),
                                         "kwargs": {}}
    schedule.update(bar_close_entry(settings))
    return schedule


def _bar(timeframe: str) -> tuple[int, str]:
    match = re.fullmatch(r"([1-9][0-9]*)([mhd])", timeframe)
    return (int(match.group(1)), match.group(2)) if match else (0, "")


def bar_close_schedule(settings: Settings) -> crontab | dt.timedelta:
    """At each close of the configured timeframe (or every BRAIN_SIGNALS_EVERY seconds)."""
    if settings.signals_every:
        return dt.timedelta(seconds=settings.signals_every)
    n, unit = _bar(settings.timeframe)
    if unit == "m" and 60 % n == 0:
        return crontab(minute=f"*/{n}")
    if unit == "h" and 24 % n == 0:
        return crontab(minute=0, hour=f"*/{n}")
    if (n, unit) == (1, "d"):
        return crontab(minute=0, hour=0)
    raise ValueError(f"no bar-close schedule for timeframe {settings.timeframe!r}; set BRAIN_SIGNALS_EVERY")


def bar_close_entry(settings: Settings) -> dict[str, dict]:
    """The bar-close canvas (collect the closed bar, then publish_signals) as a beat entry; a run
    not started before the next close is dropped (its signal would be one bar late)."""
    n, unit = _bar(settings.timeframe)
    period = settings.signals_every or n * {"m": 60, "h": 3600, "d": 86400}.get(unit, 0)
    return {"bar-close": {"task": "brain_tasks.bar_close", "schedule": bar_close_schedule(settings),
                          "kwargs": {"symbols": list(settings.symbols)},
                          "options": {"expires": max(60, period)}}}
