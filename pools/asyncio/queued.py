"""The jobs the asyncio pool holds behind its running ones (its prefetch): coroutine jobs
waiting for a slot in ``_incoming``, plain jobs waiting for a sync thread.

One that has not started can be given up without an Outcome: one job (``withdraw``: a
revoke, an expiry), every one (``take_back``: the supervisor back from a pause; a stop). A
given-up job is marked ``abandoned`` under the pool's lock, where a start is decided too,
so it never starts: the loop closes its coroutine when it reaches it, a sync thread skips
it. Once a supervisor's loop drives the pool (``turned``), a queued job starts only while
that loop turned in the last LOOP_FRESH seconds: after a pause of the process, nothing
starts before the loop took the queue back.
"""

from __future__ import annotations

import threading
import time

from pools.base import LOOP_FRESH


class QueuedJobs:
    """Mixin of ``AsyncioPool``: uses its ``_lock``, ``_runs``, ``_incoming``, ``_loop``,
    ``_stopping``, ``_on_loop`` and ``_begin_waiting``."""

    _turned: float | None = None     # the supervisor's last turn; None: no loop drives us
    _loop_gated = False              # the loop holds queued coroutines back for a turn
    _threads_gated = 0               # sync threads waiting for a turn
    _turn: threading.Condition

    def turned(self) -> None:
        """The supervisor's loop turned (``Pool.turned``): what waits for it may start."""
        self._turned = time.monotonic()
        if self._loop_gated:
            self._loop_gated = False
            self._on_loop(self._begin_waiting)
        if self._threads_gated:
            with self._turn:
                self._turn.notify_all()

    def _stale(self) -> bool:
        """Has the supervisor's loop not turned for LOOP_FRESH (a queued job must wait)?"""
        turned = self._turned
        return turned is not None and time.monotonic() - turned > LOOP_FRESH

    def _hold_for_a_turn(self) -> bool:
        """On the loop, before queued coroutines begin: True when they must wait for the
        next turn (``turned`` wakes the loop; a timer covers a turn that raced this)."""
        if not self._stale():
            return False
        if not self._loop_gated:
            self._loop_gated = True
            self._loop.call_later(LOOP_FRESH, self._look_again)
        return True

    def _look_again(self) -> None:
        """On the loop, the timer of ``_hold_for_a_turn``: begin what waits, if it may."""
        self._loop_gated = False
        self._begin_waiting()

    def _wait_for_a_turn(self) -> None:
        """On a sync thread, before it starts a queued plain job."""
        while self._stale() and not self._stopping:
            with self._turn:
                self._threads_gated += 1
                try:
                    self._turn.wait(LOOP_FRESH)
                finally:
                    self._threads_gated -= 1

    def withdraw(self, job_id: str) -> bool:
        """A queued job, given up before it starts (``Pool.withdraw``)."""
        with self._lock:
            run = self._runs.get(job_id)
            if run is None or run.started is not None:
                return False
            del self._runs[job_id]
            run.abandoned = True
            return True

    def take_back(self) -> list[str]:
        """Every queued job, given up before it starts, in submission order
        (``Pool.take_back``)."""
        with self._lock:
            return self._give_up_unstarted()

    def _give_up_unstarted(self) -> list[str]:
        """(lock held) Mark every job that has not started abandoned; their ids."""
        waiting = [job_id for job_id, run in self._runs.items() if run.started is None]
        for job_id in waiting:
            self._runs.pop(job_id).abandoned = True
        return waiting

    def _take_back_unstarted(self) -> list[str]:
        """(lock held) A stop: start nothing more, give up every job that has not started
        (they get no outcome) and close the coroutines that never began."""
        self._stopping = True
        never_started = self._give_up_unstarted()
        while True:
            try:
                _, coro = self._incoming.popleft()
            except IndexError:
                break
            coro.close()
        return never_started
