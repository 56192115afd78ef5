"""The clock of time limits: a deadline heap for the supervisor, a one-shot alarm for solo.

The supervisor sleeps until ``Deadlines.next_deadline()`` and asks ``due(now)`` which limits
fired; pools only carry them out. Solo runs tasks on the supervisor's own thread, so it
arms ``Alarm`` instead (SIGALRM; the handler is installed by ``engine.worker.ossignals``).
"""

from __future__ import annotations

import heapq
import signal
import threading
import time
from typing import Callable

from engine.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

SOFT, HARD = "soft", "hard"

now = time.monotonic


def resolve_limits(*layers: tuple[float | None, float | None]) -> tuple[float | None, float | None]:
    """Merge (soft, hard) pairs, first non-None wins for each; a soft limit at or past the
    hard one is dropped, since the hard limit would end the task first."""
    soft = next((s for s, _ in layers if s is not None), None)
    hard = next((h for _, h in layers if h is not None), None)
    soft = soft if soft and soft > 0 else None
    hard = hard if hard and hard > 0 else None
    if soft is not None and hard is not None and soft >= hard:
        soft = None
    return soft, hard


class Deadlines:
    """A heap of (deadline, job id, kind). Cancelled entries are dropped lazily."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str, str]] = []
        self._live: dict[str, dict[str, float]] = {}

    def __len__(self) -> int:
        return len(self._live)

    def add(self, job_id: str, *, soft: float | None, hard: float | None,
            start: float | None = None) -> None:
        """Start the clocks of ``job_id``: ``soft``/``hard`` are durations from ``start``."""
        start = now() if start is None else start
        kinds = {}
        if soft is not None:
            kinds[SOFT] = start + soft
        if hard is not None:
            kinds[HARD] = start + hard
        if not kinds:
            return
        self._live[job_id] = kinds
        for kind, deadline in kinds.items():
            heapq.heappush(self._heap, (deadline, job_id, kind))

    def cancel(self, job_id: str) -> None:
        self._live.pop(job_id, None)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, job_id, kind = heap[0]
            if self._live.get(job_id, {}).get(kind) == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def due(self, at: float | None = None) -> list[tuple[str, str]]:
        """Pop every (job id, kind) whose deadline is at or before ``at`` (default: now)."""
        at = now() if at is None else at
        fired = []
        heap = self._heap
        while heap and heap[0][0] <= at:
            deadline, job_id, kind = heapq.heappop(heap)
            kinds = self._live.get(job_id)
            if kinds is None or kinds.get(kind) != deadline:
                continue
            del kinds[kind]
            if not kinds:
                del self._live[job_id]
            fired.append((job_id, kind))
        return fired


class Alarm:
    """One-shot SIGALRM timer raising the limit exceptions in the main thread (solo pool).

    ``arm(soft, hard)`` before the task, ``disarm()`` after. A soft alarm raises
    SoftTimeLimitExceeded and re-arms for the hard one, which raises TimeLimitExceeded.
    """

    def __init__(self) -> None:
        self._hard_at: float | None = None
        self._pending: Callable[[], BaseException] | None = None

    @staticmethod
    def usable() -> bool:
        return threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")

    def arm(self, soft: float | None, hard: float | None) -> None:
        from engine.worker import ossignals   # the only module that installs handlers
        ossignals.install_alarm(self._fire)
        start = now()
        self._hard_at = start + hard if hard is not None else None
        if soft is not None:
            self._pending = SoftTimeLimitExceeded
            signal.setitimer(signal.ITIMER_REAL, soft)
        elif hard is not None:
            self._pending = TimeLimitExceeded
            signal.setitimer(signal.ITIMER_REAL, hard)

    def disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self._pending = None
        self._hard_at = None

    def _fire(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if pending is SoftTimeLimitExceeded and self._hard_at is not None:
            self._pending = TimeLimitExceeded
            signal.setitimer(signal.ITIMER_REAL, max(self._hard_at - now(), 0.001))
        if pending is TimeLimitExceeded:
            raise TimeLimitExceeded("hard time limit exceeded")
        raise SoftTimeLimitExceeded("soft time limit exceeded")
