"""The execution pool interface: what a pool promises the supervisor and what it gets back.

A pool runs jobs; the worker supervisor (``engine.worker``) fetches them, decides when time
limits fire, stores results and acknowledges messages. This module imports nothing from the
engine but its exceptions, so a plugin author can read it alone.
"""

from __future__ import annotations

import traceback as _traceback
from dataclasses import dataclass, field
from typing import Callable, Protocol

from engine.exceptions import NotSupported

#: Final states an Outcome may carry.
SUCCESS, FAILURE, RETRY, REJECTED = "SUCCESS", "FAILURE", "RETRY", "REJECTED"


@dataclass(slots=True)
class Job:
    """One task to run, decoded from its message.

    ``body`` is the message exactly as it came off the wire, for pools that ship work to
    another process (``Runner.load`` turns it back into a Job there).
    """

    id: str
    task: str
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    body: bytes = b""
    retries: int = 0
    queue: str = "default"
    soft_limit: float | None = None   #: seconds from start, None for no limit
    hard_limit: float | None = None
    ignore_result: bool = False
    headers: dict | None = None       #: the sender's custom headers (``self.request.headers``)
    #: the decoded body when it carries canvas keys (chain, link, link_error, chord, group):
    #: the supervisor sends its successors. None, the common case, for a plain task.
    canvas: dict | None = None


@dataclass(slots=True)
class Outcome:
    """How one job ended. ``result`` is the msgpack-encoded return value (SUCCESS only)."""

    job_id: str
    state: str
    result: bytes = b""
    exc_type: str = ""          #: dotted name of the exception type, "" on success
    exc_message: str = ""
    traceback: str = ""
    runtime: float = 0.0
    retry_at: float | None = None   #: RETRY: unix time to run again
    requeue: bool = False           #: REJECTED: put back on the queue instead of dead-lettering
    stored: bool = False            #: SUCCESS: the pool had ``Runner.store`` store the result
    #: the job's start was never reported with ``on_start``: this outcome stands for the
    #: start as well (a pool that learns of a start and the end at once may say both so)
    began: bool = False

    @classmethod
    def from_exception(cls, job_id: str, exc: BaseException, *, runtime: float = 0.0,
                       state: str = FAILURE) -> "Outcome":
        """A FAILURE (by default) describing ``exc``; usable by pools for kill and loss."""
        kind = type(exc)
        return cls(job_id, state, exc_type=f"{kind.__module__}.{kind.__qualname__}",
                   exc_message=str(exc), runtime=runtime,
                   traceback="".join(_traceback.format_exception(exc)))


class Runner(Protocol):
    """Runs a job in the calling process; supplied by the supervisor (``engine.worker.runner``).

    ``execute`` never raises for anything the task raises, soft limit included: it returns
    the Outcome. Exceptions a pool injects to end a task (``TimeLimitExceeded``) also come
    back as a FAILURE Outcome, so a pool that reports the kill itself must drop that one.
    """

    def execute(self, job: Job) -> Outcome: ...

    # Optional (``getattr(runner, "store", None)``): ``store(job, outcome) -> bool`` stores a
    # SUCCESS outcome's result from the process that ran it and says whether it did. A pool
    # that ships jobs to other processes may use it for a lone job, when no batch is there to
    # share the supervisor's write (prefork does), and then sets ``outcome.stored``.

    def load(self, body: bytes) -> Job: ...
    # ``load`` turns a Job's ``body`` back into the Job in another process; it is only given
    # bodies of jobs the supervisor submitted (decoded and checked by its intake already).

    # Optional (``getattr(runner, "execute_async", None)``): ``execute_async(job)`` returns a
    # coroutine that runs the job to its Outcome when the job's task is an ``async def``
    # (never raising for what the task raises, like ``execute``; ``CancelledError`` passes
    # through), or None when it is a plain function or unknown: run those with ``execute``.
    # Pools that run an event loop of their own (``pools.asyncio``) use it; every other pool
    # just calls ``execute``, which runs an async task on an event loop of its slot.


