"""The threads pool: N slot threads in the supervisor's process, limits by async exceptions.

Soft limit: ``SoftTimeLimitExceeded`` raised asynchronously in the slot's thread. Hard limit:
the job is reported FAILURE/TimeLimitExceeded at once, its slot replaced by a fresh thread,
and the old thread, sent TimeLimitExceeded too, is left to end on its own; its result is
dropped. Timing is the supervisor's (``engine.limits``); this module only carries it out.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import threading
import time
from collections import deque

from engine.exceptions import NotSupported, SoftTimeLimitExceeded, TimeLimitExceeded
from pools.base import (LOOP_FRESH, Job, OnOutcome, OnStart, Outcome, Pool, PoolOptions,
                        Runner)

log = logging.getLogger(__name__)

# Our own function objects: ctypes.pythonapi caches attributes, and another module setting
# argtypes on the shared one must not turn our NULL (clear) into Py_None.
_raise_in = ctypes.pythonapi["PyThreadState_SetAsyncExc"]
_raise_in.argtypes = (ctypes.c_ulong, ctypes.py_object)
_clear_in = ctypes.pythonapi["PyThreadState_SetAsyncExc"]
_clear_in.argtypes = (ctypes.c_ulong, ctypes.c_void_p)

_RETIRE = None   # a queue entry telling one idle slot thread to exit (shrink, stop)



class _Slot:
    """One slot thread and the job it runs. Fields are guarded by the pool's lock."""

    __slots__ = ("thread", "job", "started", "killed", "abandoned")

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.job: Job | None = None
        self.started = 0.0
        self.killed = False       # kill() reported the job; the thread's own result is dropped
        self.abandoned = False    # stop/terminate gave up on the job; no outcome at all


