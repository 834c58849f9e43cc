"""The beat schedule: data, built from the settings."""

from __future__ import annotations

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
    return schedule
