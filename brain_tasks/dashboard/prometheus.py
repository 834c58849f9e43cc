"""Prometheus metrics of the Brain, read from its tables at scrape time (a custom collector: the
figures are the database's, so every dashboard replica reports the same values).

Names (all gauges; README lists them with their labels):
brain_symbols, brain_data_age_seconds{symbol}, brain_data_max_age_seconds,
brain_champion_age_seconds{symbol,model_type,version}, brain_model_max_age_seconds,
brain_signal_audit_mismatches{symbol}, brain_champion_sharpe{symbol,evaluation},
brain_champion_total_return{symbol,evaluation}, brain_run_last_duration_seconds{kind},
brain_run_last_finished_timestamp_seconds{kind}, brain_run_last_failed_symbols{kind},
brain_run_last_state{kind,state}, brain_run_failures{step}, brain_drift_alarms{symbol},
brain_data_quality_open_findings{symbol,severity}, brain_queue_depth{queue} (Redis broker only).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from brain_tasks import timekeeping
from brain_tasks.brain import audits
from brain_tasks.brain import dashboard_views as dv
from brain_tasks.settings import Settings, is_redis_url
from brain_tasks.vocabulary import RUN_STATES

METRIC_NAMES = ("brain_symbols", "brain_data_age_seconds", "brain_data_max_age_seconds", "brain_champion_age_seconds",
                "brain_model_max_age_seconds", "brain_signal_audit_mismatches",
                "brain_champion_sharpe", "brain_champion_total_return", "brain_run_last_duration_seconds",
                "brain_run_last_finished_timestamp_seconds", "brain_run_last_failed_symbols", "brain_run_last_state",
                "brain_run_failures", "brain_drift_alarms", "brain_data_quality_open_findings", "brain_queue_depth")
FAILURE_WINDOW = dt.timedelta(hours=24)
# kombu's Redis transport keeps a queue's priorities 3, 6 and 9 in lists of their own beside it.
_PRIORITY_SEP, _PRIORITY_STEPS = "\x06\x16", (3, 6, 9)


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def queue_names() -> list[str]:
    from brain_tasks.celeryconfig import task_queues

    return [q.name for q in task_queues]


def queue_depths(broker_url: str, queues: Sequence[str], master: str | None = None) -> dict[str, int]:
    """Messages waiting in each queue's Redis lists (reserved, unacked ones are not counted); `master`
    names the master of a sentinel:// broker URL."""
    from brain_tasks.settings import redis_client

    client = redis_client(broker_url, master, socket_timeout=2, socket_connect_timeout=2)
    try:
        pipe = client.pipeline(transaction=False)
        keys = {q: [q, *(f"{q}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS)] for q in queues}
        for names in keys.values():
            for key in names:
                pipe.llen(key)
        lengths = iter(pipe.execute())
        return {q: sum(next(lengths) for _ in names) for q, names in keys.items()}
    finally:
        client.close()


class BrainCollector(Collector):
    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    def describe(self) -> list[Any]:
        return []  # collected only when scraped, never at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from brain_tasks.dashboard.data import ask_at_once

        s, e, now = self.settings, self.engine, timekeeping.now()
        a = ask_at_once({
            "bars": lambda: dv.last_bars(e, s.exchange, s.timeframe), "runs": lambda: dv.last_run_states(e),
            "versioned": lambda: dv.symbols_with_versions(e), "champions": lambda: dv.champion_rows(e),
            "walk_forward": lambda: dv.champion_metrics(e, "walk_forward"),
            "live": lambda: dv.champion_metrics(e, "live"),
            "last_runs": lambda: dv.last_finished_runs(e), "drift": lambda: dv.drift_counts(e),
            "failures": lambda: dv.failed_symbol_runs(e, since=now - FAILURE_WINDOW, limit=100_000),
            "quality": lambda: dv.open_findings(e),
            "audits": lambda: audits.counts_by_symbol(e, now - FAILURE_WINDOW)})
        known = set().union(a["bars"], a["runs"], a["versioned"], a["drift"], a["quality"], a["champions"])
        yield _gauge_value("brain_symbols", "Symbols the Brain knows of", len(known))
        age = _gauge("brain_data_age_seconds", "Seconds since the newest stored candle of the symbol", ["symbol"])
        for symbol, ts in sorted(a["bars"].items()):
            if ts is not None:
                age.add_metric([symbol], (now - ts).total_seconds())
        yield age
        yield _gauge_value("brain_data_max_age_seconds", "Data older than this is stale (BRAIN_MAX_DATA_AGE)",
                           s.max_data_age)
        yield from self._champions(now, a)
        yield _gauge_value("brain_model_max_age_seconds", "A version older than this at the bar decided has expired "
                           "(BRAIN_MODEL_MAX_AGE; 0: never)", s.model_max_age)
        audit = _gauge("brain_signal_audit_mismatches", "Served signals whose decision, made again from the rows "
                       "as stored now, differs (audits of the last 24 hours)", ["symbol"])
        for symbol, (_n, bad) in sorted(a["audits"].items()):
            audit.add_metric([symbol], bad)
        yield audit
        yield from self._runs(a)
        drift = _gauge("brain_drift_alarms", "Drifted features in the symbol's latest drift analysis", ["symbol"])
        for symbol, (drifted, _n, _as_of) in sorted(a["drift"].items()):
            drift.add_metric([symbol], drifted)
        yield drift
        quality = _gauge("brain_data_quality_open_findings", "Unresolved data-quality findings",
                         ["symbol", "severity"])
        for symbol, by_severity in sorted(a["quality"].items()):
            for severity, n in sorted(by_severity.items()):
                quality.add_metric([symbol, severity], n)
        yield quality
        if s.broker_url and is_redis_url(s.broker_url):
            depth = _gauge("brain_queue_depth", "Messages waiting in the broker queue", ["queue"])
            for queue, n in queue_depths(s.broker_url, queue_names(), s.redis_master).items():
                depth.add_metric([queue], n)
            yield depth

    def _champions(self, now: dt.datetime, a: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
        # The age serving's expiry judges: from the champion's last training bar to the bar it would decide
        # now (the symbol's newest stored bar; now when it has none).
        age = _gauge("brain_champion_age_seconds", "Seconds from the champion's last training bar to the symbol's "
                     "newest stored bar (expired beyond brain_model_max_age_seconds)", ["symbol", "model_type", "version"])
        for symbol, row in sorted(a["champions"].items()):
            latest = a["bars"].get(symbol) or now
            age.add_metric([symbol, row.model_type, str(row.version)], (latest - row.data_end).total_seconds())
        yield age
        sharpe = _gauge("brain_champion_sharpe", "Champion's annualised Sharpe ratio (walk_forward: out of "
                        "sample; live: since it traded)", ["symbol", "evaluation"])
        total = _gauge("brain_champion_total_return", "Champion's total return", ["symbol", "evaluation"])
        for evaluation in ("walk_forward", "live"):
            for symbol, metrics in sorted(a[evaluation].items()):
                if "sharpe" in metrics:
                    sharpe.add_metric([symbol, evaluation], metrics["sharpe"])
                if "total_return" in metrics:
                    total.add_metric([symbol, evaluation], metrics["total_return"])
        yield sharpe
        yield total

    def _runs(self, a: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
        duration = _gauge("brain_run_last_duration_seconds", "Wall time of the newest finished run", ["kind"])
        finished = _gauge("brain_run_last_finished_timestamp_seconds", "When the newest run finished", ["kind"])
        failed = _gauge("brain_run_last_failed_symbols", "Symbols that failed in the newest finished run", ["kind"])
        state = _gauge("brain_run_last_state", "1 for the state of the newest finished run", ["kind", "state"])
        for kind, run in sorted(a["last_runs"].items()):
            duration.add_metric([kind], run["duration"])
            finished.add_metric([kind], run["finished_at"].timestamp())
            failed.add_metric([kind], run["failed"])
            for name in sorted({*RUN_STATES, run["state"]}):
                state.add_metric([kind, name], 1.0 if name == run["state"] else 0.0)
        yield from (duration, finished, failed, state)
        by_step: dict[str, int] = {}
        for row in a["failures"]:
            by_step[row["step"]] = by_step.get(row["step"], 0) + 1
        failures = _gauge("brain_run_failures", "Failed symbols of runs in the last 24 hours, by the step "
                          "that failed", ["step"])
        for step, n in sorted(by_step.items()):
            failures.add_metric([step], n)
        yield failures


def _gauge_value(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def make_registry(engine: sa.Engine, settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrainCollector(engine, settings))
    return registry
