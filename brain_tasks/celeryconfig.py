"""Celery settings for brain_tasks, built from the environment through `brain_tasks.settings`.

Why each non-default is here (see FIELD-NOTES.md):
- JSON only: a worker never unpickles what a broker hands it.
- late acks + reject on worker lost + idempotent tasks = at-least-once delivery that survives a
  worker killed mid-task; the Redis visibility timeout must exceed the longest task, or a task that
  is still running gets delivered a second time.
- spawn, not fork: LightGBM / XGBoost hang in a forked child once OpenMP ran in the parent.
- prefetch 1: training tasks are long; a prefetched one would wait behind its sibling.
"""

from typing import Any

from kombu import Queue

from brain_tasks.settings import get_settings

_s = get_settings()

broker_url = _s.effective_broker_url
result_backend = _s.effective_result_backend

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
event_serializer = "json"

timezone = "UTC"
enable_utc = True

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_pool_start_method = "spawn"
# A broker restart (issue 11): cancelling running late-ack tasks on a connection loss lost them.  The
# cancel stores a RETRY state in the result backend first; with Redis as the backend that store fails
# while Redis is down, the cancel is left half done, and the terminated task is then announced REVOKED
# and *acknowledged* on the new connection (celery/worker/request.py: _announce_cancelled,
# on_failure -> _announce_revoked), so nothing is redelivered.  Instead the task runs on: its result
# store and its chain's next message retry until Redis is back, and its message, left in Redis'
# unacked set, comes back after the visibility timeout if the task could not acknowledge it.  A copy
# running twice is safe (idempotent steps, claims); whatever is still lost, reconcile_runs re-drives.
worker_cancel_long_running_tasks_on_connection_loss = False
result_backend_always_retry = True
result_backend_max_retries = 60
task_publish_retry_policy = {"max_retries": 60, "interval_start": 0, "interval_step": 0.5, "interval_max": 2}
worker_concurrency = _s.concurrency
# A leaking native library cannot grow a worker process forever: a child above this size (KiB) is
# replaced after its task.  Not a task count: each new spawned child re-imports its modules, and
# recycling every 200 tasks cost 3-5x plain Celery's throughput (FIELD-NOTES, round 2).
worker_max_memory_per_child = _s.max_memory_per_child_mb * 1024 or None
# A spawned child imports the tasks and the ML stack before it reports UP: 2.5-3 s on an idle 2-core
# machine, 4-15 s on a loaded one and up to ~30 s with every core busy, beyond Celery's default of 4 s:
# the pool killed replacement after replacement (13 in 70 s; 36 in 3 min in tests/test_pool.py).  The
# import stays at start-up (lazily it took 1-3.6 s, but moved 2-15 s into the first training's time
# limit); the cost of a long timeout is only that a child hung at start holds its slot that long.
worker_proc_alive_timeout = 120.0
broker_connection_retry_on_startup = True

task_time_limit = _s.task_time_limit
task_soft_time_limit = _s.task_soft_time_limit
result_expires = 7 * 24 * 3600
# Monitoring costs nothing unless asked for: task events (and the STARTED state, and task names and
# arguments stored with results) cost a worker about 30 ms of CPU per symbol's chain and doubled the gap
# between tasks in bench/fanout.py.  Flower switches events on itself (it broadcasts `enable_events`
# every few seconds); the Brain's own progress is in its runs table, not in Celery's result states.
result_extended = False
task_track_started = False
task_send_sent_event = False
worker_send_task_events = False

task_default_queue = "collect"
task_queues = (Queue("collect"), Queue("train"), Queue("analysis"))
task_routes = {
    "brain_tasks.collect_*": {"queue": "collect"},
    "brain_tasks.data_quality_check": {"queue": "collect"},
    "brain_tasks.train_symbol": {"queue": "train"},
    "brain_tasks.compute_importance": {"queue": "train"},
    "brain_tasks.train_sizer": {"queue": "train"},
    "brain_tasks.replay_train": {"queue": "train"},
    "brain_tasks.replay_walk": {"queue": "train"},
    "brain_tasks.*": {"queue": "analysis"},
}

# BRAIN_DEEP_QUEUE (e.g. train_gpu): sequence-model training goes to its own queue, so GPU workers
# (`-Q train_gpu`) take only that work.  Same tuple as brain_tasks.ml.models.SEQUENCE_TYPES (a test
# checks), written out so the broker config never imports the ML stack.
SEQUENCE_MODEL_TYPES = ("lstm", "cnn", "transformer")


