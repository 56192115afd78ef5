"""The asyncio pool: N coroutine slots on one event loop, in a thread of the supervisor's
process (no monkey-patching), and plain ``def`` tasks on a bounded set of threads beside it.
Owns the loop thread, how limits reach coroutines and sync threads, and the watchdog that
reports a coroutine blocking the loop; what the loop reports once a turn is ``turns``, what
the pool holds queued behind its running jobs (given back, started only while the
supervisor's loop turns) is ``queued``.
Written on ``pools/base.py`` alone.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import itertools
import logging
import queue
import threading
import time

from engine.exceptions import NotSupported, SoftTimeLimitExceeded, TimeLimitExceeded
from pools.asyncio.queued import QueuedJobs
from pools.asyncio.turns import TurnReports
from pools.base import Interruptible, Job, OnOutcome, OnStart, Outcome, Pool, PoolOptions, Runner

log = logging.getLogger(__name__)

#: sync threads at most, whatever the concurrency (a thousand threads would only contend)
SYNC_THREADS_MAX = 32
#: seconds a cancelled coroutine gets to end before it is abandoned
GRACE = 1.0
#: seconds between the loop's heartbeats, which the watchdog reads
HEARTBEAT = 0.05

# Our own function objects (as pools/threads.py does, not shared with it: this pool depends
# on pools/base.py only): argtypes set elsewhere must not turn our NULL (clear) into Py_None.
_raise_in = ctypes.pythonapi["PyThreadState_SetAsyncExc"]
_raise_in.argtypes = (ctypes.c_ulong, ctypes.py_object)
_clear_in = ctypes.pythonapi["PyThreadState_SetAsyncExc"]
_clear_in.argtypes = (ctypes.c_ulong, ctypes.c_void_p)


class _Run:
    """One submitted job. Fields are guarded by the pool's lock."""

    __slots__ = ("job", "started", "task", "wrapper", "thread", "killed", "abandoned",
                 "holds_slot", "start_unreported")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.started: float | None = None          # monotonic, once it began
        self.task: asyncio.Task | None = None       # a coroutine job's asyncio task
        self.wrapper: Interruptible | None = None
        self.thread: int | None = None              # a sync job's thread ident while it runs
        self.killed = False        # kill() reported it; its own result is dropped
        self.abandoned = False     # stop/terminate gave it up; no outcome at all
        self.holds_slot = False    # a coroutine slot is its (loop thread only)
        self.start_unreported = False  # began without a limit; on_start not yet called