class ThreadsPool(Pool):
    """Slot threads fed from one queue, which holds up to ``options.prefetch`` jobs a slot
    (the running one included): a slot thread goes from one job to the next without a turn
    of the supervisor's loop in between. See the module docstring for limits.

    Honest limits (also in docs/pool-authors.md):

    * An async exception is only seen between Python bytecodes. A task blocked in a C call
      (``time.sleep``, a socket read without timeout, a long regex, a C extension) does not
      see its soft limit until the call returns, and a killed one keeps its thread until
      then: ``info()['stuck']`` counts those threads and each kill logs a warning.
    * A task that catches ``TimeLimitExceeded`` (or ``BaseException``) can keep running; its
      result is still dropped and the job still counts as failed.
    * All slots share the GIL: CPU-bound tasks do not run in parallel (use prefork).

    Why not ``concurrent.futures`` (issue 2 suggested it): an executor cannot give up one
    stuck worker and replace it, so each killed blocking task would cost a slot for good; its
    threads are joined at interpreter exit, so one stuck task would hang the worker's
    shutdown; and it cannot shrink. Hand-rolled daemon slot threads do all three.
    """

    name = "threads"
    capabilities = frozenset({"interrupt", "kill", "grow", "shrink"})

    def __init__(self, concurrency: int, on_outcome: OnOutcome, *, runner: Runner,
                 on_start: OnStart | None = None, options: PoolOptions = PoolOptions()):
        super().__init__(concurrency, on_outcome, runner=runner, on_start=on_start,
                         options=options)
        self._cond = threading.Condition()
        self._queue: deque[Job | None] = deque()
        self._slots: set[_Slot] = set()
        self._stuck: set[_Slot] = set()
        self._outstanding = 0      # submitted, not yet settled on a live slot
        self._stopping = False
        self._killed_total = 0
        self._names = itertools.count(1)
        self.prefetch = max(1, options.prefetch)   # jobs a slot, queued ones included
        self._turned: float | None = None   # the loop's last turn; None: never told
        self._gated = 0                     # slot threads waiting for the loop to turn

    # -- lifecycle
    def start(self) -> None:
        if self.options.max_tasks_per_child or self.options.max_memory_per_child:
            raise NotSupported("threads pool has no child to recycle; "
                               "use prefork for max-tasks/max-memory-per-child")
        with self._cond:
            self._stopping = False
            for _ in range(self.concurrency):
                self._spawn()

    def _spawn(self) -> None:
        """Start one slot thread (lock held). Daemon: a stuck task must not hold up exit."""
        slot = _Slot()
        slot.thread = threading.Thread(target=self._work, args=(slot,), daemon=True,
                                       name=f"engine-threads-{next(self._names)}")
        self._slots.add(slot)
        slot.thread.start()

    def free_slots(self) -> int:
        with self._cond:
            if self._stopping:
                return 0
            return max(0, self.concurrency * self.prefetch - self._outstanding)

    def submit(self, job: Job) -> None:
        with self._cond:
            self._outstanding += 1
            self._queue.append(job)
            self._cond.notify()

    def turned(self) -> None:
        self._turned = time.monotonic()
        if self._gated:
            with self._cond:
                self._cond.notify_all()

    def _stale(self) -> bool:
        """(lock held) Has the loop not turned for LOOP_FRESH (the next job must wait)?"""
        return (self._turned is not None and self._queue[0] is not _RETIRE
                and time.monotonic() - self._turned > LOOP_FRESH)

    # -- the slot thread
    def _work(self, slot: _Slot) -> None:
        ident = threading.get_ident()
        while True:
            with self._cond:
                while not self._queue or self._stale():
                    if not self._queue:
                        self._cond.wait()
                        continue
                    self._gated += 1      # a turn notifies; the timeout covers a race
                    self._cond.wait(LOOP_FRESH)
                    self._gated -= 1
                job = self._queue.popleft()
                if job is _RETIRE:
                    self._slots.discard(slot)
                    return
                slot.job, slot.started = job, time.monotonic()
            outcome = None
            while True:
                # An async exception meant for the task may land in this frame instead (just
                # before or after the task's own frames): keep or make the outcome and settle
                # again. Once settled, nobody can aim at this thread (injection needs the lock
                # and slot.job), and any exception still pending was cleared with it.
                try:
                    if outcome is None:
                        outcome = self._execute(job)
                    report = self._settle(slot, job, ident, outcome)
                    break
                except (SoftTimeLimitExceeded, TimeLimitExceeded) as exc:
                    if outcome is None:
                        outcome = Outcome.from_exception(job.id, exc)
            if report is not None:
                self._deliver(report)
            if slot.killed or slot.abandoned:
                self._leave(slot, job)
                return

    def _execute(self, job: Job) -> Outcome:
        try:
            self.on_start(job.id)
            return self.runner.execute(job)
        except Exception as exc:     # the runner broke its promise, or a limit landed early
            return Outcome.from_exception(job.id, exc)

    def _settle(self, slot: _Slot, job: Job, ident: int, outcome: Outcome) -> Outcome | None:
        with self._cond:
            _clear_in(ident, None)
            slot.job = None
            if slot.killed or slot.abandoned:
                return None         # kill() already reported it, or stop gave it up
            self._outstanding -= 1
            return outcome

    def _deliver(self, outcome: Outcome) -> None:
        try:
            self.on_outcome(outcome)
        except Exception:            # the supervisor's bug must not cost us the slot
            log.exception("on_outcome failed for job %s", outcome.job_id)

    def _leave(self, slot: _Slot, job: Job) -> None:
        with self._cond:
            self._stuck.discard(slot)
            stuck = len(self._stuck)
        if slot.killed:
            log.info("thread of killed job %s ended after %.1fs; result discarded (%d stuck)",
                     job.id, time.monotonic() - slot.started, stuck)

    # -- limits
    def _running(self, job_id: str) -> _Slot | None:
        for slot in self._slots:
            if slot.job is not None and slot.job.id == job_id:
                return slot
        return None

    def interrupt(self, job_id: str) -> None:
        with self._cond:
            slot = self._running(job_id)
            if slot is not None:
                _raise_in(slot.thread.ident, SoftTimeLimitExceeded)

    def kill(self, job_id: str) -> None:
        with self._cond:
            slot = self._running(job_id)
            withdrawn = slot is None and self._withdraw(job_id)
            self._killed_total += withdrawn
            if slot is not None:
                slot.killed = True
                self._slots.discard(slot)
                self._stuck.add(slot)
                self._outstanding -= 1
                self._killed_total += 1
                if not self._stopping:
                    self._spawn()       # capacity is kept; the old thread ends when it can
                _raise_in(slot.thread.ident, TimeLimitExceeded)
                runtime, stuck = time.monotonic() - slot.started, len(self._stuck)
        if withdrawn:      # it waited in the queue (the pool's prefetch): it never starts
            self._deliver(Outcome.from_exception(
                job_id, TimeLimitExceeded("hard time limit exceeded: task killed")))
        if slot is None:
            return
        log.warning("job %s killed by its hard time limit; its thread %s is left to finish "
                    "and its result will be dropped (%d stuck threads)",
                    job_id, slot.thread.name, stuck)
        self._deliver(Outcome.from_exception(
            job_id, TimeLimitExceeded("hard time limit exceeded"), runtime=runtime))

    def take_back(self) -> list[str]:
        """The jobs waiting in the queue, out of it (see ``Pool.take_back``)."""
        with self._cond:
            waiting = [job for job in self._queue if job is not _RETIRE]
            if waiting:
                retiring = len(self._queue) - len(waiting)
                self._queue.clear()
                self._queue.extend([_RETIRE] * retiring)
                self._outstanding -= len(waiting)
        return [job.id for job in waiting]

    def withdraw(self, job_id: str) -> bool:
        """A job waiting in the queue, out of it (see ``Pool.withdraw``)."""
        with self._cond:
            return self._withdraw(job_id)

    def _withdraw(self, job_id: str) -> bool:
        """(lock held) Take back a job that waits in the queue; True when it was there."""
        for job in self._queue:
            if job is not _RETIRE and job.id == job_id:
                self._queue.remove(job)
                self._outstanding -= 1
                return True
        return False

    # -- capacity
    def grow(self, n: int) -> None:
        with self._cond:
            self.concurrency += n
            for _ in range(n):
                self._spawn()

    def shrink(self, n: int) -> None:
        with self._cond:
            n = min(n, self.concurrency - 1)
            if n <= 0:
                return
            self.concurrency -= n
            # Behind the queued jobs: busy slots finish first, idle ones retire.
            self._queue.extend([_RETIRE] * n)
            self._cond.notify_all()

    # -- stopping
    def _retire_all(self) -> list[str]:
        """(lock held) Take back queued jobs, ask every slot thread to exit."""
        self._stopping = True
        never_started = [job.id for job in self._queue if job is not _RETIRE]
        self._outstanding -= len(never_started)
        self._queue.clear()
        self._queue.extend([_RETIRE] * len(self._slots))
        self._cond.notify_all()
        return never_started

    def stop(self, timeout: float) -> list[str]:
        with self._cond:
            never_started = self._retire_all()
            threads = [slot.thread for slot in self._slots]
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            late = sum(1 for slot in self._slots if slot.job is not None)
        if late:
            log.warning("threads pool stop: %d job(s) still running after %.1fs are "
                        "terminated (no outcome; they will be delivered again)", late, timeout)
        self.terminate()
        return never_started

    def terminate(self) -> None:
        with self._cond:
            self._retire_all()
            for slot in self._slots:
                if slot.job is not None and not slot.abandoned:
                    slot.abandoned = True
                    _raise_in(slot.thread.ident, TimeLimitExceeded)   # best effort

    def info(self) -> dict:
        with self._cond:
            busy = sum(1 for slot in self._slots if slot.job is not None)
            return {"pool": self.name, "concurrency": self.concurrency,
                    "threads": len(self._slots), "busy": busy,
                    "queued": sum(1 for job in self._queue if job is not _RETIRE),
                    "stuck": len(self._stuck), "killed": self._killed_total}
