"""The gevent pool: one greenlet per job, thousands at once, in a monkey-patched process.

Owns the greenlets, the soft limit (``SoftTimeLimitExceeded`` thrown into the greenlet), the
hard limit (the greenlet is killed, FAILURE/TimeLimitExceeded reported at once) and the
report of tasks that block the hub in C code (gevent's monitor thread). Patching the process
before anything else is imported is the CLI's job; ``start`` refuses an unpatched process.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque

import gevent
import gevent.events
import gevent.monkey
import gevent.pool

from engine.exceptions import (ConfigurationError, NotSupported, SoftTimeLimitExceeded,
                               TimeLimitExceeded)
from pools.base import Job, OnOutcome, OnStart, Outcome, Pool, PoolOptions, Runner

#: seconds the hub may be held before a task is reported as blocking it (GEVENT_MAX_BLOCKING_TIME)
BLOCKING_REPORT_AFTER = 0.5

log = logging.getLogger(__name__)


class _Run:
    """One submitted job and its greenlet; touched only from the hub's thread."""

    __slots__ = ("job", "greenlet", "started", "killed", "abandoned")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.greenlet: gevent.Greenlet | None = None
        self.started: float | None = None     # monotonic, once on_start was called
        self.killed = False                   # kill() reported it; the greenlet's own result is dropped
        self.abandoned = False                # stop/terminate gave it up; no outcome


def _throw(run: _Run, exc: BaseException) -> None:
    """Hub callback: raise ``exc`` in the job's greenlet if it is still running that job."""
    greenlet = run.greenlet
    if greenlet is not None and not greenlet.dead:
        greenlet.throw(exc)