class AsyncioPool(QueuedJobs, Pool):
    """Coroutines on one loop thread, plain functions on up to SYNC_THREADS_MAX threads.

    An ``async def`` task comes from ``Runner.execute_async`` as a coroutine; anything else
    (a plain function, an unknown task, a runner without ``execute_async``) goes to
    ``Runner.execute`` on a sync thread.

    * Soft limit, coroutine: ``SoftTimeLimitExceeded`` is raised at its current ``await``
      (``pools.base.Interruptible``); it may catch it. Sync: an async exception in its thread.
    * Hard limit: reported FAILURE/TimeLimitExceeded at once, and the slot is free for the
      next job. A coroutine is cancelled; one still running GRACE seconds later (it swallowed
      the CancelledError) is abandoned: logged, counted in ``info()['abandoned']``, its result
      dropped whenever it ends. A sync thread is sent TimeLimitExceeded and replaced by a
      fresh one; it ends when its C call returns (``info()['stuck']``).
    * A coroutine holding the loop for more than ``blocking_report_after`` seconds (a sync
      call inside ``async def``) stops every coroutine, limits included: the watchdog thread
      sees the loop's heartbeat stall and logs one line naming the job
      (``info()['loop_blocked']``).
    * At a concurrency above SYNC_THREADS_MAX, plain tasks run SYNC_THREADS_MAX at a time.
    * The loop reports once a turn: the outcomes of the coroutines that ended in it, and the
      starts of jobs without a limit that still run a turn later (a quicker one's start
      rides on its outcome, ``Outcome.began``). A job with a limit reports its start at once.
    * Jobs beyond the slots wait in the pool (the prefetch): ``withdraw`` and ``take_back``
      give them up before they start, and a supervisor that calls ``turned`` each loop
      turn sees none start while its loop has stopped (``queued``).

    The supervisor calls every method from its thread; the loop's state is touched only on
    the loop's thread (``call_soon_threadsafe``), the shared records under one lock.
    """

    name = "asyncio"
    capabilities = frozenset({"interrupt", "kill", "grow", "shrink"})
    #: seconds the loop may be held before the running job is reported as blocking it
    blocking_report_after = 0.5

    def __init__(self, concurrency: int, on_outcome: OnOutcome, *, runner: Runner,
                 on_start: OnStart | None = None, options: PoolOptions = PoolOptions()):
        super().__init__(concurrency, on_outcome, runner=runner, on_start=on_start,
                         options=options)
        self._lock = threading.Lock()
        self._turn = threading.Condition()        # sync threads waiting for a loop turn
        self._runs: dict[str, _Run] = {}          # submitted, not yet settled
        self._stuck: set[_Run] = set()            # killed or abandoned, still running
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._sync_queue: queue.SimpleQueue[_Run | None] = queue.SimpleQueue()
        # coroutine jobs on their way to the loop, and whether a wake-up of the loop to take
        # them is already on its way (one per batch the supervisor submits, not one a job)
        self._incoming: collections.deque = collections.deque()
        self._wake_sent = False
        # coroutine slots in use (written on the loop thread only): a job submitted while
        # every slot is taken waits in _incoming, and the slot that frees first begins it
        # there, on the loop, with no wake-up and no round trip through the supervisor
        self._active = 0
        self._sync_threads = 0
        self._names = itertools.count(1)
        self._stopping = False
        self._closed = threading.Event()
        self._beat = 0.0
        # what the loop tells the supervisor, once a turn (on_start looked up at each
        # call: it is the pool's attribute)
        self._reports = TurnReports(self._lock, lambda job_id: self.on_start(job_id),
                                    self._deliver)
        self._killed_total = 0
        self._abandoned_total = 0
        self._loop_blocked = 0

    # -- lifecycle
    def start(self) -> None:
        if self.options.max_tasks_per_child or self.options.max_memory_per_child:
            raise NotSupported("asyncio pool has no child to recycle; "
                               "use prefork for max-tasks/max-memory-per-child")
        self._loop = self._reports.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._loop_thread = threading.Thread(target=self._serve, args=(ready,), daemon=True,
                                             name="engine-asyncio-loop")
        self._loop_thread.start()
        ready.wait()
        threading.Thread(target=self._watch, daemon=True, name="engine-asyncio-watchdog").start()
        with self._lock:
            self._grow_sync_threads()

    def _serve(self, ready: threading.Event) -> None:
        """The loop thread: heartbeat, then run until terminate stops it."""
        loop = self._loop
        asyncio.set_event_loop(loop)
        self._heartbeat()
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            self._reports.flush()   # the last turn's outcomes (their jobs left _runs already)
            self._closed.set()
            _close_abandoned(loop)

    def _heartbeat(self) -> None:
        self._beat = time.monotonic()
        self._loop.call_later(HEARTBEAT, self._heartbeat)

    def _grow_sync_threads(self) -> None:
        """(lock held) Sync threads up to min(concurrency, SYNC_THREADS_MAX)."""
        while self._sync_threads < min(self.concurrency, SYNC_THREADS_MAX):
            self._sync_threads += 1
            threading.Thread(target=self._sync_work, daemon=True,
                             name=f"engine-asyncio-sync-{next(self._names)}").start()

    def free_slots(self) -> int:
        # up to ``prefetch`` jobs a slot (the running one included), as prefork's ring holds
        capacity = self.concurrency * max(1, self.options.prefetch)
        with self._lock:
            return 0 if self._stopping else max(0, capacity - len(self._runs))

    def submit(self, job: Job) -> None:
        run = _Run(job)
        with self._lock:
            self._runs[job.id] = run
        # Sorted here, on the supervisor's thread: a plain job goes straight to the sync
        # threads (no hop through the loop); only the coroutine is scheduled on the loop.
        execute_async = getattr(self.runner, "execute_async", None)
        try:
            coro = execute_async(job) if execute_async is not None else None
        except Exception as exc:        # the runner broke its promise
            self._finish(run, Outcome.from_exception(job.id, exc))
            return
        if coro is None:
            self._sync_queue.put(run)
            return
        self._incoming.append((run, coro))
        if not self._wake_sent and self._active < self.concurrency:
            # each call_soon_threadsafe writes to the loop's self-pipe and wakes it: a feed of
            # hundreds of jobs takes one. The loop clears the flag before it drains, so a job
            # appended after its last look finds the flag clear and sends another. With every
            # slot taken, none is needed: the loop lowers _active, then looks at _incoming,
            # and this thread appended before it read _active.
            self._wake_sent = True
            self._on_loop(self._begin_incoming)

    # -- the loop's side
    def _on_loop(self, fn, *args) -> None:
        """Schedule ``fn(*args)`` on the loop from any thread; nothing once it is closed."""
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:      # closed by terminate: there is nothing left to act on
            pass

    def _begin_incoming(self) -> None:
        """On the loop, the wake-up ``submit`` sent: what waits begins."""
        self._wake_sent = False
        self._begin_waiting()

    def _begin_waiting(self) -> None:
        """On the loop: coroutine jobs waiting in _incoming begin while slots are free."""
        incoming = self._incoming
        if incoming and self._turned is not None and self._hold_for_a_turn():
            return
        while incoming and self._active < self.concurrency:
            try:
                run, coro = incoming.popleft()
            except IndexError:      # stop emptied it meanwhile
                return
            try:
                self._begin(run, coro)
            except Exception:       # one job's trouble must not strand the ones behind it
                log.exception("asyncio pool: starting job %s failed", run.job.id)

    def _begin(self, run: _Run, coro) -> None:
        """On the loop: the coroutine job takes a slot and becomes an asyncio task."""
        job = run.job
        # A job with a limit reports its start now: its clocks start there. Another is
        # reported at the end of the next loop turn, unless it ended by then: its start
        # then rides on its outcome (a no-op costs the supervisor no start of its own).
        limited = job.soft_limit is not None or job.hard_limit is not None
        with self._lock:
            if run.abandoned:
                coro.close()
                return
            run.started = time.monotonic()
            run.wrapper = Interruptible(coro)
            run.task = self._loop.create_task(self._drive(run))
            if not limited:
                self._reports.start_later(run)
        run.holds_slot = True
        self._active += 1
        if limited:
            self.on_start(job.id)
        else:
            self._reports.flush_soon()

    def _release(self, run: _Run) -> None:
        """On the loop, once per run that took a slot: the slot goes to the next job."""
        if run.holds_slot:
            run.holds_slot = False
            self._active -= 1
            if self._incoming:
                self._begin_waiting()

    async def _drive(self, run: _Run) -> None:
        try:
            outcome = await run.wrapper
        except BaseException as exc:    # cancelled (killed, terminated: dropped) or a broken runner
            outcome = Outcome.from_exception(run.job.id, exc)
        if self._settle(run, outcome):
            self._reports.ended(outcome)
        self._release(run)

    def _settle(self, run: _Run, outcome: Outcome) -> bool:
        """Whether ``outcome`` is the job's to report: not once kill or a stop settled it.
        A start not yet reported rides on it (``Outcome.began``)."""
        with self._lock:
            self._stuck.discard(run)
            if run.killed or run.abandoned or self._runs.get(run.job.id) is not run:
                return False
            del self._runs[run.job.id]
            if run.start_unreported:
                run.start_unreported = False
                outcome.began = True
        return True

    def _finish(self, run: _Run, outcome: Outcome) -> None:
        if self._settle(run, outcome):
            self._deliver(outcome)

    def _deliver(self, outcome: Outcome) -> None:
        try:
            self.on_outcome(outcome)
        except Exception:            # the supervisor's bug must not cost us the loop
            log.exception("on_outcome failed for job %s", outcome.job_id)

    # -- the sync threads
    def _sync_work(self) -> None:
        ident = threading.get_ident()
        while True:
            run = self._sync_queue.get()
            if run is None:
                return
            if self._turned is not None:      # a supervisor's loop drives the pool
                self._wait_for_a_turn()
            with self._lock:
                if run.abandoned:
                    continue
                run.thread, run.started = ident, time.monotonic()
            outcome = None
            while True:
                # A limit meant for the task may land just outside its frames: keep (or make)
                # the outcome and settle again; once settled under the lock, nobody aims here.
                try:
                    if outcome is None:
                        self.on_start(run.job.id)
                        outcome = self.runner.execute(run.job)
                    with self._lock:
                        _clear_in(ident, None)
                        run.thread = None
                        replaced = run.killed
                    break
                except (SoftTimeLimitExceeded, TimeLimitExceeded) as exc:
                    if outcome is None:
                        outcome = Outcome.from_exception(run.job.id, exc)
            self._finish(run, outcome)
            if replaced:
                return          # kill() started a thread in this one's place

    # -- limits
    def _running(self, job_id: str) -> _Run | None:
        run = self._runs.get(job_id)
        return run if run is not None and run.started is not None else None

    def interrupt(self, job_id: str) -> None:
        with self._lock:
            run = self._running(job_id)
            if run is None:
                return
            if run.thread is not None:
                _raise_in(run.thread, SoftTimeLimitExceeded)
                return
            wrapper = run.wrapper
        if wrapper is not None:
            self._on_loop(self._throw, run, SoftTimeLimitExceeded(
                "soft time limit exceeded"))

    def _throw(self, run: _Run, exc: BaseException) -> None:
        if run.task is not None and not run.task.done() and not run.killed:
            run.wrapper.throw(exc)

    def kill(self, job_id: str) -> None:
        with self._lock:
            run = self._running(job_id)
            if run is None:
                return
            del self._runs[job_id]
            run.killed = True
            self._killed_total += 1
            self._stuck.add(run)
            runtime = time.monotonic() - run.started
            began = run.start_unreported
            run.start_unreported = False
            if run.thread is not None:
                _raise_in(run.thread, TimeLimitExceeded)
                self._sync_threads -= 1
                if not self._stopping:
                    self._grow_sync_threads()     # capacity is kept; the old one ends later
        if run.task is not None:
            self._on_loop(self._cancel, run)
        log.warning("job %s killed by its hard time limit; its result will be dropped", job_id)
        outcome = Outcome.from_exception(
            job_id, TimeLimitExceeded("hard time limit exceeded"), runtime=runtime)
        outcome.began = began
        self._deliver(outcome)

    def _cancel(self, run: _Run) -> None:
        """On the loop: cancel, and abandon the coroutine if it is still there after GRACE.
        Its slot is the next job's at once."""
        self._release(run)
        if run.task.done():
            return
        run.task.cancel("hard time limit exceeded")
        self._loop.call_later(GRACE, self._abandon_if_running, run)

    def _abandon_if_running(self, run: _Run) -> None:
        if run.task.done():
            return
        with self._lock:
            self._abandoned_total += 1
            stuck = len(self._stuck)
        log.warning("job %s did not end within %.1fs of its cancellation (it swallows "
                    "CancelledError): abandoned, its slot already runs other work "
                    "(%d stuck)", run.job.id, GRACE, stuck)

    # -- the watchdog
    def _watch(self) -> None:
        """Its own thread: report, once per stall, a loop whose heartbeat stopped."""
        reported_beat = None
        while not self._closed.wait(self.blocking_report_after / 4):
            beat = self._beat
            held = time.monotonic() - beat
            if held < self.blocking_report_after or beat == reported_beat:
                continue
            reported_beat = beat
            self._reports.report_all()
            job_id = self._current_job()
            self._loop_blocked += 1
            log.warning("job %s blocked the asyncio loop for more than %.2fs (a blocking call "
                        "inside async def): every coroutine waited; limits cannot reach it",
                        job_id or "(none: the pool or a library)", held)

    def _current_job(self) -> str | None:
        try:
            task = asyncio.current_task(self._loop)
        except RuntimeError:
            return None
        with self._lock:
            for run in self._runs.values():
                if run.task is task and task is not None:
                    return run.job.id
            for run in self._stuck:
                if run.task is task and task is not None:
                    return run.job.id
        return None

    # -- capacity
    def grow(self, n: int) -> None:
        with self._lock:
            self.concurrency += n
            self._grow_sync_threads()
        self._on_loop(self._begin_incoming)     # the new slots take what waits

    def shrink(self, n: int) -> None:
        # Running jobs finish; free_slots stays at zero until they do. Idle sync threads
        # stay (at most SYNC_THREADS_MAX), waiting on the queue.
        with self._lock:
            self.concurrency = max(1, self.concurrency - n)

    # -- stopping
    def stop(self, timeout: float) -> list[str]:
        if self._loop is None:
            return []
        with self._lock:
            never_started = self._take_back_unstarted()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._runs:
                    break
            time.sleep(0.02)
        with self._lock:
            late = len(self._runs)
        if late:
            log.warning("asyncio pool stop: %d job(s) still running after %.1fs are "
                        "terminated (no outcome; they will be delivered again)", late, timeout)
        self.terminate()
        return never_started

    def terminate(self) -> None:
        if self._loop is None:
            return
        with self._lock:
            self._take_back_unstarted()
            running = list(self._runs.values())
            self._runs.clear()
            for run in running:
                run.abandoned = True
                if run.thread is not None:
                    _raise_in(run.thread, TimeLimitExceeded)    # best effort
            for _ in range(self._sync_threads):
                self._sync_queue.put(None)
            self._sync_threads = 0
        if not self._loop.is_closed() and not self._closed.is_set():
            self._on_loop(self._shut_loop)

    def _shut_loop(self) -> None:
        """On the loop: cancel what runs, let the cancellations run once, then stop."""
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.call_later(0.05, self._loop.stop)

    def info(self) -> dict:
        with self._lock:
            running = sum(1 for run in self._runs.values() if run.started is not None)
            return {"pool": self.name, "concurrency": self.concurrency, "running": running,
                    "queued": len(self._runs) - running, "sync_threads": self._sync_threads,
                    "stuck": len(self._stuck), "killed": self._killed_total,
                    "abandoned": self._abandoned_total, "loop_blocked": self._loop_blocked}


def _close_abandoned(loop: asyncio.AbstractEventLoop) -> None:
    """On the loop's thread once it stopped: end the coroutines that would not (they ignored
    their cancellation) here and now, so that nothing of theirs runs later in whatever
    thread happens to garbage-collect the loop; then close it."""
    for task in asyncio.all_tasks(loop):
        task._log_destroy_pending = False     # asyncio's own switch for this warning
        try:
            task.get_coro().close()
        except RuntimeError:                  # it ignored GeneratorExit too: leave it be
            pass
    loop.close()
