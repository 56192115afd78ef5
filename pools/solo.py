"""The solo pool: one job at a time, on the supervisor's own thread, inside ``maintain()``.

``submit`` only queues (it must not block); the next ``maintain()`` runs the job to its end.
Time limits come from ``engine.limits.Alarm`` (SIGALRM), since the supervisor loop is the
one running the task. Good for debugging and for tasks that must not share a process.
"""

from __future__ import annotations

import logging
from collections import deque

from engine.exceptions import NotSupported, SoftTimeLimitExceeded, TimeLimitExceeded
from engine.limits import Alarm
from pools.base import Job, OnOutcome, OnStart, Outcome, Pool, PoolOptions, Runner

log = logging.getLogger(__name__)


class SoloPool(Pool):
    """Runs each job inside the supervisor's ``maintain()``.

    Consequences the supervisor must know:

    * ``maintain()`` blocks for as long as the job runs; nothing else happens meanwhile
      (fetching, heartbeats), so ``on_start`` and the Outcome both arrive during that call.
    * ``interrupt`` and ``kill`` cannot reach a running job (the caller *is* the job's
      thread), so they are not capabilities and raise NotSupported. Limits are carried by
      the job (``soft_limit``/``hard_limit``) and enforced here by a one-shot SIGALRM,
      which works only when the supervisor runs in the main thread; elsewhere limits are
      not enforced and a warning says so.
    * concurrency is always 1, whatever ``-c`` says.
    """

    name = "solo"
    capabilities = frozenset()
    #: read by pools.testing: jobs run inside maintain(), the supervisor waits for them
    runs_jobs_in_maintain = True

    def __init__(self, concurrency: int, on_outcome: OnOutcome, *, runner: Runner,
                 on_start: OnStart | None = None, options: PoolOptions = PoolOptions()):
        super().__init__(concurrency, on_outcome, runner=runner, on_start=on_start,
                         options=options)
        if concurrency != 1:
            log.debug("solo pool runs one job at a time; concurrency %d ignored", concurrency)
        self.concurrency = 1
        self._queue: deque[Job] = deque()
        self._alarm: Alarm | None = None
        self._stopped = False
        self._done = 0
        self._warned_no_alarm = False

    def start(self) -> None:
        if self.options.max_tasks_per_child or self.options.max_memory_per_child:
            raise NotSupported("solo pool has no child to recycle "
                               "(max-tasks/max-memory-per-child)")
        self._alarm = Alarm() if Alarm.usable() else None
        self._stopped = False

    def free_slots(self) -> int:
        return 0 if self._stopped or self._queue else 1

    def submit(self, job: Job) -> None:
        # Only queue: the supervisor's next tick (maintain) runs it.
        self._queue.append(job)

    def maintain(self) -> None:
        if self._stopped or not self._queue:
            return
        job = self._queue.popleft()
        self.on_start(job.id)
        self.on_outcome(self._run(job))
        self._done += 1

    def _run(self, job: Job) -> Outcome:
        limited = job.soft_limit is not None or job.hard_limit is not None
        alarm = self._alarm if limited else None
        if limited and alarm is None and not self._warned_no_alarm:
            self._warned_no_alarm = True
            log.warning("solo pool: time limits need the supervisor in the main thread "
                        "(SIGALRM); running without them")
        outcome = None
        try:
            try:
                if alarm is not None:
                    alarm.arm(job.soft_limit, job.hard_limit)
                outcome = self.runner.execute(job)
            finally:
                if alarm is not None:
                    alarm.disarm()
        except (SoftTimeLimitExceeded, TimeLimitExceeded) as exc:
            # The alarm fired outside the task's own frames (between arm and the call, or
            # after it returned): the task's outcome, if it has one, stands.
            if outcome is None:
                outcome = Outcome.from_exception(job.id, exc)
        return outcome

    def stop(self, timeout: float) -> list[str]:
        # Nothing runs between ticks, so every queued job is one that never started.
        self._stopped = True
        never_started = [job.id for job in self._queue]
        self._queue.clear()
        return never_started

    def terminate(self) -> None:
        self._stopped = True
        self._queue.clear()

    def info(self) -> dict:
        return {"pool": self.name, "concurrency": 1, "queued": len(self._queue),
                "done": self._done, "limits": "alarm" if self._alarm else "none"}
