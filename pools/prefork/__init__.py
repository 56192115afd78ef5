"""The prefork pool: N forked children fed through shared memory, with hard limits that hold.

The supervisor side lives here: it offers raw messages in shared work slots (``shm``), a
reader thread turns the children's outbox records into ``on_start``/``on_outcome`` calls, and
``maintain`` reaps, replaces and recycles children (their lives: ``lives``). What a child
does is in ``child``.

Exactly one Outcome per job comes from one rule: whoever pops a job's entry from ``_jobs``
(the reader on a completion, ``kill``, or the reaper on a lost child) reports it; everyone
else drops what they hold for that job.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
from typing import Callable

from engine.exceptions import NotSupported, TimeLimitExceeded
from pools.base import Job, OnOutcome, OnStart, Outcome, Pool, PoolOptions, Runner
from pools.prefork import child as _child
from pools.prefork import shm
from pools.prefork.children import Child, Held, signal_pid, waitpid
from pools.prefork.lives import ChildLives

#: work slots are fixed at start (children map them then): enough for this many times the
#: starting capacity, so that ``grow`` can add children that all get full prefetch
SLOT_HEADROOM = 4
MIN_SLOTS = 64
#: at most this many slots (SLOT_SIZE each, virtual until touched): a deep prefetch on many
#: children is capped here, and free_slots() follows the cap
MAX_SLOTS = 2048
#: seconds ``kill`` waits for the killed child to be reaped before leaving it to ``maintain``
KILL_REAP_WAIT = 1.0
#: seconds the reader sleeps when nothing wakes it (only matters for shutdown)
READER_IDLE = 0.2
#: seconds the reader lets completions gather before reading them, when busy
COALESCE = 0.0005
#: seconds between two reads of the children's status words for the starts they did not
#: post (jobs without a time limit post none: their start is read here, or rides with the end)
START_SCAN = 0.005

log = logging.getLogger("engine.pools.prefork")


class PreforkPool(ChildLives, Pool):
    """Forked children pulling raw messages from shared-memory slots.

    Thread-safety: every method is for the supervisor's thread, which must also be the thread
    that called ``start`` (the kernel's parent-death signal follows the forking *thread*).
    ``on_outcome`` and ``on_start`` are called from the pool's reader thread.
    """

    name = "prefork"
    runs_in_children = True
    capabilities = frozenset({"interrupt", "kill", "grow", "shrink", "recycle"})

    def __init__(self, concurrency: int, on_outcome: OnOutcome, *, runner: Runner,
                 on_start: OnStart | None = None, options: PoolOptions = PoolOptions(),
                 prefetch: int | None = None,
                 load_app: Callable[[str], object] | None = None) -> None:
        super().__init__(concurrency, on_outcome, runner=runner, on_start=on_start,
                         options=options)
        self.prefetch = max(1, prefetch if prefetch is not None else options.prefetch)
        self.load_app = load_app
        self._table: shm.WorkTable | None = None
        self._done = None
        self._children: dict[int, Child] = {}
        self._outboxes: tuple[tuple[int, shm.Outbox], ...] = ()   # reader's snapshot
        self._spare: dict[int, shm.Outbox] = {}
        self._jobs: dict[int, Held] = {}       # seq -> what we owe an Outcome for
        self._by_id: dict[str, int] = {}
        self._free: collections.deque[int] = collections.deque()
        self._seq = 0
        self._lock = threading.Lock()           # one consumer of the outboxes at a time
        self._reader: threading.Thread | None = None
        self._polled = False                    # attach_waker: the caller polls, no reader
        self._last_poll = 0.0
        self._state = "new"                     # new, running, stopping, closed
        self._silent = False                    # terminate: report nothing more
        self._parent_pid = 0
        self._stats = {"recycled": 0, "replaced": 0, "killed": 0, "lost": 0}
        self._backoff = 0.0
        self._respawn_at = 0.0
        self._next_scan = 0.0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._state != "new":
            raise RuntimeError("a PreforkPool starts once")
        if self.options.import_in_child and not self.options.app_path:
            raise NotSupported("import_in_child needs options.app_path")
        nslots = min(max(MIN_SLOTS, SLOT_HEADROOM * self.concurrency * self.prefetch), MAX_SLOTS)
        self._table = shm.WorkTable(nslots)
        self._free.extend(range(nslots))
        if self._done is None:
            self._done = shm._ctx.Semaphore(0)
        self._parent_pid = os.getpid()
        self._state = "running"
        for index in range(self.concurrency):
            self._spawn(index)
        if not self._polled:
            self._reader = threading.Thread(target=self._read_loop, name="prefork-reader",
                                            daemon=True)
            self._reader.start()

    def attach_waker(self, waker) -> None:
        """Optional hook (before ``start``): children post ``waker``, a process-shared
        semaphore the caller waits on, instead of waking a reader thread of ours; the caller
        then calls ``poll`` on its own thread, and outcomes are reported from there."""
        if self._state != "new":
            raise RuntimeError("attach_waker comes before start")
        self._done = waker
        self._polled = True

    def poll(self) -> None:
        """Report what the children published (with ``attach_waker``; a no-op otherwise).

        When busy (more jobs held than children) reads are at least COALESCE apart: the
        caller's thread then wakes once for several completions, as the reader does."""
        if not self._polled or self._state == "closed":
            return
        if len(self._jobs) > self.concurrency:
            wait = self._last_poll + COALESCE - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        with self._lock:
            self._drain_locked()
        self._last_poll = time.monotonic()

    def free_slots(self) -> int:
        if self._state != "running":
            return 0
        capacity = min(self._table.nslots, self.concurrency * self.prefetch)
        return max(0, capacity - len(self._jobs))

    def submit(self, job: Job) -> None:
        if self._state != "running":
            raise RuntimeError("the prefork pool is not running")
        slot = self._free.popleft()      # IndexError only if the caller ignored free_slots
        self._seq += 1
        seq = self._seq
        # a lone job stores its own result: no batch would share the supervisor's write,
        # and its caller may be waiting (a thread hop and a write saved off its latency)
        lone = not self._jobs and not job.ignore_result
        # a job with a time limit gets its start posted at once, so that its clocks start
        # now and not with the next wake-up (up to the loop's idle timeout later). Ask the
        # Job, not the body: its limits are what the supervisor resolved from the message,
        # the task, the lane and the worker, and only the message's are in the body
        notify = job.soft_limit is not None or job.hard_limit is not None
        self._jobs[seq] = Held(job.id, slot)   # before the offer: it may end at once
        self._by_id[job.id] = seq
        self._table.offer(slot, seq, job.body, self_store=lone, notify_start=notify)

    def turned(self) -> None:
        """The supervisor's loop turned (``Pool.turned``): children claim queued jobs
        only while it turns (``pools.base.LOOP_FRESH``)."""
        if self._state == "running":
            self._table.mark_turn()

    def withdraw(self, job_id: str) -> bool:
        """A queued job no child claimed yet, out of the ring (``Pool.withdraw``)."""
        with self._lock:
            seq = self._by_id.get(job_id)
            entry = self._jobs.get(seq) if seq is not None else None
            if entry is None or not self._taken_back(seq, entry):
                return False
        return True

    def take_back(self) -> list[str]:
        """Every queued job no child claimed yet, out of the ring, in the order they
        were submitted (``Pool.take_back``)."""
        with self._lock:
            return [entry.job_id for seq, entry in list(self._jobs.items())
                    if self._taken_back(seq, entry)]

    def _taken_back(self, seq: int, entry: Held) -> bool:
        """(lock held) Take the job's slot off offer and forget the job, without an
        outcome; False when a child claimed it (it runs, or ran)."""
        if self._state != "running" or entry.child >= 0 or not self._table.withdraw(entry.slot):
            return False
        del self._jobs[seq]
        self._free_slot(entry)
        return True

    def _free_slot(self, entry: Held) -> None:
        """The job is no longer ours (its entry left ``_jobs``): its id and slot are free."""
        self._by_id.pop(entry.job_id, None)
        self._table.release(entry.slot)
        self._free.append(entry.slot)

    def interrupt(self, job_id: str) -> None:
        seq = self._by_id.get(job_id)
        entry = self._jobs.get(seq) if seq is not None else None
        if entry is not None and entry.child < 0:
            with self._lock:          # its start record may still be unread
                self._drain_locked()
                self._scan_starts()
        if entry is None or entry.child < 0 or seq not in self._jobs:
            return
        kid = self._children.get(entry.child)
        if kid is None or kid.outbox.seq != seq:
            return
        kid.outbox.target = seq            # the child raises only for this job
        signal_pid(kid.pid, signal.SIGUSR1)

    def kill(self, job_id: str) -> None:
        seq = self._by_id.get(job_id)
        if seq is None or self._state == "closed":
            return
        deadline = time.monotonic() + KILL_REAP_WAIT
        victim = None
        while victim is None:
            with self._lock:
                self._drain_locked()
                self._scan_starts()
                entry = self._jobs.get(seq)
                if entry is None:
                    return                 # it ended first: its own outcome stands
                slot = entry.slot
                if entry.child < 0 and self._table.withdraw(slot):
                    self._finish_killed(seq, entry)     # never started: no child to end
                    return
                victim = self._holder(seq, entry)
                if victim is not None:
                    self._finish_killed(seq, entry)
                    victim.killed = True
                    signal_pid(victim.pid, signal.SIGKILL)
            if victim is None:
                # claimed by a child between two of its status writes, or by a dead child
                # the reaper has not seen yet
                self.maintain()
                if time.monotonic() > deadline:
                    return
                time.sleep(0.001)
        self._stats["killed"] += 1
        self._reap(victim, wait=KILL_REAP_WAIT)
        self._replenish()

    def maintain(self) -> None:
        if self._state != "running":
            return
        for kid in list(self._children.values()):
            self._reap(kid, wait=0)
        self._replenish()

    def stop(self, timeout: float) -> list[str]:
        if self._state in ("new", "closed"):
            return []
        self._state = "stopping"
        self._table.set_stopping()
        self._table.wake(len(self._children))
        deadline = time.monotonic() + max(0.0, timeout)
        while self._children and time.monotonic() < deadline:
            self.poll()      # outcomes of the jobs finishing now (no reader when polled)
            for kid in list(self._children.values()):
                self._reap(kid, wait=0)
            if self._children:
                time.sleep(0.005)
        self._kill_all()   # overran the timeout: cold for these
        with self._lock:
            self._drain_locked()
            never_started = [e.job_id for e in self._jobs.values() if e.child < 0]
            self._jobs.clear()
            self._by_id.clear()
        self._close()
        return never_started

    def terminate(self) -> None:
        if self._state in ("new", "closed"):
            self._state = "closed"
            return
        self._silent = True
        self._state = "stopping"
        self._kill_all()
        self._jobs.clear()
        self._by_id.clear()
        self._close()

    def _kill_all(self) -> None:
        """SIGKILL every child, reap them all, stop the reader thread."""
        for kid in list(self._children.values()):
            kid.killed = True
            signal_pid(kid.pid, signal.SIGKILL)
        for kid in list(self._children.values()):
            waitpid(kid.pid, block=True)
            self._running_here(kid.index, kid.outbox)   # started: not "never started"
            self._forget(kid)
        self._stop_reader()

    def grow(self, n: int) -> None:
        if n < 0:
            raise ValueError("grow takes a positive count")
        self.concurrency += n
        if self._state == "running":
            self._replenish()

    def shrink(self, n: int) -> None:
        if n < 0:
            raise ValueError("shrink takes a positive count")
        n = min(n, self.concurrency - 1)
        if n <= 0:
            return
        self.concurrency -= n
        if self._state != "running":
            return
        live = [k for k in self._children.values() if not k.retiring]
        live.sort(key=lambda k: k.outbox.phase == shm.RUNNING)   # idle ones first
        for kid in live[:n]:
            kid.retiring = True
            kid.outbox.flags = kid.outbox.flags | shm.RETIRE
        self._table.wake(n)

    def info(self) -> dict:
        kids = list(self._children.values())
        running = sum(1 for e in list(self._jobs.values()) if e.child >= 0)
        return {
            "pool": self.name,
            "concurrency": self.concurrency,
            "prefetch": self.prefetch,
            "pids": [k.pid for k in kids],
            "busy": sum(1 for k in kids if k.outbox.phase == shm.RUNNING),
            "running": running,
            "queued": len(self._jobs) - running,
            "tasks_done": sum(k.outbox.done for k in kids) + self._stats.get("done_by_dead", 0),
            "slots": self._table.nslots if self._table else 0,
            **{k: v for k, v in self._stats.items() if k != "done_by_dead"},
        }

    # -- completions -----------------------------------------------------------------------
    def _read_loop(self) -> None:
        acquire, jobs, sleep = self._done.acquire, self._jobs, time.sleep
        while self._state != "closed" and not self._reader_stop:
            acquire(True, READER_IDLE)
            if len(jobs) > self.concurrency:
                # busy (more jobs held than children): let completions gather for a moment,
                # so that this thread and the supervisor's loop wake once for several; a
                # lone job (latency) is read at once
                sleep(COALESCE)
            with self._lock:
                self._drain_locked()

    _reader_stop = False

    def _drain_locked(self) -> None:
        """Read every outbox until all are empty; the caller holds ``_lock``."""
        absorb = None if self._polled else self._done.acquire   # polled: the waiter absorbs
        boxes = self._outboxes
        while True:
            while absorb is not None and absorb(False):   # tokens for what we will read
                pass
            got = 0
            for index, box in boxes:
                records = box.drain()
                if records:
                    got += len(records)
                    self._handle(index, records)
            if not got:
                if len(self._jobs) and time.monotonic() >= self._next_scan:
                    self._scan_starts()
                return

    def _scan_starts(self) -> None:
        """Starts the children did not post (``child._loop``): a child whose status says
        RUNNING a job we hold runs it. The caller holds ``_lock``."""
        self._next_scan = time.monotonic() + START_SCAN
        for index, box in self._outboxes:
            entry = self._running_here(index, box)
            if entry is not None and not entry.start_reported and not self._silent:
                entry.start_reported = True
                self.on_start(entry.job_id)

    def _running_here(self, index: int, box: shm.Outbox) -> Held | None:
        """The job child ``index``'s status says it runs, when we did not know it ran
        there yet (no start record): now we do. None otherwise."""
        if box.phase != shm.RUNNING:
            return None
        entry = self._jobs.get(box.seq)
        if entry is None or entry.child >= 0:
            return None
        entry.child = index
        return entry

    def _handle(self, index: int, records) -> None:
        jobs, silent = self._jobs, self._silent
        for kind, payload in records:
            if kind == shm.STARTED:
                seq = shm.started_seq(payload)
                entry = jobs.get(seq)
                if entry is not None:
                    entry.child = index
                    if not entry.start_reported and not silent:   # once, even on a rerun
                        entry.start_reported = True
                        self.on_start(entry.job_id)
            else:
                fields = _child.decode_outcome(payload)
                seq = fields[0]
                entry = jobs.get(seq)
                if entry is None:
                    continue           # killed, or already reported: exactly one outcome
                fields[0] = entry.job_id
                entry.child = index
                self._finish(seq, Outcome(*fields))

    def _finish(self, seq: int, outcome: Outcome) -> None:
        entry = self._jobs.pop(seq, None)
        if entry is None:
            return
        if entry.child >= 0 and not entry.start_reported:   # its start, told with its end
            entry.start_reported = True
            outcome.began = True
        self._free_slot(entry)
        if not self._silent:
            self.on_outcome(outcome)

    def _finish_killed(self, seq: int, entry: Held) -> None:
        self._finish(seq, Outcome.from_exception(
            entry.job_id, TimeLimitExceeded("hard time limit exceeded: task killed")))

    def _stop_reader(self) -> None:
        self._reader_stop = True
        if self._reader is not None:
            self._done.release()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(5)

    def _close(self) -> None:
        self._state = "closed"
        for box in self._spare.values():
            box.close()
        self._spare.clear()
        if self._table is not None:
            self._table.close()
            self._table = None
