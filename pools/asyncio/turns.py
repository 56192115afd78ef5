"""What the asyncio pool's loop tells the supervisor, once a loop turn rather than once a job.

Each report is a post of the supervisor's semaphore and a wake-up of its thread: a loop that
ends twenty coroutines in one turn sends their outcomes in one flush, and the start of a job
without a time limit only if it still runs a turn later (a quicker one's start rides on its
outcome, ``Outcome.began``). Jobs with a limit report their start at once, not through here.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

from pools.base import OnStart, Outcome


class TurnReports:
    """Loop-thread side, but for ``report_all`` (the watchdog's, for a loop that is held).

    A run waiting here has ``start_unreported`` set; whoever clears it under ``lock``
    (``report``, or the pool settling the run's outcome) owns the start, so that the start
    and the outcome cannot both carry it, nor the outcome pass it."""

    def __init__(self, lock: threading.Lock, on_start: OnStart,
                 deliver: Callable[[Outcome], None]) -> None:
        self.lock = lock
        self.on_start = on_start
        self.deliver = deliver
        self.loop: asyncio.AbstractEventLoop | None = None
        self._starts: list[Any] = []         # runs begun this turn (appended under lock)
        self._starts_before: list[Any] = []  # and the turn before
        self._ended: list[Outcome] = []
        self._due = False

    def start_later(self, run: Any) -> None:
        """(lock held, on the loop) ``run`` began without a limit: report it a turn on."""
        run.start_unreported = True
        self._starts.append(run)

    def ended(self, outcome: Outcome) -> None:
        """(on the loop) An outcome to send with this turn's flush."""
        self._ended.append(outcome)
        self.flush_soon()

    def flush_soon(self) -> None:
        """(on the loop) Have ``flush`` run once this turn's callbacks are done."""
        if not self._due:
            self._due = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """(on the loop) The starts of the turn before still running, then the outcomes."""
        self._due = False
        if self._starts_before or self._starts:
            with self.lock:
                self._report(self._starts_before)
                self._starts_before, self._starts = self._starts, []
            if self._starts_before:
                self.flush_soon()
        ended, self._ended = self._ended, []
        for outcome in ended:
            self.deliver(outcome)

    def report_all(self) -> None:
        """(any thread) Every start still unreported, now."""
        with self.lock:
            self._report(self._starts_before)
            self._report(self._starts)
            self._starts_before, self._starts = [], []

    def _report(self, runs: list) -> None:
        for run in runs:
            if run.start_unreported:
                run.start_unreported = False
                self.on_start(run.job.id)