class Interruptible:
    """Awaits a coroutine and lets its owner raise an exception inside it at its current
    ``await`` (``throw``), which asyncio itself cannot do (``Task.cancel`` only raises
    CancelledError). Used to deliver SoftTimeLimitExceeded to a coroutine.

    ``throw`` must be called on the loop's thread. It cancels the future the coroutine waits
    on (as ``Task.cancel`` would) and, when the task resumes this wrapper, throws the
    exception into the coroutine instead of the CancelledError that woke it; the task's own
    cancel count is untouched, so the coroutine may catch the exception and go on.
    """

    __slots__ = ("_coro", "_pending", "_waiting")

    def __init__(self, coro) -> None:
        self._coro = coro
        self._pending: BaseException | None = None
        self._waiting = None

    def throw(self, exc: BaseException) -> None:
        self._pending = exc
        waiting, self._waiting = self._waiting, None
        if waiting is not None and hasattr(waiting, "cancel"):
            waiting.cancel()

    def __await__(self):
        coro, value, error = self._coro, None, None
        while True:
            if self._pending is not None:
                error, self._pending = self._pending, None
            try:
                yielded = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as stop:
                return stop.value
            value = error = None
            self._waiting = yielded      # a Future (or None: a bare yield, sleep(0))
            try:
                value = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:   # what the task threw in: pass it on
                error = exc
            self._waiting = None


OnOutcome = Callable[[Outcome], None]
OnStart = Callable[[str], None]


#: seconds since the supervisor's loop last turned (``Pool.turned``) after which a pool that
#: queues jobs of its own starts none until it turns again: a loop that turns every 0.1 s at
#: most when idle was paused, and must first take its queue back (``engine.worker.ownership``)
LOOP_FRESH = 0.05


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """Per-pool settings from the worker flags; a pool given one it cannot honour raises
    NotSupported from ``start``."""

    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None   #: KiB of resident memory
    import_in_child: bool = False            #: import task modules in children, not before fork
    app_path: str | None = None              #: the ``-A`` target, for import_in_child
    prefetch: int = 2                        #: jobs per slot a pool may hold queued locally


