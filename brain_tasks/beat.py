"""The beat scheduler: RedBeat, kept alive and single through a Redis failover or restart.

RedBeat holds a lock in Redis so that only one beat schedules.  As shipped, a beat dies when Redis goes
away under it: the running beat's `lock.extend` on the next tick raises (a refused connection, or
Sentinel's "no master found" while it elects one), and a standby beat whose blocking lock wait was cut
off comes out of it without the lock and fails on its first tick (seen here: both beats of a Sentinel
pair dead after one failover, nobody scheduling).

Here a tick that cannot reach Redis schedules nothing and tries again a second later; the lock is
extended as soon as Redis answers again (the master a failover promoted holds the replicated lock).  A
lock that is gone or owned by another beat (it expired during a long outage, or its last write was lost
with an asynchronously replicated master) is dropped: this beat then only tries to take it, without
blocking, once per loop, and schedules again only once it holds it.  Same class for one Redis server
and for Sentinel: only the URL differs.
"""

from __future__ import annotations

from typing import Any

import redis
from celery.utils.log import get_logger
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, RedBeatScheduler, get_redis
from redis.exceptions import LockError

log = get_logger(__name__)

# What a Redis failover or restart raises at a client (MasterNotFoundError is a ConnectionError).
REDIS_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)
RETRY_S = 1.0


class FailoverRedBeatScheduler(RedBeatScheduler):
    """RedBeat whose ticks survive Redis going away; at most one beat schedules at any time."""

    def tick(self, min: Any = min, **kwargs: Any) -> float:  # noqa: A002 - Celery's own signature
        if self.lock_key:
            held = self._hold_lock()
            if held is None:
                return RETRY_S
            if not held:
                return self.max_interval
        remaining = []
        try:
            for entry in self.schedule.values():
                next_time_to_run = self.maybe_due(entry, **self._maybe_due_kwargs)
                if next_time_to_run:
                    remaining.append(next_time_to_run)
        except RuntimeError:
            log.debug("beat: RuntimeError", exc_info=True)
        except REDIS_UNAVAILABLE as exc:
            log.warning("beat: Redis unavailable while reading the schedule (%s); retrying", exc)
            return RETRY_S
        return min(remaining + [self.max_interval])

    def _hold_lock(self) -> bool | None:
        """True: this beat holds the lock (extended); False: another beat does; None: Redis is away."""
        try:
            if self.lock is None:
                lock = self._new_lock()
                if not lock.acquire(blocking=False):
                    return False
                self.lock = lock
                log.info("beat: Acquired lock")
                return True
            self.lock.extend(int(self.lock_timeout))
            return True
        except LockError as exc:  # expired, taken over, or lost with the old master's last writes
            log.warning("beat: Lost the lock (%s); scheduling only once it is taken again", exc)
            self.lock = None
            return False
        except REDIS_UNAVAILABLE as exc:
            log.warning("beat: Redis unavailable (%s); not scheduling until it answers", exc)
            return None

    def _new_lock(self) -> Any:
        # As redbeat.schedulers.acquire_distributed_beat_lock builds it: extending sets the timeout
        # anew instead of adding to what is left.
        client = get_redis(self.app)
        lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
        lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
        return lock

    def close(self) -> None:
        try:
            super().close()
        except (LockError, *REDIS_UNAVAILABLE) as exc:  # the lock then expires on its own
            log.warning("beat: Could not release the lock (%s)", exc)
