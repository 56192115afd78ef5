"""Lanes: some queues served by one pool. The lane interface, and the lane whose pool runs
in the supervisor's process (``PoolLane``: its fetch thread and its prefetch budget).

The supervisor owns every lane and is the only caller of its pool. The fetch thread only
reads from Redis (one XREADGROUP per batch) and hands the batch to the supervisor's inbox;
the budget bounds how many messages a lane holds (buffered + in its pool). Lanes in a
process of their own are ``engine.worker.isolation``'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import redis

from engine.broker import Broker
from engine import limits
from engine.exceptions import NotSupported
from engine.logs import task_context
from engine.worker import ossignals
from engine.worker.pressure import FETCH_PAUSE, Pressure, Throttled
from engine.worker.snapshot import LaneInfo
from engine.worker.unread import Unread
from engine.worker.windows import Windows
from engine.worker.lanespec import LaneSpec
from pools.base import Job, Pool

if TYPE_CHECKING:
    from engine.task import Task

log = logging.getLogger("engine.worker")

#: seconds of queued work per execution slot a lane aims to hold (see ``Lane.resize``)
QUEUED_WORK_TARGET = 0.05
#: messages per slot a lane holds at least (one running, one waiting), prefetch allowing
MIN_PER_SLOT = 2
#: jobs submitted in a row before the loop yields the processor once
YIELD_EVERY = 200
#: milliseconds one XREADGROUP may block; bounds how long a warm shutdown waits for fetchers
FETCH_BLOCK_MS = 500
#: seconds a warm shutdown waits for a fetch thread to return from its blocking read
FETCH_JOIN_TIMEOUT = 2.0
#: seconds a fetch may take beyond its block before the lane suspects a pause of this
#: process and checks it still owns its buffer before feeding (``engine.worker.ownership``)
PAUSED_FETCH = 0.5
#: seconds between reconnect attempts of a fetch thread, doubled up to the maximum
RECONNECT_BACKOFF, RECONNECT_BACKOFF_MAX = 0.1, 5.0


@dataclass(slots=True, eq=False)
class Delivery:
    """A fetched message on its way through a lane."""

    job: Job
    stream: str
    entry_id: bytes
    lane: "PoolLane"
    task: "Task"
    deliveries: int = 1
    soft: float | None = None
    hard: float | None = None
    acked: bool = False
    started: float | None = None    #: monotonic, once the pool says it began
    revoked: bool = False           #: killed by revoke(terminate=True): record REVOKED
    slot: bool = False              #: holds a fleet concurrency slot (engine.flow)
    unique: str | None = None       #: the unique lock its message carries (engine.flow)
    expires: float | None = None    #: unix seconds: not handed to a pool after it


class Lane:
    """The lane interface: some queues served by one pool, as the supervisor drives it.

    Two implementations: ``PoolLane`` (the pool runs in the supervisor's process, fed from
    a fetch thread within a prefetch budget) and ``engine.worker.isolation.ProcessLane``
    (a one-lane ``engine run`` child that fetches, runs and writes by itself). The
    supervisor calls every method from its loop thread only, ``start`` first.

    A lane whose process fetches nothing here holds nothing here: its ``streams`` are
    empty, ``feed`` and ``settle`` find nothing to do and ``give_back`` returns nothing.
    """

    spec: LaneSpec
    name: str
    queues: list[str]
    #: streams this process reads for the lane (take-back and reclaim go through them)
    streams: list[str]
    #: the pool class serving the lane (here or in the lane's process)
    pool_cls: type[Pool]
    #: a pause was noticed: feed nothing until ``engine.worker.ownership`` has checked
    #: that the buffer is still this worker's
    unverified: bool = False

    def start(self, take_back: Callable[["Lane"], None]) -> None:
        """Bring the lane up: ``take_back(lane)`` must run before the lane fetches anything
        new (the messages this worker name held when it last died come first)."""
        raise NotImplementedError

    def feed(self, admit: Callable[[Delivery], bool]) -> None:
        """Submit buffered deliveries while the pool has free slots; ``admit`` is the
        supervisor's word on each one (False: it settled the delivery or set it aside)."""
        raise NotImplementedError

    def settle(self) -> None:
        """End of a loop turn: give the prefetch budget back for what left the lane."""
        raise NotImplementedError

    def maintain(self, due: bool) -> None:
        """``due``: the maintenance interval passed or a child exited."""
        raise NotImplementedError

    def resize(self) -> None:
        """Housekeeping: fit the prefetch budget to the work."""
        raise NotImplementedError

    def stop_fetching(self) -> None:
        """Warm shutdown, first step for every lane at once: take no new work."""
        raise NotImplementedError

    def give_back(self) -> list[Delivery]:
        """What was fetched and never submitted, removed from the lane."""
        raise NotImplementedError

    def stop(self, timeout: float) -> list[str]:
        """Warm: let running work end; the ids of submitted jobs that never started."""
        raise NotImplementedError

    def terminate(self) -> None:
        """Cold, idempotent: end everything now."""
        raise NotImplementedError

    def grow(self, n: int) -> int:
        """Add ``n`` slots (NotSupported if the pool cannot); returns the new size."""
        raise NotImplementedError

    def shrink(self, n: int) -> int:
        raise NotImplementedError

    def set_levels(self, levels: dict[str, list[int]]) -> list[tuple[str, int]]:
        """Priority levels in use per queue (``Broker.levels``): the lane reads them highest
        first from now on; returns the (queue, level) streams it did not read before."""
        raise NotImplementedError

    def forward(self, command: dict) -> None:
        """A control command the supervisor handled that the lane's own process must hear
        too (revoke): a pool lane shares the supervisor's process and needs nothing."""
        raise NotImplementedError

    def info(self) -> LaneInfo:
        """The lane's part of the worker snapshot."""
        raise NotImplementedError


