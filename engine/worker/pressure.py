"""Redis refusing writes: out of memory under ``maxmemory`` with ``noeviction``.

Redis then answers ``-OOM`` to every command that may grow memory (SET, XADD, ZADD, EVAL
whose first write is one), but still runs the others (XREADGROUP, XACK, XDEL, PEXPIRE,
XPENDING). The worker must neither die nor keep taking work it cannot report. ``Pressure``
is the one flag its threads share: the writer, the heartbeat and housekeeping raise it when
Redis refuses one of their writes; the fetch threads fetch nothing while it is up; the
writer sends results before acks in separate round trips meanwhile (an ack is never taken
for a result Redis refused). It comes down when a refused write goes through again (the
writer's retry or the next heartbeat). It logs one line every LOG_EVERY seconds, not one
per refusal.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

log = logging.getLogger("engine.worker")

#: seconds between two log lines about the same refusal
LOG_EVERY = 5.0
#: seconds a fetch thread waits before it looks at the flag again
FETCH_PAUSE = 0.2


def is_oom(error: BaseException) -> bool:
    """Redis refused a command for lack of memory (a plain reply, or inside a script)."""
    return isinstance(error, redis.exceptions.OutOfMemoryError) or (
        isinstance(error, redis.ResponseError)
        and "command not allowed when used memory" in str(error))


class Throttled:
    """A warning logged at most once every LOG_EVERY seconds; the rest are counted."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        self.every = every
        self._next = 0.0
        self._skipped = 0
        self._lock = threading.Lock()

    def warning(self, text: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._skipped += 1
                return
            skipped, self._skipped = self._skipped, 0
            self._next = now + self.every
        suffix = f" ({skipped} more like it since the last line)" if skipped else ""
        log.warning(text + suffix, *args)


class Pressure:
    """Whether Redis refuses this worker's writes now; shared by its threads."""

    def __init__(self) -> None:
        self.refusing = False       #: read without a lock: a stale read costs one turn
        self._since = 0.0
        self._lock = threading.Lock()
        self._log = Throttled()
        self._skip_log = Throttled()
        #: commands the writer holds for Redis (for the log line)
        self.owed = 0

    def refused(self, detail: str) -> None:
        """A write was refused for memory; ``detail`` says whose and what happened."""
        with self._lock:
            if not self.refusing:
                self.refusing = True
                self._since = time.monotonic()
        self._log.warning("Redis is out of memory and refuses writes (%s): fetching "
                          "paused, %d command(s) owed and retried with backoff, heartbeat "
                          "kept by PEXPIRE", detail, self.owed)

    def skipped(self, what: str, exc: BaseException) -> None:
        """``what`` (housekeeping, say) gave up a round on ``exc``: one line now and then."""
        if is_oom(exc):
            self.refused(f"{what} skipped: {exc}")
        else:
            self._skip_log.warning("%s skipped: Redis said %s", what, exc)

    def accepted(self) -> None:
        """A write Redis had refused went through: memory is back."""
        if not self.refusing:
            return
        with self._lock:
            if not self.refusing:
                return
            self.refusing = False
            since = self._since
        log.warning("Redis takes writes again after %.1f s: fetching resumes",
                    time.monotonic() - since)
