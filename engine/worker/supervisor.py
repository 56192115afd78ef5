"""The worker supervisor behind ``engine run``: it drives one pool per lane.

One thread (the main one) owns every pool and every decision: it takes fetched batches,
outcomes, start notices, signals and control commands from one inbox, submits jobs while
pools have free slots, fires time limits from ``engine.limits``, and writes results, acks
and events in one pipeline per loop turn. Helper threads only read Redis (fetch, control)
or write the heartbeat snapshot the loop prepared.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import queue
import socket
import sys
import threading
import time
from collections import defaultdict, deque
from typing import Any

import msgpack
import redis

from engine import control, limits, message
from engine.canvas import worker as canvas
from engine.worker import ossignals as signals
from engine.broker import Broker
from engine.events import EventBuffer
from engine.exceptions import ConfigurationError, NotSupported, WorkerLostError
from engine.worker.isolation import IsolatedLane, control_channel, wants_isolation
from engine.worker.lanes import Delivery, Lane, LaneSpec
from engine.results import REVOKED, RETRY, encode_record
from engine.worker.presence import RECLAIM_SHARE, Presence, process_figures
from engine.worker.runner import TaskRunner
from engine.wire import fields_get
from engine.worker.writer import WriteBatch, Writer
from pools import resolve
from pools.base import FAILURE, REJECTED, SUCCESS, Outcome

log = logging.getLogger("engine.worker")

#: seconds between housekeeping rounds (delayed moves, reclaim, revocation sync)
HOUSEKEEPING_INTERVAL = 0.25
#: longest the loop sleeps with nothing to do (pools get ``maintain`` at least this often)
MAX_IDLE = 0.1
#: items taken from the inbox per loop turn
MAX_BATCH = 500
#: jobs submitted in a row before the loop yields the processor once
YIELD_EVERY = 200
#: seconds a result or ack may wait for others to share its round trip (only while other
#: tasks are still running: the last one is written at once)
FLUSH_DELAY = 0.002
#: writes that trigger a flush without waiting
FLUSH_MAX = 1000
#: seconds between ``Pool.maintain`` calls (a SIGCHLD brings the next one forward)
MAINTAIN_INTERVAL = 0.02
_START, _SIGNAL, _CONTROL = "start", "signal", "control"
_WORKER_LOST = f"{WorkerLostError.__module__}.{WorkerLostError.__qualname__}"


class WakeInbox:
    """The loop's inbox when pools may wake the loop from other processes: items from this
    process's threads in a deque, and one process-shared semaphore that every producer posts
    (threads after each ``put``, prefork children after each completion they publish). The
    loop then reads the children's outboxes itself (``Pool.poll``), a thread hop less per
    completion than a reader thread handing them over.

    No wake-up is lost: producers publish, then post; ``wait`` takes every token, then the
    loop reads every source. Surplus tokens cost a spurious turn, nothing else."""

    def __init__(self) -> None:
        self._items: deque = deque()
        self.waker = multiprocessing.get_context("fork").Semaphore(0)
        self._post = self.waker.release
        self._take = self.waker.acquire

    def put(self, item: Any) -> None:
        self._items.append(item)
        self._post()

    def get_nowait(self) -> Any:
        try:
            return self._items.popleft()
        except IndexError:
            raise queue.Empty from None

    def get(self, timeout: float) -> Any:
        if not self._items:
            self.wait(timeout)
        return self.get_nowait()

    def wait(self, timeout: float) -> None:
        """Until something was posted or ``timeout``; then absorb every token."""
        take = self._take
        if not self._items and take(True, timeout):
            while take(False):
                pass


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


class ColdShutdown(BaseException):
    """Raised by the signal wake-up while a warm shutdown blocks in ``Pool.stop``."""


def default_name() -> str:
    return f"engine-{os.getpid()}@{socket.gethostname()}"


class Supervisor:
    def __init__(self, app, lanes: list[LaneSpec], *, name: str | None = None,
                 beat: bool = False) -> None:
        if not lanes:
            raise ConfigurationError("a worker needs at least one lane")
        self.app = app
        self.conf = app.conf
        self.name = (name or default_name()).replace("%h", socket.gethostname())
        self.specs = lanes
        self.beat = beat
        self.keys = app.broker.keys
        # a process-shared wake-up where it cannot stall a gevent hub (prefork lanes never
        # share a process with gevent: engine.worker.isolation puts them apart)
        self.inbox: Any = queue.SimpleQueue() if _gevent_patched() else WakeInbox()
        self._polled: list = []     # pools that publish to the inbox's waker (Pool.poll)
        self.inflight: dict[str, Delivery] = {}
        self.deadlines = limits.Deadlines()
        self.revoked: set[str] = set()
        self.lanes: list[Lane] = []
        self.runner = TaskRunner(app, self.name)
        self.events = EventBuffer(self.keys.events, self.name,
                                  enabled=bool(self.conf.worker_send_events),
                                  maxlen=int(self.conf.events_maxlen))
        self.max_deliveries = int(self.conf.task_max_deliveries)
        # read once: settings are fixed for a worker's life, and Config lookups are layered
        self._acks_late = bool(self.conf.task_acks_late)
        self._default_limits = (self.conf.task_soft_time_limit, self.conf.task_time_limit)
        self._track_started = bool(self.conf.task_track_started)
        self._next_maintain = 0.0
        self._child_exited = False
        self.lost_after = float(self.conf.worker_lost_after)
        self.started_at = time.time()
        self._stopping = threading.Event()     # fetch and helper threads end
        self._shutdown: str | None = None      # None, "warm" or "cold"
        self._blocking_stop = False
        self._acks: dict[str, list[bytes]] = defaultdict(list)
        self._records: list[tuple[str, bytes]] = []
        self._statuses: list[tuple[str, bytes]] = []
        self._extra: list[Any] = []             # callables(pipe) queued for the next flush
        self._canvas: list[canvas.Owed] = []    # canvas successors, after records, before acks
        self._snapshot: bytes = b""
        self.presence: Presence | None = None
        self._writer = Writer(app, events_stream=self.keys.events,
                              events_maxlen=int(self.conf.events_maxlen),
                              cancelled=lambda: self._shutdown == "cold",
                              pack_events=self.events.pack, sleep=self._retry_sleep)
        self._flush_due: float | None = None
        self._next_housekeeping = 0.0
        self._housekeeping_rounds = 0
        self._threads: list[threading.Thread] = []
        self._beat = None                       # engine.beat.Beat, with -B
        #: the supervisor's name when this worker is one of its isolated lanes (--lane-of)
        self.parent: str | None = None

    # -- life cycle --------------------------------------------------------------------
    def run(self) -> int:
        self.start()
        try:
            while self._shutdown is None:
                self.tick()
            if self._shutdown == "warm":
                self._warm_stop()
        except ColdShutdown:
            self._shutdown = "cold"
        finally:
            self._close()
        return signals.EXIT_OK

    def start(self) -> None:
        broker = self.app.broker
        self._check_name()
        self.presence = Presence(
            self.app, self.name, lost_after=self.lost_after,
            interval=float(self.conf.worker_heartbeat), events=self.events,
            snapshot=self._heartbeat_snapshot, active=lambda: len(self.inflight),
            # a lane process hears only what its supervisor forwards to it
            channel=(self.keys.control if self.parent is None
                     else control_channel(self.keys, self.name)),
            deliver=lambda command: self.inbox.put((_CONTROL, command)),
            stopping=self._stopping)
        self.presence.figures = process_figures()
        self.revoked = control.revoked_ids(self.app)
        for spec in self.specs:
            broker.ensure_groups(spec.queues)
            pool_cls = resolve(spec.pool)
            if wants_isolation(spec, pool_cls):
                self.lanes.append(IsolatedLane(spec, pool_cls, self))   # engine.worker.isolation
                continue
            # a pool that queues locally (prefork's shared ring) holds the lane's prefetch
            options = dataclasses.replace(spec.options, prefetch=spec.prefetch)
            pool = pool_cls(spec.concurrency, self.inbox.put, runner=self.runner,
                            on_start=self._on_start, options=options)
            attach = getattr(pool, "attach_waker", None)
            if attach is not None and isinstance(self.inbox, WakeInbox):
                attach(self.inbox.waker)
                self._polled.append(pool)
            self.lanes.append(Lane(spec, pool, self.keys))
        signals.install(self._wake)
        with signals.masked():   # threads started here never take the supervisor's signals
            for lane in self.lanes:
                lane.pool.start()
            self.presence.beat(online=True)
            self._take_back_own_pending()
            for lane in self.lanes:
                lane.start_fetching(self._make_broker, self.name, self._deliver, self._stopping)
            self._writer.start()
            self.presence.start(self._spawn)
        if self.beat:
            from engine.beat import Beat
            self._beat = Beat(self.app)
            with signals.masked():
                self._beat.start_thread()
        from engine.monitor import banner
        log.info("%s", banner(self))
        log.info("worker %s ready: %s", self.name, "; ".join(
            f"{lane.name}={lane.spec.pool}:{lane.spec.concurrency}" for lane in self.lanes))

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _make_broker(self) -> Broker:
        return Broker(self.app.new_client(), prefix=self.keys.prefix)

    def _check_name(self) -> None:
        """Refuse to start beside a live worker of the same name (a dead one is taken over)."""
        raw = self.app.client.get(self.keys.worker(self.name))
        if not raw:
            return
        try:
            info = msgpack.unpackb(raw, raw=False)
        except Exception:
            return
        same_host = info.get("host") == socket.gethostname()
        pid = info.get("pid")
        if same_host and pid and pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
            raise ConfigurationError(f"a worker named {self.name!r} is already running (pid {pid})")
        if not same_host:
            raise ConfigurationError(f"a worker named {self.name!r} is alive on {info.get('host')}")

    # -- the inbox ---------------------------------------------------------------------
    def _wake(self, intent: str) -> None:
        """Signal handlers land here (main thread, between bytecodes)."""
        if intent == signals.SHUTDOWN and (self._blocking_stop or self._shutdown is not None):
            self._shutdown = "cold"
            raise ColdShutdown()
        self.inbox.put((_SIGNAL, intent))

    def _deliver(self, item: Any) -> None:
        self.inbox.put(item)

    def _on_start(self, job_id: str) -> None:
        self.inbox.put((_START, job_id))

    def tick(self) -> None:
        """One loop turn: wait for work or the next deadline, handle it, feed, flush."""
        now = limits.now()
        timeout = MAX_IDLE
        next_deadline = self.deadlines.next_deadline()
        if next_deadline is not None:
            timeout = min(timeout, max(next_deadline - now, 0.0))
        if self._flush_due is not None:
            timeout = min(timeout, max(self._flush_due - now, 0.0))
        inbox = self.inbox
        if self._polled:
            inbox.wait(timeout)
            for pool in self._polled:
                pool.poll()
            timeout = 0
        try:
            item = inbox.get_nowait() if timeout == 0 else inbox.get(timeout=timeout)
        except queue.Empty:
            item = None
        handled = 0
        while item is not None:
            if type(item) is Outcome:
                self._on_outcome(item)
            else:
                self._dispatch(item)
            handled += 1
            if handled >= MAX_BATCH:
                break
            try:
                item = inbox.get_nowait()
            except queue.Empty:
                item = None
        for lane in self.lanes:
            lane.return_credit()
        # feed before writing: the pools work while this thread talks to Redis
        self._feed()
        self._maybe_flush()
        self._fire_limits()
        self._maintain()
        if limits.now() >= self._next_housekeeping:
            self._housekeeping()

    def _maintain(self) -> None:
        """Pools get ``maintain`` every MAINTAIN_INTERVAL, at once after a SIGCHLD, and every
        turn when they run jobs inside it (solo): reaping costs system calls per child."""
        now = limits.now()
        due = now >= self._next_maintain or self._child_exited
        for lane in self.lanes:
            pool = lane.pool
            if due or pool.runs_jobs_in_maintain:
                pool.maintain()
        if due:
            self._child_exited = False
            self._next_maintain = now + MAINTAIN_INTERVAL

    def _maybe_flush(self) -> None:
        """Write now when nothing else is running (latency) or enough has gathered or the
        oldest write has waited FLUSH_DELAY (throughput: one round trip for many tasks)."""
        pending = len(self._records) + len(self._statuses) + len(self._extra) + \
            len(self._canvas) + sum(len(ids) for ids in self._acks.values())
        if not pending:
            if self.events._pending:
                self._flush()   # only when the events are due (EventBuffer.take decides)
            return
        now = limits.now()
        if self._flush_due is None:
            self._flush_due = now + FLUSH_DELAY
        if not self.inflight or pending >= FLUSH_MAX or now >= self._flush_due:
            self._flush()

    def _dispatch(self, item: tuple) -> None:
        kind = item[0]
        if isinstance(kind, Lane):
            self._on_batch(kind, item[1])
        elif kind == _START:
            self._on_job_start(item[1])
        elif kind == _SIGNAL:
            self._on_signal(item[1])
        elif kind == _CONTROL:
            self.on_control(item[1])

    # -- fetched messages --------------------------------------------------------------
    def _on_batch(self, lane: Lane, batch: list, deliveries: dict[str, int] | None = None) -> None:
        now = time.time()
        for stream, entries in batch:
            stream = stream.decode() if isinstance(stream, bytes) else stream
            queue_name = self.keys.queue_name(stream)
            for entry_id, fields in entries:
                count = deliveries.get(_s(entry_id), 1) if deliveries else 1
                self._accept(lane, stream, queue_name, entry_id, fields, count, now)

    def _accept(self, lane: Lane, stream: str, queue_name: str, entry_id: bytes,
                fields: dict | None, count: int, now: float) -> None:
        if type(fields) is list and len(fields) == 2 and fields[0] == b"m":
            raw = fields[1]     # the entry as producers write it, straight off the wire
        else:
            raw = fields_get(fields, b"m")
        if raw is None:
            # an entry trimmed or deleted while pending, or one without the m field
            if fields:
                self._dead_letter(queue_name, b"", "entry has no 'm' field", stream, entry_id)
            else:
                self._acks[stream].append(entry_id)
            lane.returned += 1
            return
        try:
            body = message.decode_message(raw)
        except message.MessageError as exc:
            self._dead_letter(queue_name, raw, str(exc), stream, entry_id)
            lane.returned += 1
            return
        task = self.app.tasks.get(body["task"])
        if task is None:
            self._dead_letter(queue_name, raw, f"unknown task {body['task']!r}", stream, entry_id)
            lane.returned += 1
            return
        job = message.job_from_body(body, raw, queue_name)
        if count > self.max_deliveries:
            self._dead_letter(queue_name, raw, f"delivered {count} times (task_max_deliveries="
                              f"{self.max_deliveries})", stream, entry_id)
            self._store(job.id, encode_record(
                FAILURE, exc_type=_WORKER_LOST, exc_message="poison message: too many deliveries",
                task=job.task, worker=self.name, retries=job.retries), job, task)
            lane.returned += 1
            return
        delivery = Delivery(job, stream, entry_id, lane, task, deliveries=count)
        eta, expires = body.get("eta"), body.get("expires")
        if expires is not None and expires <= now:
            self._finish_revoked(delivery, "expired")
            lane.returned += 1
            return
        if eta is not None and eta > now + 0.001:
            # a message that arrived early (hand-built, or raced the delay mover): park it
            self._extra.append(lambda pipe, q=queue_name, r=raw, e=eta:
                               self.app.broker._push(pipe, q, r, e))
            self._acks[stream].append(entry_id)
            lane.returned += 1
            return
        spec = lane.spec
        if (job.soft_limit is None and job.hard_limit is None and task.soft_time_limit is None
                and task.time_limit is None and spec.soft_time_limit is None
                and spec.time_limit is None and self._default_limits == (None, None)):
            pass   # the common case, kept cheap: no limit anywhere
        else:
            soft, hard = limits.resolve_limits(
                (job.soft_limit, job.hard_limit), (task.soft_time_limit, task.time_limit),
                (spec.soft_time_limit, spec.time_limit), self._default_limits)
            delivery.soft, delivery.hard = soft, hard
            job.soft_limit, job.hard_limit = soft, hard
        self.events.task("task-received", job.id, job.task, queue=queue_name,
                         retries=job.retries)
        lane.buffer.append(delivery)

    def _feed(self) -> None:
        if self._shutdown is not None:
            return
        for lane in self.lanes:
            buffer = lane.buffer
            if not buffer or not lane.fetching:
                continue
            pool = lane.pool
            free = pool.free_slots()
            submitted = 0
            while buffer and free > 0:
                delivery = buffer.popleft()
                job = delivery.job
                if job.id in self.inflight:
                    # a second message with the id of a running task (a redelivery or a
                    # resend): it waits until that one ends, or the pool and the inflight
                    # table would mix up their outcomes and leave one unacked for ever
                    buffer.appendleft(delivery)
                    break
                if job.id in self.revoked:
                    self._finish_revoked(delivery, "revoked")
                    lane.returned += 1
                    continue
                acks_late = delivery.task.acks_late
                if acks_late is None:
                    acks_late = self._acks_late
                if not acks_late:
                    self._acks[delivery.stream].append(delivery.entry_id)
                    delivery.acked = True
                self.inflight[job.id] = delivery
                pool.submit(job)
                free -= 1
                submitted += 1
                if not submitted % YIELD_EVERY:
                    # let others run: other threads, or, in a gevent process (where sleep is
                    # cooperative), the jobs just spawned and the hub's I/O
                    time.sleep(0)
                if free <= 0:
                    free = pool.free_slots()

    # -- pool callbacks, handled on the loop -------------------------------------------
    def _on_job_start(self, job_id: str) -> None:
        delivery = self.inflight.get(job_id)
        if delivery is None or delivery.started is not None:
            return
        delivery.started = limits.now()
        if delivery.revoked:   # revoke(terminate=True) came before it started
            self._terminate(delivery)
            return
        if delivery.soft is not None or delivery.hard is not None:
            self.deadlines.add(job_id, soft=delivery.soft, hard=delivery.hard,
                               start=delivery.started)
        self.events.task("task-started", job_id, delivery.job.task)
        if self._track_started and not delivery.job.ignore_result:
            self._statuses.append((job_id, encode_record(
                "STARTED", task=delivery.job.task, worker=self.name,
                retries=delivery.job.retries)))

    def _on_outcome(self, outcome: Outcome) -> None:
        delivery = self.inflight.pop(outcome.job_id, None)
        if delivery is None:
            return   # a late outcome of a job already reported (a pool broke its promise)
        self.deadlines.cancel(outcome.job_id)
        lane = delivery.lane
        lane.returned += 1
        lane.note_runtime(outcome.runtime)
        job = delivery.job
        state = outcome.state
        if delivery.revoked:
            self._finish_revoked(delivery, "terminated")
            return
        if state == FAILURE and outcome.exc_type == _WORKER_LOST and not delivery.acked \
                and delivery.deliveries < self.max_deliveries:
            # the process running it died: run it again (at least once), counting deliveries
            log.warning("task %s[%s] lost its process; delivering it again", job.task, job.id)
            delivery.deliveries += 1
            delivery.started = None
            lane._take(1)
            lane.buffer.appendleft(delivery)
            return
        if state == FAILURE and outcome.exc_type == _WORKER_LOST and not delivery.acked:
            # a poison message: it killed its process every time it ran; file it with the
            # reason (the FAILURE record below tells the caller)
            self._extra.append(lambda pipe, q=job.queue, r=job.body, n=delivery.deliveries:
                               self.app.broker.dead_letter(
                                   pipe, q, r, f"its process died in each of {n} deliveries "
                                   f"(task_max_deliveries={self.max_deliveries})"))
        lane.processed += 1
        if state == SUCCESS:
            if job.canvas is not None:
                self._settle_canvas(delivery, outcome)   # its record, with its children
            elif not (job.ignore_result or delivery.task.ignore_result or outcome.stored):
                self._records.append((job.id, encode_record(
                    SUCCESS, outcome.result, retries=job.retries, task=job.task,
                    worker=self.name, runtime=outcome.runtime)))
            self.events.task("task-succeeded", job.id, job.task, runtime=outcome.runtime)
        elif state == RETRY:
            self._retry(delivery, outcome)
        elif state == REJECTED:
            if outcome.requeue:
                self._extra.append(lambda pipe, q=job.queue, r=job.body:
                                   self.app.broker._push(pipe, q, r, None))
            else:
                self._extra.append(lambda pipe, q=job.queue, r=job.body, m=outcome.exc_message:
                                   self.app.broker.dead_letter(pipe, q, r, f"rejected: {m}"))
            self.events.task("task-failed", job.id, job.task, exception="Reject",
                             rejected=True)
        else:
            lane.failed += 1
            if outcome.exc_type.endswith("TimeLimitExceeded"):
                log.warning("task %s[%s] hit its time limit", job.task, job.id)
            else:
                log.info("task %s[%s] failed: %s: %s", job.task, job.id,
                         outcome.exc_type, outcome.exc_message)
            self._store(job.id, encode_record(
                FAILURE, exc_type=outcome.exc_type, exc_message=outcome.exc_message,
                traceback=outcome.traceback, retries=job.retries, task=job.task,
                worker=self.name, runtime=outcome.runtime), job, delivery.task)
            if job.canvas is not None:
                self._settle_canvas(delivery, outcome)
            self.events.task("task-failed", job.id, job.task, exception=outcome.exc_type,
                             message=outcome.exc_message, traceback=outcome.traceback,
                             runtime=outcome.runtime)
        if not delivery.acked:
            self._acks[delivery.stream].append(delivery.entry_id)

    def _settle_canvas(self, delivery: Delivery, outcome: Outcome) -> None:
        """What a canvas step owes (engine.canvas.worker): written with its result, before
        its ack, in the same flush."""
        job = delivery.job
        owed = canvas.settle(self.app, job, outcome, worker=self.name, store=not (
            job.ignore_result or delivery.task.ignore_result or outcome.stored))
        self._records.extend(owed.records)
        self._canvas.append(owed)

    def _retry(self, delivery: Delivery, outcome: Outcome) -> None:
        job = delivery.job
        retries = job.retries + 1
        body = message.reencode(job.body, retries=retries, eta=outcome.retry_at)
        # always through the delayed zset, even with no countdown (the mover runs every
        # HOUSEKEEPING_INTERVAL): a ZADD sent twice over a flaky connection is one retry
        self._extra.append(lambda pipe, k=self.keys.delayed(job.queue), b=body,
                           e=outcome.retry_at: pipe.zadd(k, {b: e}))
        if not job.ignore_result:
            self._statuses.append((job.id, encode_record(
                RETRY, exc_type=outcome.exc_type, exc_message=outcome.exc_message,
                traceback=outcome.traceback, retries=retries, task=job.task, worker=self.name)))
        log.info("task %s[%s] will retry (%d) in %.1f s: %s", job.task, job.id, retries,
                 max((outcome.retry_at or 0) - time.time(), 0), outcome.exc_message)
        self.events.task("task-retried", job.id, job.task, retries=retries,
                         exception=outcome.exc_type, message=outcome.exc_message)

    def _store(self, task_id: str, record: bytes, job, task) -> None:
        if not (job.ignore_result or task.ignore_result):
            self._records.append((task_id, record))

    def _finish_revoked(self, delivery: Delivery, why: str) -> None:
        job = delivery.job
        self._store(job.id, encode_record(REVOKED, exc_message=why, retries=job.retries,
                                          task=job.task, worker=self.name), job, delivery.task)
        self.events.task("task-revoked", job.id, job.task, reason=why)
        if not delivery.acked:
            self._acks[delivery.stream].append(delivery.entry_id)
            delivery.acked = True
        log.info("task %s[%s] %s: not run", job.task, job.id, why)

    def _dead_letter(self, queue_name: str, raw: bytes, reason: str, stream: str,
                     entry_id: bytes) -> None:
        log.error("dead letter on queue %s (entry %s): %s", queue_name, _s(entry_id), reason)
        self._extra.append(lambda pipe: self.app.broker.dead_letter(pipe, queue_name, raw, reason))
        self._acks[stream].append(entry_id)

    # -- writing -----------------------------------------------------------------------
    def _flush(self, *, sync: bool = False, force_events: bool = False) -> None:
        """Hand what was gathered to the writer; write it here and now when nothing else
        runs (a thread hop less for the lone task's latency) or when ``sync``."""
        events = self.events.take(force=force_events, packed=False)
        if not (self._records or self._acks or self._extra or self._statuses or self._canvas
                or events is not None):
            return
        batch = WriteBatch(self._statuses, self._records, self._extra, self._acks, events,
                           self._canvas)
        self._statuses, self._records, self._extra, self._canvas = [], [], [], []
        self._acks = defaultdict(list)
        self._flush_due = None
        if sync or (not self.inflight and not self._writer.busy):
            self._writer.write(batch)
        else:
            self._writer.submit(batch)

    def _retry_sleep(self, delay: float) -> None:
        """Between write retries while Redis is away: on the loop's thread, a shutdown
        signal now is cold (nothing can be written until Redis is back, and unacked
        messages are delivered again anyway)."""
        if threading.current_thread() is not threading.main_thread():
            time.sleep(delay)
            return
        blocking, self._blocking_stop = self._blocking_stop, True
        try:
            time.sleep(delay)
        finally:
            self._blocking_stop = blocking

    # -- limits ------------------------------------------------------------------------
    def _fire_limits(self) -> None:
        if not len(self.deadlines):
            return
        for job_id, kind in self.deadlines.due():
            delivery = self.inflight.get(job_id)
            if delivery is None:
                continue
            pool = delivery.lane.pool
            try:
                if kind == limits.SOFT:
                    log.info("task %s[%s]: soft time limit (%.3g s)", delivery.job.task, job_id,
                             delivery.soft)
                    pool.interrupt(job_id)
                else:
                    log.warning("task %s[%s]: hard time limit (%.3g s), ending it",
                                delivery.job.task, job_id, delivery.hard)
                    with signals.masked():
                        pool.kill(job_id)
            except NotSupported as exc:
                log.warning("%s", exc)

    # -- housekeeping ------------------------------------------------------------------
    def _housekeeping(self) -> None:
        self._next_housekeeping = limits.now() + HOUSEKEEPING_INTERVAL
        self._housekeeping_rounds += 1
        queues = [q for lane in self.lanes for q in lane.queues]
        try:
            self.app.broker.move_due(queues)
            for lane in self.lanes:
                lane.resize()
            rounds = self._housekeeping_rounds
            if rounds % 8 == 0:
                self._snapshot = msgpack.packb(self.info(), use_bin_type=True)
            if rounds % max(int(self.lost_after * RECLAIM_SHARE / HOUSEKEEPING_INTERVAL),
                            1) == 0:
                self._reclaim()
            if rounds % 40 == 0:
                self.revoked = control.revoked_ids(self.app) | {
                    d for d in self.revoked if d in self.inflight}
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("housekeeping skipped: Redis unavailable (%s)", exc)

    def _reclaim(self) -> None:
        """Take over the pending messages of workers whose heartbeat has expired."""
        broker = self.app.broker
        alive = broker.alive_workers() | {self.name}
        for lane in self.lanes:
            if not lane.fetching:
                continue
            for stream, entries, deliveries in broker.claim_from_dead(
                    self.name, lane.queues, alive=alive):
                log.warning("reclaimed %d message(s) of a lost worker from %s",
                            len(entries), stream)
                lane._take(len(entries))
                self._on_batch(lane, [(stream, entries)], deliveries)

    def _take_back_own_pending(self) -> None:
        """Messages this worker name held when it last died come back first."""
        broker = self.app.broker
        for lane in self.lanes:
            for stream in lane.streams:
                last_id = "0"
                while True:
                    batch = broker.fetch(self.name, {stream: last_id}, count=500, block_ms=None)
                    entries = batch[0][1] if batch else []
                    if not entries:
                        break
                    last_id = entries[-1][0]
                    pending = broker.client.xpending_range(
                        stream, "engine", min=entries[0][0], max=last_id, count=len(entries),
                        consumername=self.name)
                    counts = {_s(p["message_id"]): int(p["times_delivered"]) for p in pending}
                    log.warning("taking back %d message(s) this worker held before a restart",
                                len(entries))
                    lane._take(len(entries))
                    self._on_batch(lane, [(stream, entries)], counts)

    # -- control commands ------------------------------------------------------------
    def _heartbeat_snapshot(self) -> bytes:
        # the loop refreshes it (pools are only ever called from the loop's thread)
        if not self._snapshot:
            self._snapshot = msgpack.packb(self.info(), use_bin_type=True)
        return self._snapshot

    def on_control(self, command: dict) -> None:
        """A broadcast command, on the loop. Commands addressed elsewhere are ignored."""
        dest = command.get("destination")
        if dest and self.name not in dest:
            return
        cmd = command.get("cmd")
        if cmd == "revoke":
            task_id = command.get("id")
            self.revoked.add(task_id)
            delivery = self.inflight.get(task_id)
            if delivery is not None and command.get("terminate"):
                # submitted but maybe not started (or its start notice not read yet): kill
                # now when the pool can end a job that waits, and again when it starts
                delivery.revoked = self._terminate(delivery)
            for lane in self.lanes:
                if isinstance(lane, IsolatedLane):
                    lane.pool.forward(command)
            control.reply(self, command, {"ok": f"revoked {task_id}"})
        elif cmd == "shutdown":
            control.reply(self, command, {"ok": "shutting down"})
            self._on_signal(signals.SHUTDOWN)
        else:
            handler = getattr(control, "handle", None)
            if handler is not None:
                handler(self, command)

    def _terminate(self, delivery: Delivery) -> bool:
        """End a revoked job where it runs; False when its pool cannot (solo)."""
        try:
            with signals.masked():
                delivery.lane.pool.kill(delivery.job.id)
        except NotSupported as exc:
            log.warning("cannot terminate %s: %s", delivery.job.id, exc)
            return False
        return True

    def _on_signal(self, intent: str) -> None:
        if intent == signals.SHUTDOWN:
            if self._shutdown is None and not self._stopping.is_set():
                log.info("warm shutdown: finishing running tasks (signal again for cold)")
                self._shutdown = "warm"
            else:
                self._shutdown = "cold"
                raise ColdShutdown()
        elif intent == signals.CHILD:
            self._child_exited = True
        elif intent == signals.INFO:
            log.info("stats: %s", self.info())

    # -- shutdown ----------------------------------------------------------------------
    def _give_back(self, lane: Lane, deliveries: list[Delivery]) -> None:
        by_stream: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)
        for d in deliveries:
            if not d.acked:
                by_stream[d.stream].append((d.entry_id, d.job.body))
        for stream, entries in by_stream.items():
            self.app.broker.requeue(stream, entries)
        if deliveries:
            log.info("gave back %d message(s) that never started", len(deliveries))

    def _warm_stop(self) -> None:
        self._stopping.set()
        for lane in self.lanes:
            lane.fetching = False
        for lane in self.lanes:
            lane.join_fetcher(FETCH_JOIN_TIMEOUT)
        # batches the fetchers delivered while stopping are given back with the buffers
        self._drain_inbox()
        for lane in self.lanes:
            self._give_back(lane, list(lane.buffer))
            lane.buffer.clear()
        self._blocking_stop = True
        for lane in self.lanes:
            never_started = lane.pool.stop(float(self.conf.worker_shutdown_timeout))
            returned = [self.inflight.pop(i) for i in never_started if i in self.inflight]
            self._give_back(lane, returned)
        self._blocking_stop = False
        self._drain_inbox()
        self._flush(sync=True)
        self._blocking_stop = True     # a signal while the writer drains: cold
        self._writer.drain()
        self._blocking_stop = False

    def _drain_inbox(self) -> None:
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            if type(item) is Outcome:
                self._on_outcome(item)
            elif isinstance(item[0], Lane):
                self._on_batch(item[0], item[1])
            elif item[0] == _START:
                self._on_job_start(item[1])

    def _close(self) -> None:
        self._stopping.set()
        if self._beat is not None:
            self._beat.shutdown()
        cold = self._shutdown == "cold" or self._shutdown is None
        for lane in self.lanes:
            lane.fetching = False
            if cold:
                try:
                    lane.pool.terminate()
                except Exception:
                    log.exception("pool of lane %s did not terminate cleanly", lane.name)
        if cold:
            try:
                self._drain_inbox()
                for lane in self.lanes:
                    self._give_back(lane, list(lane.buffer))
                    lane.buffer.clear()
                self._flush(sync=True)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.error("could not give back messages (%s): they are redelivered after "
                          "worker_lost_after", exc)
            if self.inflight:
                log.warning("cold shutdown: %d running task(s) will be delivered again",
                            len(self.inflight))
        if not cold:
            self._writer.drain()
        self._writer.stop()
        try:
            self.presence.beat(offline=True)
        except (redis.ConnectionError, redis.TimeoutError):
            pass
        signals.restore_defaults()
        log.info("worker %s stopped (%s)", self.name, self._shutdown or "error")

    # -- introspection -----------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "name": self.name, "host": socket.gethostname(), "pid": os.getpid(),
            "started": self.started_at, "active": len(self.inflight),
            **(self.presence.figures if self.presence else {}),
            "at": time.time(), "parent": self.parent,
            "lanes": [lane.info() if isinstance(lane, IsolatedLane) else
                      {"name": lane.name, "queues": lane.queues, "pool": lane.spec.pool,
                       "concurrency": lane.spec.concurrency, "buffered": len(lane.buffer),
                       "processed": lane.processed, "failed": lane.failed,
                       "pool_info": lane.pool.info()} for lane in self.lanes],
        }


#: seconds a warm shutdown waits for a fetch thread to return from its blocking read
FETCH_JOIN_TIMEOUT = 2.0


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value