class PoolLane(Lane):
    """A lane whose pool runs in the supervisor's process."""

    def __init__(self, spec: LaneSpec, pool: Pool, broker_keys: Any, *,
                 make_broker: Callable[[], Broker], consumer: str,
                 deliver: Callable[[Any], None], stopping: threading.Event,
                 paused: Callable[[], set[str]] = set,
                 pressure: Pressure | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.pool = pool
        self.pool_cls = type(pool)
        self.queues = list(spec.queues)
        self._keys = broker_keys
        self.streams = [broker_keys.queue(q) for q in self.queues]
        self._ordered = self.streams           #: what the fetch thread reads, best first
        self._queue_of = dict(zip(self.streams, self.queues))
        self._level_pairs: list[tuple[str, int]] = []   # (queue, priority above 0)
        self.capacity = max(spec.concurrency * max(spec.prefetch, 1), spec.concurrency)
        self.low_water = max(self.capacity // 2, 1)
        self.returned = 0    #: left the lane this loop turn (``settle`` gives the budget back)
        self.runtime: float | None = None   #: moving average of task run time, seconds
        self.buffer: deque[Delivery] = deque()
        self.fetching = True
        self.processed = 0
        self.failed = 0
        self._held = 0
        self._room = threading.Condition()
        self._thread: threading.Thread | None = None
        self._make_broker = make_broker
        self._consumer = consumer
        self._deliver = deliver
        self._stopping = stopping
        self._paused = paused      #: queues the fleet does not fetch now (engine.flow)
        #: while Redis refuses writes the lane fetches nothing it could not report on
        self._pressure = pressure if pressure is not None else Pressure()

    # -- life cycle --------------------------------------------------------------------
    def start(self, take_back: Callable[[Lane], None]) -> None:
        self.pool.start()
        take_back(self)
        self._thread = threading.Thread(target=self._fetch_loop, name=f"fetch-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop_fetching(self) -> None:
        # the supervisor set ``stopping`` before: every fetch thread is leaving at once,
        # and this waits for ours to return from its blocking read (batches it delivered
        # meanwhile are in the inbox: the supervisor drains it before ``give_back``)
        self.fetching = False
        with self._room:
            self._room.notify_all()
        if self._thread is not None:
            self._thread.join(FETCH_JOIN_TIMEOUT)

    def give_back(self) -> list[Delivery]:
        deliveries = list(self.buffer)
        self.buffer.clear()
        return deliveries

    def stop(self, timeout: float) -> list[str]:
        return self.pool.stop(timeout)

    def terminate(self) -> None:
        self.fetching = False
        self.pool.terminate()

    def maintain(self, due: bool) -> None:
        # reaping costs system calls per child: only when due, or every turn for a pool
        # that runs its jobs inside ``maintain`` (solo)
        if due or self.pool.runs_jobs_in_maintain:
            self.pool.maintain()

    def forward(self, command: dict) -> None:
        pass

    # -- one job (the supervisor decides when) -----------------------------------------
    def interrupt(self, job_id: str) -> None:
        """Raise SoftTimeLimitExceeded inside the job (a log line if the pool cannot)."""
        try:
            self.pool.interrupt(job_id)
        except NotSupported as exc:
            log.warning("%s", exc)

    def fire_limit(self, delivery: Delivery, kind: str, worker: str) -> None:
        """A time limit of ``delivery`` fired (``engine.limits`` SOFT or HARD): carry it out."""
        job = delivery.job
        context = task_context(job.id, job.task, job.queue, worker)
        if kind == limits.SOFT:
            log.info("task %s[%s]: soft time limit (%.3g s)", job.task, job.id, delivery.soft,
                     extra=context)
            self.interrupt(job.id)
        else:
            log.warning("task %s[%s]: hard time limit (%.3g s), ending it", job.task, job.id,
                        delivery.hard, extra=context)
            self.end(job.id)

    def end(self, job_id: str) -> bool:
        """End the job now (hard limit, revoke with terminate); False when the pool cannot.
        The supervisor's signals stay blocked meanwhile: a pool may start threads here."""
        try:
            with ossignals.masked():
                self.pool.kill(job_id)
        except NotSupported as exc:
            log.warning("cannot end %s: %s", job_id, exc)
            return False
        return True

    # -- feeding -----------------------------------------------------------------------
    def feed(self, admit: Callable[[Delivery], bool]) -> None:
        if self.pool.turned is not None:
            self.pool.turned()
        buffer = self.buffer
        if not buffer or not self.fetching or self.unverified:
            return
        pool = self.pool
        free = pool.free_slots()
        submitted = 0
        while buffer and free > 0:
            delivery = buffer.popleft()
            if not admit(delivery):
                continue
            pool.submit(delivery.job)
            free -= 1
            submitted += 1
            if not submitted % YIELD_EVERY:
                # let others run: other threads, or, in a gevent process (where sleep is
                # cooperative), the jobs just spawned and the hub's I/O
                time.sleep(0)
            if free <= 0:
                free = pool.free_slots()

    # -- the prefetch budget (holders take, the loop releases) -------------------------
    def hold(self, n: int) -> None:
        """``n`` more messages in the lane (fetched, taken back, reclaimed, redelivered)."""
        with self._room:
            self._held += n

    @property
    def held(self) -> int:
        """Messages the lane holds now (buffered, in its pool, or settled this turn)."""
        return self._held

    def settle(self) -> None:
        if self.returned:
            n, self.returned = self.returned, 0
            with self._room:
                self._held -= n
                if self.capacity - self._held >= self.low_water:
                    self._room.notify()

    def note_runtime(self, runtime: float) -> None:
        """On the loop, for every outcome: feeds the moving average ``resize`` reads."""
        average = self.runtime
        self.runtime = runtime if average is None else average + (runtime - average) * 0.05

    def resize(self) -> None:
        """Hold about QUEUED_WORK_TARGET seconds of work per slot, within the prefetch limit:
        deep for short tasks (throughput), shallow for long ones, so that a worker never sits
        on messages another worker could be running."""
        limit = max(self.spec.prefetch, 1)
        per_slot = limit
        if self.runtime is not None:
            wanted = int(QUEUED_WORK_TARGET / max(self.runtime, 1e-6))
            per_slot = max(min(wanted, limit), min(MIN_PER_SLOT, limit))
        capacity = max(self.spec.concurrency * per_slot, self.spec.concurrency)
        if capacity != self.capacity:
            with self._room:
                self.capacity = capacity
                self.low_water = max(capacity // 2, 1)
                self._room.notify()

    def room(self) -> int:
        """How many more messages the budget allows now."""
        return self.capacity - self._held

    # -- control -----------------------------------------------------------------------
    def grow(self, n: int) -> int:
        self.pool.grow(n)
        return self._resized()

    def shrink(self, n: int) -> int:
        self.pool.shrink(n)
        return self._resized()

    def _resized(self) -> int:
        # the lane's prefetch budget follows its pool, so new slots get messages
        self.spec.concurrency = self.pool.concurrency
        self.resize()
        return self.pool.concurrency

    def info(self) -> LaneInfo:
        return LaneInfo(name=self.name, queues=self.queues, pool=self.spec.pool,
                        concurrency=self.spec.concurrency, buffered=len(self.buffer),
                        processed=self.processed, failed=self.failed,
                        pool_info=self.pool.info())

    # -- the fetch thread --------------------------------------------------------------
    def _wait_for_room(self, timeout: float) -> int:
        # fetch in batches: wait until half the budget is free (or nothing is held at all)
        with self._room:
            if self.capacity - self._held < self.low_water and self._held > 0:
                self._room.wait(timeout)
            return self.capacity - self._held

    def _fetch_loop(self) -> None:
        """The fetch thread: ``_fetch`` until the lane stops. An error in it that is no
        ``RedisError`` (a bug: those are handled where they happen) is logged and the
        thread starts over after a pause; it never leaves the lane without a fetcher."""
        backoff = RECONNECT_BACKOFF
        while not self._stopping.is_set() and self.fetching:
            try:
                self._fetch()
                return
            except Exception:
                log.exception("lane %s: the fetch thread failed; it starts again in %.1f s",
                              self.name, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX)

    def _fetch(self) -> None:
        broker = self._make_broker()
        try:
            stopping = self._stopping
            paused: set[str] | None = None
            ordered: list[str] | None = None
            streams: dict[str, str] = {}
            windows = Windows([], FETCH_BLOCK_MS)
            backoff = RECONNECT_BACKOFF
            pressure = self._pressure
            errors = Throttled()
            unread = Unread(broker, self._consumer)   # what a dropped read handed over
            while not stopping.is_set() and self.fetching:
                if pressure.refusing:
                    stopping.wait(FETCH_PAUSE)
                    continue
                room = self._wait_for_room(FETCH_BLOCK_MS / 1000)
                if room <= 0 or stopping.is_set() or not self.fetching:
                    continue
                if self._paused() is not paused or self._ordered is not ordered:
                    # new sets (pauses, priority levels) are new objects: compare identities
                    paused, ordered = self._paused(), self._ordered
                    streams = {stream: ">" for stream in ordered
                               if self._queue_of[stream] not in paused}
                    windows = Windows(list(streams), FETCH_BLOCK_MS)
                if not streams:
                    stopping.wait(FETCH_BLOCK_MS / 1000)
                    continue
                # XREADGROUP's COUNT is per stream: one read over every stream while the room
                # covers them all, else rotating windows of ``room`` streams, COUNT 1 each
                n_streams = len(streams)
                if room >= n_streams:
                    reading, count, block = streams, room // n_streams, FETCH_BLOCK_MS
                else:
                    reading, block = windows.next(room), windows.block_ms
                    count = 1
                began = time.monotonic()
                try:
                    batch = None
                    if unread.lost:
                        batch = unread.recover()
                    else:
                        unread.before(streams)
                        if self._level_pairs:   # priority levels: highest first (non-blocking)
                            batch = self._fetch_by_priority(broker, streams, room)
                        if not batch:
                            batch = broker.fetch(self._consumer, reading, count=count,
                                                 block_ms=block)
                        unread.seen(batch)
                except redis.RedisError as exc:
                    unread.failed(exc)
                    if isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc):
                        try:   # a stream was deleted under us: recreate
                            broker.ensure_groups(self.queues, self._levels())
                            continue
                        except redis.RedisError as error:
                            exc = error
                    # this thread must live on whatever Redis says: the lane would starve
                    errors.warning("lane %s: fetch failed (%s); retrying, backing off up to "
                                   "%.1f s", self.name, exc, RECONNECT_BACKOFF_MAX)
                    stopping.wait(backoff)
                    backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX)
                    continue
                backoff = RECONNECT_BACKOFF
                if batch:
                    if time.monotonic() - began > FETCH_BLOCK_MS / 1000 + PAUSED_FETCH:
                        self.unverified = True   # set before the batch reaches the loop
                    self.hold(sum(len(entries) for _, entries in batch))
                    self._deliver((self, batch))
        finally:
            broker.close()
            broker.client.close()

    def _fetch_by_priority(self, broker: Broker, streams: dict[str, str], room: int) -> list:
        """Higher levels first: a stream is read only when every higher one had nothing
        (one non-blocking read per level; the caller blocks on all when none had any)."""
        batch: list = []
        for stream in streams:          # ``_ordered``: highest priority first
            got = broker.fetch(self._consumer, {stream: ">"}, count=room, block_ms=None)
            if got and got[0][1]:
                batch += got
                room -= len(got[0][1])
                if room <= 0:
                    break
        return batch

    # -- priority levels ---------------------------------------------------------------
    def _levels(self) -> list[tuple[str, int]]:
        return list(self._level_pairs)

    def set_levels(self, levels: dict[str, list[int]]) -> list[tuple[str, int]]:
        """The priority levels in use for this lane's queues (``Broker.levels``); returns
        the (queue, level) pairs that are new, whose groups the caller creates first."""
        known = set(self._level_pairs)
        pairs = [(q, n) for q in self.queues for n in levels.get(q, ())]
        new = [pair for pair in pairs if pair not in known]
        if new or len(pairs) != len(self._level_pairs):
            self._level_pairs = pairs
            ordered = sorted(((n, i, self._keys.queue(q, n)) for i, (q, n) in enumerate(
                pairs + [(q, 0) for q in self.queues])), key=lambda t: (-t[0], t[1]))
            self._queue_of = {self._keys.queue(q, n): q for q, n in
                              pairs + [(q, 0) for q in self.queues]}
            # new lists, swapped whole: the fetch thread notices by identity
            self.streams = [stream for _, _, stream in ordered]
            self._ordered = self.streams
        return new


def read_levels(broker: Broker, lanes: list[Lane]) -> None:
    """Priority levels producers use: each lane reads them, highest first, from now on
    (their consumer groups are created here, before the lane's next fetch)."""
    levels = broker.levels()
    for lane in lanes:
        new = lane.set_levels(levels)
        if new:
            broker.ensure_groups((), new)