class Pool:
    """Base class of every pool. Subclasses override what they support.

    The supervisor promises:

    * it calls the pool from one thread, never from a signal handler, ``start`` first;
    * it calls ``submit`` only while ``free_slots()`` is above zero;
    * it decides *when* limits fire (``interrupt``/``kill``); the pool only decides *how*;
    * it alone talks to the broker.

    The pool promises:

    * exactly one Outcome per submitted job, through ``on_outcome``, from any thread;
      a job handed back by ``stop`` gets none;
    * ``on_start(job_id)`` when a job really begins (limits count from there), or, for a
      job whose start it learns of together with its end, ``Outcome.began`` set instead;
    * none of its methods blocks for long, except ``stop`` and ``terminate``.

    A pool that breaks these loses or duplicates tasks: ``pools.testing`` checks them.
    """

    #: the name used in logs and ``inspect stats``
    name = "base"
    #: what the pool can do beyond running jobs; anything else raises NotSupported
    capabilities: frozenset[str] = frozenset()   # of "interrupt", "kill", "grow", "shrink", "recycle"
    #: True when the pool needs a process of its own (gevent's monkey-patching)
    needs_own_process = False
    #: True when jobs run inside ``maintain`` (solo): the supervisor then calls it every
    #: loop turn instead of every MAINTAIN_INTERVAL
    runs_jobs_in_maintain = False
    #: True when jobs run in processes the pool forks (prefork), which then send
    #: ``worker_process_init`` themselves after the fork; False: the worker sends it in its
    #: own process, where the jobs run
    runs_in_children = False

    def __init__(self, concurrency: int, on_outcome: OnOutcome, *, runner: Runner,
                 on_start: OnStart | None = None, options: PoolOptions = PoolOptions()):
        """Only store the arguments: this may run before a fork, and must not start anything."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        self.on_outcome = on_outcome
        self.on_start = on_start or _ignore_start
        self.runner = runner
        self.options = options

    def start(self) -> None:
        """Create the execution slots; return once they can take work."""
        raise NotImplementedError

    def free_slots(self) -> int:
        """How many more jobs ``submit`` accepts now (may include a bounded prefetch)."""
        raise NotImplementedError

    def submit(self, job: Job) -> None:
        """Hand over one job without blocking. Its Outcome comes later via ``on_outcome``."""
        raise NotImplementedError

    def interrupt(self, job_id: str) -> None:
        """Raise SoftTimeLimitExceeded inside the running job; unknown or done ids are ignored."""
        raise NotSupported(f"{self.name} pool cannot interrupt a running task")

    def kill(self, job_id: str) -> None:
        """End the job now and report it FAILURE with TimeLimitExceeded (or the exception the
        supervisor will substitute); free or replace its slot. Unknown ids are ignored."""
        raise NotSupported(f"{self.name} pool cannot kill a running task")

    def maintain(self) -> None:
        """Called every supervisor tick: reap and replace dead slots, recycle children."""

    #: Optional, for pools whose work happens in other processes: ``attach_waker(sem)``,
    #: called before ``start`` (only where the supervisor's loop can block on it: never in
    #: a gevent-patched process), hands over a process-shared ``multiprocessing.Semaphore``
    #: the loop sleeps on. The pool then posts it whenever it has something to report
    #: (after publishing it), reports nothing from threads of its own, and reports from
    #: ``poll``, which the loop calls on its thread every turn. Leave it None to report
    #: from your own threads (any thread may call ``on_outcome``).
    attach_waker = None

    def poll(self) -> None:
        """With ``attach_waker``: report what was published since the last call."""

    #: Optional, for pools that queue jobs of their own behind the running ones (the
    #: ``prefetch``): ``take_back()`` takes every job that has not started out of the
    #: pool and returns their ids, in the order they were submitted; they get no Outcome.
    #: A supervisor that finds it was paused long enough to be taken for lost calls it, so
    #: that it checks those jobs are still its own before it submits them again. Leave it
    #: None if the pool holds no queue (or cannot give one back): its queued jobs then run.
    take_back = None

    #: Optional, with such a queue: ``withdraw(job_id) -> bool`` takes one job that has
    #: not started out of it (True; it gets no Outcome), or returns False when the job
    #: started, ended or is unknown. A revoke without ``terminate`` and an expiry use it, so
    #: that a revoked or expired job the pool holds never runs (``engine.worker.held``).
    withdraw = None

    #: Optional, with ``take_back``: ``turned()``, called by the supervisor once a loop
    #: turn, after it checked (following a pause) that what it fed is still its own and
    #: before it feeds. A pool whose queue is served by threads or processes of its own
    #: starts a queued job only while the loop turned in the last LOOP_FRESH seconds, so
    #: that, after a pause, no queued job starts before the loop took the queue back.
    turned = None

    def stop(self, timeout: float) -> list[str]:
        """Warm stop: start nothing new, let running jobs end (up to ``timeout`` seconds),
        then stop; what still runs after that is terminated.

        Returns the ids of submitted jobs that never started; they get no Outcome.
        """
        raise NotImplementedError

    def terminate(self) -> None:
        """Cold stop: end everything now. Idempotent; running jobs get no Outcome."""
        raise NotImplementedError

    def grow(self, n: int) -> None:
        """Add ``n`` execution slots."""
        raise NotSupported(f"{self.name} pool cannot grow")

    def shrink(self, n: int) -> None:
        """Remove ``n`` idle slots (busy ones finish first); never below one."""
        raise NotSupported(f"{self.name} pool cannot shrink")

    def info(self) -> dict:
        """JSON-safe figures for ``inspect stats`` and the monitor."""
        return {"pool": self.name, "concurrency": self.concurrency}


def _ignore_start(job_id: str) -> None:
    pass
