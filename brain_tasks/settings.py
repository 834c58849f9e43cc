"""The one place configuration is read.

Everything configurable comes from the environment (secrets included: never from files in the repo),
is read once into a frozen `Settings`, and is passed down from there.  Nothing else in the package
calls `os.environ`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import unquote, urlsplit

from brain_tasks.errors import BrokerUnavailableError, DatabaseUnavailableError

if TYPE_CHECKING:
    import redis
    import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ("lightgbm", "xgboost", "baseline")
DEVICES = ("auto", "cpu", "cuda")
SENTINEL_PORT = 26379
# Under Sentinel a socket that never answers (a host gone without a reset) must fail in seconds, so the
# client asks the sentinels again instead of hanging on a dead master for the OS timeout (minutes).
SENTINEL_SOCKET_TIMEOUT_S = 10.0
# target_session_attrs values that a read-only standby satisfies: the Brain writes, so it refuses them.
_STANDBY_SESSION_ATTRS = ("any", "read-only", "standby", "prefer-standby")
_SECRET_QUERY_KEYS = re.compile(r"(pass|secret|token|key)", re.IGNORECASE)


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
    # Redis Sentinel (`BRAIN_BROKER_URL=sentinel://h1:26379;sentinel://h2:26379`): the name of the master
    # the sentinels monitor.  Broker, result backend and RedBeat's lock all follow it through a failover.
    redis_master: str | None = None
    # Seconds a Redis socket may wait for a reply or a connection before it fails (and, under Sentinel,
    # the sentinels are asked for the master again).  None: the client libraries' defaults for a plain
    # redis:// URL, SENTINEL_SOCKET_TIMEOUT_S for sentinel:// URLs.
    redis_socket_timeout: float | None = None

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
    def sentinel(self) -> bool:
        """The broker is reached through Redis Sentinel."""
        return is_sentinel_url(self.broker_url)

    @property
    def effective_redis_socket_timeout(self) -> float | None:
        if self.redis_socket_timeout is not None:
            return self.redis_socket_timeout
        return SENTINEL_SOCKET_TIMEOUT_S if self.sentinel or is_sentinel_url(self.result_backend) else None

    @property
    def effective_result_backend(self) -> str:
        if self.result_backend:
            return self.result_backend
        if is_redis_url(self.broker_url):  # sentinel:// too: Celery's SentinelBackend takes the same URL
            return self.broker_url
        if not self.broker_url:  # embedded: files (brain_tasks.service.embedded.ResultBackend joins chords with them)
            return f"file://{(self.home / 'results').resolve()}"
        return f"db+sqlite:///{(self.home / 'results.db').resolve()}"

    @property
    def broker_folder(self) -> Path:
        return (self.home / "broker").resolve()

    def describe(self) -> dict[str, str]:
        """The settings with every password redacted, for logs and `--help` output."""
        return {
            "database": redact_url(self.database_url),
            "broker": redact_url(self.broker_url) if self.broker_url else "embedded (filesystem transport)",
            "result_backend": redact_url(self.effective_result_backend),
        }


def from_environ(env: Mapping[str, str]) -> Settings:
    """Build settings from an environment mapping (tests pass their own)."""
    base = Settings()
    get = env.get
    settings = Settings(
        database_url=normalize_database_url(get("BRAIN_DATABASE_URL") or base.database_url),
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
        redis_master=get("BRAIN_REDIS_MASTER") or None,
        redis_socket_timeout=float(get("BRAIN_REDIS_SOCKET_TIMEOUT")) if get("BRAIN_REDIS_SOCKET_TIMEOUT") else None,
    )
    _check_redis(settings)
    return settings


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


# --- URLs: what a broker or database URL means, checked before anything connects -------------------

def redact_url(url: str | sa.URL) -> str:
    """`url` with its password (and secret-looking query values) replaced by ``***``; every part of a
    ``;``-separated list of sentinel URLs is redacted."""
    from sqlalchemy.engine import make_url

    if isinstance(url, str) and ";" in url and "://" in url:
        return ";".join(redact_url(part) for part in url.split(";"))
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - an unparsable URL must still be safe to print
        return re.sub(r"(://[^:/@;]*:)[^@;]*@", r"\1***@", str(url))
    query = {k: ("***" if _SECRET_QUERY_KEYS.search(k) else v) for k, v in parsed.query.items()}
    # The renderer percent-encodes query values; show the mask as written.
    return parsed.set(query=query).render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def is_sentinel_url(url: str | None) -> bool:
    """`url` names Redis sentinels (kombu's and Celery's `sentinel://h1:p;sentinel://h2:p` form)."""
    return bool(url) and str(url).startswith("sentinel://")


def is_redis_url(url: str | None) -> bool:
    """`url` is a Redis server, or the sentinels of one."""
    return bool(url) and str(url).startswith(("redis://", "rediss://", "sentinel://"))


@dataclass(frozen=True)
class SentinelURL:
    """A parsed `sentinel://[user:password@]h1:p[/db];sentinel://h2:p;…`: the password (and db) are the
    Redis master's, taken from the first part, as kombu and Celery take them."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_sentinel_url(url: str) -> SentinelURL:
    """The sentinels of `url`; a malformed list is refused with one line, password redacted."""
    parts = [p.strip() for p in url.split(";") if p.strip()]
    sentinels: list[tuple[str, int]] = []
    first = None
    for part in parts:
        try:
            split = urlsplit(part)
            port = split.port or SENTINEL_PORT
        except ValueError as exc:
            raise BrokerUnavailableError(f"BRAIN_BROKER_URL {redact_url(url)}: {exc}") from None
        if split.scheme != "sentinel" or not split.hostname:
            raise BrokerUnavailableError(f"BRAIN_BROKER_URL {redact_url(url)}: every part must be "
                                         "sentinel://host:port, separated by ';'")
        sentinels.append((split.hostname, port))
        first = first or split
    assert first is not None  # url starts with sentinel://
    path = first.path.strip("/")
    if path and not path.isdigit():
        raise BrokerUnavailableError(f"BRAIN_BROKER_URL {redact_url(url)}: the path must be a Redis db number")
    return SentinelURL(tuple(sentinels), int(path or 0), unquote(first.username) if first.username else None,
                       unquote(first.password) if first.password else None)