class GeventPool(Pool):
    """Greenlets in a ``gevent.pool.Group``; the supervisor must run on the hub's thread.

    * ``needs_own_process``: the process must be monkey-patched (``gevent.monkey.patch_all()``)
      before anything else is imported; ``start`` raises ConfigurationError otherwise.
    * All methods must be called from the thread that called ``start`` (the hub's thread);
      the supervisor's waits must be gevent-friendly (patched sleep/queue/socket) or no
      greenlet ever runs.
    * Limits only take effect when the task yields to the hub. A task that blocks the hub in
      C code (an unpatched library, a CPU loop) stops every greenlet, the supervisor
      included: gevent's monitor thread detects it (``GEVENT_MAX_BLOCKING_TIME``, default
      0.1 s), the log names the job, and ``info()['hub_blocked']`` counts it. Such a task
      cannot be interrupted or killed until it yields.

    Why a Group rather than ``gevent.pool.Pool``: ``Pool.spawn`` blocks when full and its
    size is a fixed semaphore; here the supervisor's ``free_slots`` is the bound, which keeps
    ``submit`` non-blocking and lets ``grow``/``shrink`` just move the number.
    """

    name = "gevent"
    capabilities = frozenset({"interrupt", "kill", "grow", "shrink"})
    needs_own_process = True
    #: read by pools.testing: a pure-Python busy loop never yields, so nothing can end it
    preempts_busy_loops = False

    def __init__(self, concurrency: int, on_outcome: OnOutcome, *, runner: Runner,
                 on_start: OnStart | None = None, options: PoolOptions = PoolOptions()):
        super().__init__(concurrency, on_outcome, runner=runner, on_start=on_start,
                         options=options)
        self._group: gevent.pool.Group | None = None
        self._hub = None
        self._runs: dict[str, _Run] = {}      # submitted, not yet settled
        self._stuck: set[_Run] = set()        # killed, greenlet still alive
        self._stopping = False
        self._killed_total = 0
        self._hub_blocked = 0
        self._recent_blocks: deque[dict] = deque(maxlen=5)   # appended by the monitor thread

    # -- lifecycle
    def start(self) -> None:
        if not gevent.monkey.is_module_patched("socket"):
            raise ConfigurationError(
                "the gevent pool needs a monkey-patched process: call "
                "gevent.monkey.patch_all() before importing anything else "
                "(`engine run --pool gevent` does this for you)")
        if self.options.max_tasks_per_child or self.options.max_memory_per_child:
            raise NotSupported("gevent pool has no child to recycle; "
                               "use prefork for max-tasks/max-memory-per-child")
        self._group = gevent.pool.Group()
        self._hub = gevent.get_hub()
        self._stopping = False
        self._watch_hub()

    def _watch_hub(self) -> None:
        if "GEVENT_MAX_BLOCKING_TIME" not in os.environ:
            # gevent's default (0.1 s) flags the supervisor's own batches of a thousand
            # spawns, and each report walks every greenlet: only real blocks are worth it
            gevent.config.max_blocking_time = BLOCKING_REPORT_AFTER
        if "GEVENT_PRINT_BLOCKING_REPORTS" not in os.environ:
            gevent.config.print_blocking_reports = False   # our one log line says it
        gevent.config.monitor_thread = True
        self._hub.start_periodic_monitoring_thread()
        if self._on_hub_event not in gevent.events.subscribers:
            gevent.events.subscribers.append(self._on_hub_event)

    def _on_hub_event(self, event) -> None:
        """Runs in gevent's monitor thread: count and log, nothing more."""
        if not isinstance(event, gevent.events.EventLoopBlocked):
            return
        job_id = getattr(event.greenlet, "engine_job_id", None)
        self._hub_blocked += 1
        self._recent_blocks.append({"job": job_id, "at": time.time(),
                                    "threshold": event.blocking_time})
        log.warning("job %s blocked the gevent hub for more than %.2fs (C code or an "
                    "unpatched library): every greenlet waited; limits cannot reach it",
                    job_id or "(none: the supervisor or a library)", event.blocking_time)

    def free_slots(self) -> int:
        return 0 if self._stopping else max(0, self.concurrency - len(self._runs))

    def submit(self, job: Job) -> None:
        run = _Run(job)
        self._runs[job.id] = run
        run.greenlet = self._group.spawn(self._run, run)   # starts at the hub's next turn
        run.greenlet.engine_job_id = job.id

    # -- the job's greenlet
    def _run(self, run: _Run) -> None:
        job, outcome = run.job, None
        try:
            while True:
                # A soft or hard limit thrown just outside the task's own frames lands here:
                # keep (or make) the outcome and settle. No switch happens after that.
                try:
                    if outcome is None:
                        run.started = time.monotonic()
                        self.on_start(job.id)
                        outcome = self.runner.execute(job)
                    break
                except (SoftTimeLimitExceeded, TimeLimitExceeded) as exc:
                    if outcome is None:
                        outcome = Outcome.from_exception(job.id, exc)
        finally:
            # GreenletExit (terminate) passes through here without an outcome.
            self._stuck.discard(run)
        if run.killed or run.abandoned or self._runs.get(job.id) is not run:
            return
        del self._runs[job.id]
        self.on_outcome(outcome)

    # -- limits
    def _running(self, job_id: str) -> _Run | None:
        run = self._runs.get(job_id)
        return run if run is not None and run.started is not None else None

    def interrupt(self, job_id: str) -> None:
        run = self._running(job_id)
        if run is not None:
            # Non-blocking: the throw happens on the hub's next turn, if the job still runs.
            self._hub.loop.run_callback(_throw, run, SoftTimeLimitExceeded(
                "soft time limit exceeded"))

    def kill(self, job_id: str) -> None:
        run = self._running(job_id)
        if run is None:
            return
        del self._runs[job_id]
        run.killed = True
        self._stuck.add(run)
        self._killed_total += 1
        self._hub.loop.run_callback(_throw, run, TimeLimitExceeded("hard time limit exceeded"))
        self.on_outcome(Outcome.from_exception(
            job_id, TimeLimitExceeded("hard time limit exceeded"),
            runtime=time.monotonic() - run.started))

    # -- capacity
    def grow(self, n: int) -> None:
        self.concurrency += n

    def shrink(self, n: int) -> None:
        # Running greenlets finish; free_slots stays at zero until they do.
        self.concurrency = max(1, self.concurrency - n)

    # -- stopping
    def _take_back_unstarted(self) -> list[str]:
        never_started = [job_id for job_id, run in self._runs.items() if run.started is None]
        for job_id in never_started:
            run = self._runs.pop(job_id)
            run.abandoned = True
            run.greenlet.kill(block=False)      # never switched to: it will never run
        return never_started

    def stop(self, timeout: float) -> list[str]:
        self._stopping = True
        if self._group is None:
            return []
        never_started = self._take_back_unstarted()
        self._group.join(timeout=timeout)
        late = list(self._runs.values())
        if late:
            log.warning("gevent pool stop: %d job(s) still running after %.1fs are abandoned "
                        "(no outcome; they will be delivered again)", len(late), timeout)
        self._abandon(late)
        return never_started

    def _abandon(self, runs) -> None:
        for run in runs:
            run.abandoned = True
            self._runs.pop(run.job.id, None)
            run.greenlet.kill(block=False)

    def terminate(self) -> None:
        self._stopping = True
        if self._group is None:
            return
        self._take_back_unstarted()
        self._abandon(list(self._runs.values()))
        if self._on_hub_event in gevent.events.subscribers:
            gevent.events.subscribers.remove(self._on_hub_event)

    def info(self) -> dict:
        running = sum(1 for run in self._runs.values() if run.started is not None)
        return {"pool": self.name, "concurrency": self.concurrency, "running": running,
                "queued": len(self._runs) - running, "stuck": len(self._stuck),
                "killed": self._killed_total, "hub_blocked": self._hub_blocked,
                "recent_hub_blocks": list(self._recent_blocks)}