def route_deep_training(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> Any:
    """Route ``train_symbol`` of a sequence model type to the deep queue; None lets the table decide."""
    if name != "brain_tasks.train_symbol":
        return None
    model_type = kwargs.get("model_type") if kwargs else None
    if model_type is None and args and len(args) > 1:
        model_type = args[1]
    return {"queue": _s.deep_queue} if model_type in SEQUENCE_MODEL_TYPES else None


# Embedded mode's local worker consumes the three fixed queues only, so the deep queue needs a broker.
if _s.deep_queue and not _s.embedded:
    task_queues = (*task_queues, Queue(_s.deep_queue))
    task_routes = (route_deep_training, task_routes)

if _s.embedded:
    from brain_tasks.service.embedded import register_transport, result_backend_url

    # Kombu's filesystem transport, with messages made visible atomically (brain_tasks/embedded.py).
    broker_url = register_transport()
    # Result files, chords joined by counting their parts as on Redis (no chord_unlock polling).
    result_backend = result_backend_url(_s)
    # Folders shared by the CLI and the worker process it starts; the loop polls quickly because
    # the default one-second poll made chains of short tasks crawl (FIELD-NOTES: ~1 task/s).
    _folder = str(_s.broker_folder)
    _s.home.mkdir(parents=True, exist_ok=True)  # the SQLite result backend's file lives here
    broker_transport_options = {
        "data_folder_in": _folder,
        "data_folder_out": _folder,
        "processed_folder": str(_s.broker_folder.parent / "processed"),
        "control_folder": str(_s.broker_folder.parent / "control"),
        "store_processed": False,
        "polling_interval": 0.02,
    }
    # One message reserved per pool process on top of the one it runs: a process that finishes takes
    # the next task at once instead of after the loop's next poll of the folder (~30 ms per task,
    # ~15% of a run of short tasks).  The only worker here is this one, so nothing waits behind a long
    # task that another worker could have run; a killed worker loses the reserved messages too
    # (at-most-once, said), a stopped one puts them back.
    worker_prefetch_multiplier = 2
    # A chord's header results are stored before its last part counts, so the join only reads them;
    # this bounds a slow read (and the chord_unlock polling of an explicit BRAIN_RESULT_BACKEND=db+...).
    result_chord_join_timeout = 3.0
    beat_scheduler = "celery.beat:PersistentScheduler"
    beat_schedule_filename = str((_s.home / "celerybeat-schedule").resolve())
else:
    # kombu scans for deliveries older than the visibility timeout every 10 s but, by default, acts on
    # every tenth scan only: a killed worker's task came back up to 100 s after the timeout.  Every scan
    # acts now (one ZRANGE under a Redis mutex per worker every 10 s).
    broker_transport_options = {"visibility_timeout": _s.visibility_timeout, "unacked_restore_throttle": 1}
    result_backend_transport_options = {"visibility_timeout": _s.visibility_timeout}
    # One beat at a time: RedBeat holds a lock in Redis, a second beat waits for it.
    beat_scheduler = "brain_tasks.beat:FailoverRedBeatScheduler"
    redbeat_redis_url = _s.broker_url
    redbeat_lock_timeout = _s.beat_lock_timeout
    # The lock is extended on every tick: tick at least five times per lock lifetime.
    beat_max_loop_interval = max(1, _s.beat_lock_timeout // 5)
    _timeout = _s.effective_redis_socket_timeout
    if _timeout is not None:
        # A reply or a connection that does not come within the timeout fails the socket instead of
        # hanging on it (a master host gone without a TCP reset), and the command is retried once on a new
        # connection: under Sentinel, the master is asked of the sentinels again first.  (Unset for a
        # plain redis:// URL: the libraries' defaults, as before.)
        _sockets = {"socket_timeout": _timeout, "socket_connect_timeout": _timeout, "retry_on_timeout": True}
        broker_transport_options.update(_sockets)
        redis_socket_timeout = _timeout
        redis_socket_connect_timeout = _timeout
        redis_retry_on_timeout = True
        redbeat_redis_options = {"socket_timeout": _timeout}
    if _s.redis_master:
        # Redis Sentinel: the same Redis transport and result backend, given the master's name (kombu's
        # SentinelChannel, Celery's SentinelBackend); each new connection asks the sentinels where the
        # master is, so broker, results and chord counters follow a failover.  RedBeat picks its sentinel
        # client by the `redis-sentinel` scheme; its lock and schedule live on the master too.
        from brain_tasks.settings import parse_sentinel_url

        broker_transport_options["master_name"] = _s.redis_master
        result_backend_transport_options["master_name"] = _s.redis_master
        _sentinel = parse_sentinel_url(_s.broker_url or _s.effective_result_backend)
        redbeat_redis_url = "redis-sentinel://"
        redbeat_redis_options = {
            "sentinels": [list(address) for address in _sentinel.sentinels], "service_name": _s.redis_master,
            "db": _sentinel.db, "password": _sentinel.password, "username": _sentinel.username,
            "socket_timeout": _timeout,
            # Calls on the schedule are retried through a failover for as long as a dead beat keeps its lock.
            "retry_period": _s.beat_lock_timeout,
        }