def _check_redis(s: Settings) -> None:
    """Sentinel URLs need the master's name; a master name without sentinels is a mistake too."""
    sentinel_urls = {name: url for name, url in (("BRAIN_BROKER_URL", s.broker_url),
                                                 ("BRAIN_RESULT_BACKEND", s.result_backend)) if is_sentinel_url(url)}
    for url in sentinel_urls.values():
        parse_sentinel_url(url)
    if sentinel_urls and not s.redis_master:
        name, url = next(iter(sentinel_urls.items()))
        raise BrokerUnavailableError(f"{name} {redact_url(url)} names Redis sentinels but BRAIN_REDIS_MASTER "
                                     "(the name of the master they monitor) is not set")
    if s.redis_master and not sentinel_urls:
        raise BrokerUnavailableError("BRAIN_REDIS_MASTER is set but neither BRAIN_BROKER_URL nor "
                                     "BRAIN_RESULT_BACKEND is a sentinel:// URL")


def redis_client(url: str, master: str | None = None, **options: Any) -> redis.Redis:
    """A redis-py client of the Redis at `url`; for sentinel URLs, of the current master named `master`
    (asked of the sentinels on every new connection, so it follows a failover)."""
    import redis as redis_lib
    from redis.sentinel import Sentinel

    if not is_sentinel_url(url):
        return redis_lib.Redis.from_url(url, **options)
    if not master:
        raise BrokerUnavailableError(f"{redact_url(url)} names Redis sentinels but no master name was given")
    parsed = parse_sentinel_url(url)
    sentinel = Sentinel(list(parsed.sentinels), sentinel_kwargs={k: v for k, v in options.items()
                                                                 if k.startswith("socket_")})
    return sentinel.master_for(master, db=parsed.db, username=parsed.username, password=parsed.password,
                               **options)


_LIBPQ_HOST_LIST = re.compile(r"^(?P<scheme>postgres(?:ql)?(?:\+\w+)?://)(?P<auth>[^@/?]*@)?(?P<hosts>[^/?]*,[^/?]*)"
                              r"(?P<rest>[/?].*)?$")


def normalize_database_url(url: str) -> str:
    """`url` as SQLAlchemy takes it; a multi-host PostgreSQL URL also made safe for the Brain's writes.

    libpq's host list (``postgresql+psycopg://u:pw@h1:5432,h2:5432/brain``) becomes SQLAlchemy's form
    (``…@/brain?host=h1:5432&host=h2:5432``), which psycopg connects to host after host.  A URL with
    several hosts gets ``target_session_attrs=read-write`` unless it names a value that a read-write
    server satisfies (``read-write`` or ``primary``): connecting to whichever host answers first could
    pick a read-only standby.  Any other URL is returned as it is.
    """
    match = _LIBPQ_HOST_LIST.match(url)
    if match:
        rest = match["rest"] or "/"
        path, _, query = rest.partition("?")
        hosts = "&".join(f"host={h}" for h in match["hosts"].split(",") if h)
        url = f"{match['scheme']}{match['auth'] or ''}{path if path.startswith('/') else '/'}?{hosts}" + (
            f"&{query}" if query else "")
    if not url.startswith("postgres") or "host=" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - left for the engine to refuse with its own message
        return url
    hosts = parsed.query.get("host", ())
    if isinstance(hosts, str) and "," not in hosts:
        return url
    attrs = parsed.query.get("target_session_attrs")
    if attrs is None:
        return parsed.update_query_dict({"target_session_attrs": "read-write"}).render_as_string(hide_password=False)
    if attrs in _STANDBY_SESSION_ATTRS:
        raise DatabaseUnavailableError(f"BRAIN_DATABASE_URL {redact_url(parsed)}: target_session_attrs={attrs} may "
                                       "connect to a read-only standby; the Brain writes: use read-write")
    return url
