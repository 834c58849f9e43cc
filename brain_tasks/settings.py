"""The one place configuration is read.

Everything configurable comes from the environment (secrets included: never from files in the repo),
is read once into a frozen `Settings`, and is passed down from there.  Nothing else in the package
calls `os.environ`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ("lightgbm", "xgboost", "baseline")
DEVICES = ("auto", "cpu", "cuda")


def _csv(value: str | None, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    if not value:
        return default
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _hhmm(value: str) -> tuple[int, int]:
    hour, _, minute = value.partition(":")
    h, m = int(hour), int(minute or 0)
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError(f"not a UTC time of day (HH:MM): {value!r}")
    return h, m


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///brain.db"
    broker_url: str | None = None          # None: embedded mode
    result_backend: str | None = None
    home: Path = Path(".brain")            # embedded broker folders, results and beat state
    exchange: str = "freqtrade"            # the source key candles are read from when training
    timeframe: str = "5m"
    symbols: tuple[str, ...] = ()          # the universe beat retrains daily
    models: tuple[str, ...] = DEFAULT_MODELS
    retrain_at: tuple[int, int] = (2, 0)   # UTC
    nightly_at: tuple[int, int] = (3, 30)  # UTC, after the retrain
    train_soft_time_limit: int = 1500
    train_time_limit: int = 1800
    task_time_limit: int = 600             # collect / analysis tasks
    visibility_timeout: int = 7200         # > every hard time limit and countdown (Redis re-delivery)
    beat_lock_timeout: int = 300          # RedBeat: a dead beat's lock expires after this
    concurrency: int = field(default_factory=lambda: os.cpu_count() or 2)
    sample_dir: Path = REPO_ROOT / "sample" / "freqtrade-testdata"
    seed: int = 42
    device: str = "auto"                   # where sequence models (and, if `cuda`, XGBoost) train
    deep_queue: str | None = None          # e.g. `train_gpu`: the queue that takes sequence-model training
    # Training as of a day whose newest stored bar is older than this at the day's end is `stale`.
    max_data_age: int = 86400
    # Paired out-of-time bars needed before a promotion or a live rollback is judged (288 = a day of 5m).
    min_evidence_bars: int = 288
    # The dashboard's credentials: `user:password` (HTTP basic) and/or a bearer token.
    dashboard_auth: str | None = field(default=None, repr=False)
    dashboard_token: str | None = field(default=None, repr=False)
    # PPO timesteps of the position-sizing agent per symbol (brain_tasks.train_sizer); 0 turns it off.
    sizer_timesteps: int = 16_384
    # A model trades a regime only when its deflated Sharpe ratio over every trial reaches this.
    dsr_level: float = 0.95
    # A pool child is replaced after a task that leaves it above this resident size (0: never).  About
    # four times the peak of a real-sized training (~520 MB, bench/train.py): only a leak or an outsized
    # symbol triggers it.  Replaces recycling every 200 tasks, which re-imported the ML stack each time.
    max_memory_per_child_mb: int = 2048
    # A bar whose close is more than this many times (or less than 1/this of) the previous close is
    # implausible: rejected at collection and skipped by training (a 1e308 print, a unit mix-up).
    max_bar_ratio: float = 100.0
    # Serving: a latest bar whose close is older than this many seconds is stale (None: one bar).
    signal_max_age: int | None = None
    # Beat's bar-close canvas (collect, then publish_signals) runs every this many seconds (None: at
    # each close of `timeframe`).
    signals_every: int | None = None
    # Serving: a version whose last training bar is older than this (seconds) at the bar decided is
    # expired, and its signals are not tradeable (0: never expires).  Three days: see docs/operations.md.
    model_max_age: int = 3 * 86400

    # News and social sentiment (brain_tasks.service.feeds): feeds as [NAME=]rss:URL or [NAME=]reddit:SUBREDDIT,
    # extra asset keywords as ASSET=word|word.
    news_feeds: tuple[str, ...] = ()
    sentiment_keywords: tuple[str, ...] = ()
    news_user_agent: str = "brain-tasks/0.1 (news sentiment collector)"
    news_min_interval: float = 1.0         # seconds between two requests to one feed
    news_stale_hours: float = 24.0         # a feed whose newest item is older is reported stale
    news_lookback_hours: int = 72          # how far back the first collection of a feed reaches
    # Runs (reconcile_runs): how often open attempts are checked, how long past a step's hard time limit
    # a symbol may go without progress (and with no live task) before its chain is re-driven, and how
    # many re-drives it gets before it is marked failed.
    reconcile_interval: int = 300
    stall_timeout: int = 600
    max_redrives: int = 2
    # PostgreSQL connections one process keeps at most (its pool; no overflow).  A task holds one for its
    # claim and one for its work; 0 keeps none between uses (NullPool), for a PgBouncer in front.
    db_pool_size: int = 3

    @property
    def task_soft_time_limit(self) -> int:
        """The soft limit of collect / analysis tasks: 30 s before the hard one, or a tenth of it when the
        hard limit is short (18 s minus 30 used to leave a soft limit of 1 s, which a loaded machine
        exceeded in the fan-out task itself)."""
        return max(1, self.task_time_limit - min(30, max(1, self.task_time_limit // 10)))

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def effective_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return "filesystem://"

    @property
    def effective_result_backend(self) -> str:
        if self.result_backend:
            return self.result_backend
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        if not self.broker_url:  # embedded: files (brain_tasks.service.embedded.ResultBackend joins chords with them)
            return f"file://{(self.home / 'results').resolve()}"
        return f"db+sqlite:///{(self.home / 'results.db').resolve()}"

    @property
    def broker_folder(self) -> Path:
        return (self.home / "broker").resolve()

    def describe(self) -> dict[str, str]:
        """The settings with every password redacted, for logs and `--help` output."""
        from brain_tasks.brain.db import redact_url as redact

        return {
            "database": redact(self.database_url),
            "broker": redact(self.broker_url) if self.broker_url else "embedded (filesystem transport)",
            "result_backend": redact(self.effective_result_backend),
        }


def from_environ(env: Mapping[str, str]) -> Settings:
    """Build settings from an environment mapping (tests pass their own)."""
    base = Settings()
    get = env.get
    return Settings(
        database_url=get("BRAIN_DATABASE_URL") or base.database_url,
        broker_url=get("BRAIN_BROKER_URL") or None,
        result_backend=get("BRAIN_RESULT_BACKEND") or None,
        home=Path(get("BRAIN_HOME") or base.home),
        exchange=get("BRAIN_EXCHANGE") or base.exchange,
        timeframe=get("BRAIN_TIMEFRAME") or base.timeframe,
        symbols=_csv(get("BRAIN_SYMBOLS")),
        models=_csv(get("BRAIN_MODELS"), DEFAULT_MODELS),
        retrain_at=_hhmm(get("BRAIN_RETRAIN_AT") or "02:00"),
        nightly_at=_hhmm(get("BRAIN_NIGHTLY_AT") or "03:30"),
        train_soft_time_limit=int(get("BRAIN_TRAIN_SOFT_TIME_LIMIT") or base.train_soft_time_limit),
        train_time_limit=int(get("BRAIN_TRAIN_TIME_LIMIT") or base.train_time_limit),
        task_time_limit=int(get("BRAIN_TASK_TIME_LIMIT") or base.task_time_limit),
        visibility_timeout=int(get("BRAIN_VISIBILITY_TIMEOUT") or base.visibility_timeout),
        beat_lock_timeout=int(get("BRAIN_BEAT_LOCK_TIMEOUT") or base.beat_lock_timeout),
        concurrency=int(get("BRAIN_CONCURRENCY") or base.concurrency),
        sample_dir=Path(get("BRAIN_SAMPLE_DIR") or base.sample_dir),
        seed=int(get("BRAIN_SEED") or base.seed),
        device=_device(get("BRAIN_DEVICE") or base.device),
        deep_queue=get("BRAIN_DEEP_QUEUE") or None,
        max_data_age=int(get("BRAIN_MAX_DATA_AGE") or base.max_data_age),
        min_evidence_bars=int(get("BRAIN_MIN_EVIDENCE_BARS") or base.min_evidence_bars),
        dashboard_auth=get("BRAIN_DASHBOARD_AUTH") or None,
        dashboard_token=get("BRAIN_DASHBOARD_TOKEN") or None,
        sizer_timesteps=int(get("BRAIN_SIZER_TIMESTEPS") or base.sizer_timesteps),
        dsr_level=float(get("BRAIN_DSR_LEVEL") or base.dsr_level),
        max_memory_per_child_mb=int(get("BRAIN_MAX_MEMORY_PER_CHILD_MB") or base.max_memory_per_child_mb),
        max_bar_ratio=float(get("BRAIN_MAX_BAR_RATIO") or base.max_bar_ratio),
        news_feeds=_csv(get("BRAIN_NEWS_FEEDS")),
        sentiment_keywords=_csv(get("BRAIN_SENTIMENT_KEYWORDS")),
        news_user_agent=get("BRAIN_NEWS_USER_AGENT") or base.news_user_agent,
        news_min_interval=float(get("BRAIN_NEWS_MIN_INTERVAL") or base.news_min_interval),
        news_stale_hours=float(get("BRAIN_NEWS_STALE_HOURS") or base.news_stale_hours),
        news_lookback_hours=int(get("BRAIN_NEWS_LOOKBACK_HOURS") or base.news_lookback_hours),
        reconcile_interval=int(get("BRAIN_RECONCILE_INTERVAL") or base.reconcile_interval),
        stall_timeout=int(get("BRAIN_STALL_TIMEOUT") or base.stall_timeout),
        max_redrives=int(get("BRAIN_MAX_REDRIVES") or base.max_redrives),
        db_pool_size=int(get("BRAIN_DB_POOL_SIZE") or base.db_pool_size),
        signal_max_age=int(get("BRAIN_SIGNAL_MAX_AGE")) if get("BRAIN_SIGNAL_MAX_AGE") else None,
        signals_every=int(get("BRAIN_SIGNALS_EVERY")) if get("BRAIN_SIGNALS_EVERY") else None,
        model_max_age=_duration("BRAIN_MODEL_MAX_AGE", get("BRAIN_MODEL_MAX_AGE"), base.model_max_age),
    )


def _duration(name: str, value: str | None, default: int) -> int:
    """Seconds from a duration: plain seconds (`172800`) or a number and a ccxt unit (`48h`, `2d`, `1w`)."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return int(value)
    from brain_tasks.timekeeping import timeframe_seconds  # the one unit parser; imported only when needed

    try:
        return timeframe_seconds(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be seconds or a duration such as 48h or 2d, got {value!r}") from exc


def _device(value: str) -> str:
    if value not in DEVICES:
        raise ValueError(f"BRAIN_DEVICE must be one of {DEVICES}, got {value!r}")
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    s = from_environ(os.environ)
    if s.visibility_timeout <= max(s.train_time_limit, s.task_time_limit):
        raise ValueError(
            "BRAIN_VISIBILITY_TIMEOUT must exceed every hard time limit, or Redis re-delivers a task "
            "that is still running")
    if not s.max_bar_ratio > 1:
        raise ValueError("BRAIN_MAX_BAR_RATIO must be a number above 1 (a bar-to-bar price ratio)")
    return s
