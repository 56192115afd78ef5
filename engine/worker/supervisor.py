"""The worker supervisor behind ``engine run``: one loop that drives one pool per lane.

One thread (the main one) owns every pool and every decision. Each turn it takes what
reached its inbox (fetched batches, outcomes, start notices, signals, control commands) and
hands each item to one ``handle_*`` method, as gunicorn's arbiter does; then it feeds the
pools while they have free slots, hands what it owes Redis (``ledger``) to the writer
thread, fires time limits (``engine.limits``), maintains the pools and, every
HOUSEKEEPING_INTERVAL, moves due delayed messages and reclaims those of lost workers.
Helper threads fetch (one per lane), write (``writer``) and keep the worker's presence
(heartbeat and control channel); none of them calls a pool.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import queue
import socket
import threading
import time
from typing import Any, Callable

import redis

from engine import control, limits
from engine.broker import Broker
from engine.connection import wait_for_app
from engine.events import EventBuffer
from engine.exceptions import ConfigurationError
from engine.flow import Limiter
from engine.results import STARTED, encode_record
from engine.worker import commands, held, hooks, ossignals
from engine.worker.inbox import CONTROL, SIGNAL, START, WakeInbox, make_inbox, take
from engine.worker.intake import Intake
from engine.worker.isolation import ProcessLane, control_channel, wants_isolation
from engine.worker.lanes import Delivery, Lane, PoolLane, read_levels
from engine.worker.lanespec import LaneSpec
from engine.worker.ledger import Ledger
from engine.worker.ownership import Ownership
from engine.worker.presence import RECLAIM_SHARE, Presence, default_name, process_figures
from engine.worker.pressure import Pressure
from engine.worker.recovery import Recovery
from engine.worker.runner import TaskRunner
from engine.worker.settle import Settler
from engine.worker.snapshot import WorkerSnapshot
from engine.worker.writer import WRITE_DELAY, Writer
from pools import resolve
from pools.base import Outcome

log = logging.getLogger("engine.worker")

#: seconds between housekeeping rounds (delayed moves, reclaim, revocation sync)
HOUSEKEEPING_INTERVAL = 0.25
#: longest the loop sleeps with nothing to do (pools get ``maintain`` at least this often)
MAX_IDLE = 0.1
#: items taken from the inbox per loop turn
MAX_BATCH = 500
#: seconds between ``Pool.maintain`` calls (a SIGCHLD brings the next one forward)
MAINTAIN_INTERVAL = 0.02


class ColdShutdown(BaseException):
    """A cold shutdown: SIGQUIT, or a second signal (raised by the wake-up itself while the
    loop blocks, in ``Pool.stop`` or a write retry)."""


def _metrics(conf: Any, parent: str | None) -> Any:
    """The worker's metrics with a metrics port (not in a lane process: its supervisor
    counts); prometheus_client is imported only then."""
    if conf.worker_metrics_port is None or parent is not None:
        return None
    from engine.worker.metrics import WorkerMetrics
    return WorkerMetrics()


def _kind(item: Any) -> str:
    """What an inbox item is, for a log line."""
    if type(item) is Outcome:
        return f"the outcome of {item.job_id}"
    return f"a fetched batch of lane {item[0].name}" if isinstance(item[0], PoolLane) \
        else f"a {item[0]} item"


class Supervisor:
    def __init__(self, app, lanes: list[LaneSpec], *, name: str | None = None,
                 beat: bool = False, parent: str | None = None) -> None:
        if not lanes:
            raise ConfigurationError("a worker needs at least one lane")
        self.app = app
        self.conf = conf = app.conf
        self.name = (name or default_name()).replace("%h", socket.gethostname())
        self.specs, self.beat, self.parent = lanes, beat, parent   # parent: of a lane process
        self.keys = app.broker.keys
        self.inbox: Any = make_inbox()
        self._polled: list = []     # pools that publish to the inbox's waker (Pool.poll)
        self.inflight: dict[str, Delivery] = {}
        self.aside: dict[str, list[Delivery]] = {}   # copies of a running id, waiting for it
        self.deadlines = limits.Deadlines()
        self.revoked: set[str] = set()
        self.lanes: list[Lane] = []
        self.runner = TaskRunner(app, self.name)
        self.events = EventBuffer(self.keys.events, self.name,
                                  enabled=bool(conf.worker_send_events),
                                  maxlen=int(conf.events_maxlen))
        self.ledger = Ledger(app.broker)
        self.limiter = Limiter(app, self.name)
        self.settler = Settler(app, self.name, self.ledger, self.events, limiter=self.limiter,
                               max_deliveries=int(conf.task_max_deliveries))
        self.intake = Intake(app, self.name, self.ledger, self.events, limiter=self.limiter,
                             revoked=self.settler.revoked)
        self.recovery = Recovery(app.broker, self.name, self.intake.accept_batch)
        self._acks_late, self._track_started = bool(conf.task_acks_late), bool(conf.task_track_started)
        self.lost_after = float(conf.worker_lost_after)
        self.started_at = time.time()
        self._stopping = threading.Event()     # fetch and helper threads end
        self._shutdown: str | None = None      # None, "warm" or "cold"
        self._blocking_stop = False
        self._child_exited = False
        self._next_maintain = self._next_housekeeping = 0.0
        self._housekeeping_rounds = 0
        self._beat = None                       # engine.beat.Beat, with -B
        self.pressure = Pressure()              # Redis refusing writes (out of memory)
        self.ownership = Ownership(app.broker, self.name, lost_after=self.lost_after,
                                   inflight=self.inflight)
        self.expiring = held.Expiring(self)     # submitted with an expiry, not started yet
        self.presence = Presence(
            app, self.name, lost_after=self.lost_after, interval=float(conf.worker_heartbeat),
            events=self.events,
            active=lambda: commands.running(self),
            # a lane process hears only what its supervisor forwards to it
            channel=(self.keys.control if parent is None
                     else control_channel(self.keys, self.name)),
            deliver=lambda command: self.inbox.put((CONTROL, command)), stopping=self._stopping,
            pressure=self.pressure)
        self._writer = Writer(app, events_stream=self.keys.events,
                              events_maxlen=int(conf.events_maxlen),
                              cancelled=lambda: self._shutdown == "cold",
                              pack_events=self.events.pack, sleep=self._retry_sleep,
                              pressure=self.pressure)
        # engine.worker.metrics.WorkerMetrics with --metrics-port, else None
        self.metrics = self.settler.metrics = _metrics(conf, parent)
        self._handlers: dict[str, Callable[[Any], None]] = {
            START: self.handle_start, SIGNAL: self.handle_signal, CONTROL: self.handle_control}

    # -- life cycle --------------------------------------------------------------------
    def run(self, on_ready: Callable[["Supervisor"], None] | None = None) -> int:
        """Start, loop until a shutdown, stop as asked; ``on_ready`` once every lane runs."""
        self.start(on_ready)
        try:
            while self._shutdown is None:
                self.tick()
            if self._shutdown == "warm":
                self._warm_stop()
        except ColdShutdown:
            self._shutdown = "cold"
        finally:
            self._close()
        return ossignals.EXIT_OK

    def start(self, on_ready: Callable[["Supervisor"], None] | None = None) -> None:
        """Check the name, build the lanes, go online, start every lane, then the helpers.
        Online comes before any lane starts: a survivor must not reclaim what this worker
        name takes back (the claim script spares a live heartbeat)."""
        wait_for_app(self.app)
        self.presence.check_name()
        self.presence.figures, self.revoked = process_figures(), control.revoked_ids(self.app)
        self.limiter.start()
        for spec in self.specs:
            self.app.broker.ensure_groups(spec.queues)
            self.lanes.append(self._build_lane(spec))
        ossignals.install(self._wake)
        with ossignals.masked():   # threads started here never take the supervisor's signals
            if self.metrics is not None:   # first: a port in use fails before anything runs
                from engine.worker.metrics import serve
                serve(self, self.metrics, self.conf.worker_metrics_port,
                      self.conf.worker_metrics_address)
            self.presence.snapshot = self.info(lanes=False).to_wire()
            self.presence.beat(online=True)
            read_levels(self.app.broker, self.lanes)
            for lane in self.lanes:
                lane.start(self.recovery.take_back)
            self.presence.snapshot = self.info().to_wire()   # now with its lanes: ready
            self.presence.beat()
            self._writer.start()
            self.presence.start()
            if self.beat:
                from engine.beat import Beat   # only with -B
                self._beat = Beat(self.app)
                self._beat.start_thread()
        # what start-up built (modules, the app, the lanes) lives as long as the worker: out
        # of the collector's sight, a full collection no longer walks it (a few µs a task)
        gc.freeze()
        if on_ready is not None:
            on_ready(self)
        log.info("worker %s ready: %s", self.name, "; ".join(
            f"{lane.name}={lane.spec.pool}:{lane.spec.concurrency}" for lane in self.lanes))
        hooks.worker_ready(self)

    def _build_lane(self, spec: LaneSpec) -> Lane:
        pool_cls = resolve(spec.pool)
        if wants_isolation(spec, pool_cls):
            return ProcessLane(spec, pool_cls, app=self.app, supervisor_name=self.name)
        # a pool that queues locally (prefork's ring, threads, asyncio) holds the prefetch
        options = dataclasses.replace(spec.options, prefetch=spec.prefetch)
        polled = getattr(pool_cls, "attach_waker", None) is not None and \
            isinstance(self.inbox, WakeInbox)
        if polled:
            # it reports from this thread only, inside the loop's own calls (poll, kill,
            # maintain, stop): its items need no wake-up, the loop takes them next
            put = self.inbox.put_here
            pool = pool_cls(spec.concurrency, put, runner=self.runner,
                            on_start=lambda job_id: put((START, job_id)), options=options)
            pool.attach_waker(self.inbox.waker)
            self._polled.append(pool)
        else:
            pool = pool_cls(spec.concurrency, self.inbox.put, runner=self.runner,
                            on_start=self._on_start, options=options)
        # fetch threads read on clients of their own, off the connections used for acks
        make_broker = lambda: Broker(self.app.new_client(), prefix=self.keys.prefix)  # noqa: E731
        return PoolLane(spec, pool, self.keys, make_broker=make_broker,
                        consumer=self.name, deliver=self.inbox.put, stopping=self._stopping,
                        paused=lambda: self.limiter.paused, pressure=self.pressure)

    # -- the loop ----------------------------------------------------------------------
    def _wake(self, intent: str) -> None:
        """Signal handlers land here (main thread, between bytecodes)."""
        if intent in (ossignals.SHUTDOWN, ossignals.COLD) and (
                self._blocking_stop or self._shutdown is not None):
            self._shutdown = "cold"
            raise ColdShutdown()
        self.inbox.put((SIGNAL, intent))

    def _on_start(self, job_id: str) -> None:
        self.inbox.put((START, job_id))

    def tick(self) -> None:
        """One loop turn: wait for work or the next deadline, handle it, feed, write."""
        now = limits.now()
        timeout = MAX_IDLE
        next_deadline = self.deadlines.next_deadline()
        if next_deadline is not None:
            timeout = min(timeout, max(next_deadline - now, 0.0))
        write_due = self.ledger.deadline(WRITE_DELAY)
        if write_due is not None:
            timeout = min(timeout, max(write_due - now, 0.0))
        for item in take(self.inbox, timeout, self._polled, MAX_BATCH):
            try:
                self._handle(item)
            except Exception:   # one item's bug must not end the worker (its own code
                # settles what it can: Settler, Intake); this is the last line of defence
                log.exception("worker loop: handling %s failed", _kind(item))
        for lane in self.lanes:
            lane.settle()
        if self._shutdown is None:
            self.ownership.check(self.lanes)   # after a pause: is the buffer still ours?
            self.expiring.check()              # what expired waiting in a pool's queue
            # feed before writing: the pools work while this thread talks to Redis
            for lane in self.lanes:
                lane.feed(self._admit)
        self._writer.offer(self.ledger, self.events, running=bool(self.inflight))
        self._fire_limits()
        self._maintain()
        if limits.now() >= self._next_housekeeping:
            self._housekeeping()

    def _handle(self, item: Any) -> None:
        if type(item) is Outcome:
            self.handle_outcome(item)
        elif isinstance(item[0], PoolLane):
            self.intake.accept_batch(item[0], item[1])
        else:
            self._handlers[item[0]](item[1])

    # -- intents -----------------------------------------------------------------------
    def handle_start(self, job_id: str) -> None:
        """A pool began a job: its time limits start now."""
        delivery = self.inflight.get(job_id)
        if delivery is None or delivery.started is not None:
            return
        delivery.started = limits.now()
        if delivery.revoked:   # revoke(terminate=True) came before it started
            delivery.lane.end(delivery.job.id)
            return
        self._began(delivery)

    def _began(self, delivery: Delivery) -> None:
        """What a start owes: the job's clocks, its event, its STARTED status."""
        job_id = delivery.job.id
        if delivery.soft is not None or delivery.hard is not None:
            self.deadlines.add(job_id, soft=delivery.soft, hard=delivery.hard,
                               start=delivery.started)
        self.events.started(job_id, delivery.job.task)
        if self._track_started and not delivery.job.ignore_result:
            job = delivery.job
            self.ledger.status(job_id, encode_record(STARTED, task=job.task, worker=self.name,
                                                     retries=job.retries))

    def handle_outcome(self, outcome: Outcome) -> None:
        delivery = self.inflight.pop(outcome.job_id, None)
        if delivery is None:
            return   # a late outcome of a job already reported (a pool broke its promise)
        if outcome.began and delivery.started is None:
            # its start came with its end (Outcome.began): what a start owes; its clocks end below
            delivery.started = limits.now()
            if not delivery.revoked:
                self._began(delivery)
        self.deadlines.cancel(outcome.job_id)
        lane = delivery.lane
        if self.settler.settle(delivery, outcome):
            lane.returned += 1
        else:
            lane.buffer.appendleft(delivery)     # its process died: run it again
        for waiting in reversed(self.aside.pop(outcome.job_id, ())):
            waiting.lane.buffer.appendleft(waiting)   # its turn now, in its own lane

    def handle_signal(self, intent: str) -> None:
        if intent in (ossignals.SHUTDOWN, ossignals.COLD):   # COLD: SIGQUIT, at once
            if intent == ossignals.SHUTDOWN and self._shutdown is None and not self._stopping.is_set():
                log.info("warm shutdown: finishing running tasks (signal again for cold)")
                self._shutdown = "warm"
            else:
                self._shutdown = "cold"
                raise ColdShutdown()
        elif intent == ossignals.CHILD:
            self._child_exited = True
        elif intent == ossignals.INFO:
            log.info("stats: %s", self.info())

    def handle_control(self, command: dict) -> None:
        commands.handle(self, command)

    def request_shutdown(self) -> None:
        """As a signal would, on the next turn (a control command's reply goes out first)."""
        self.inbox.put((SIGNAL, ossignals.SHUTDOWN))

    # -- feeding -----------------------------------------------------------------------
    def _admit(self, delivery: Delivery) -> bool:
        """The supervisor's word on a delivery its lane is about to submit."""
        job = delivery.job
        if job.id in self.inflight:
            # a second message with the id of a running task (a redelivery or a resend):
            # it waits aside until that one ends, or the pool and the inflight table would
            # mix up their outcomes; the lane goes on with the others
            self.aside.setdefault(job.id, []).append(delivery)
            return False
        expired = delivery.expires is not None and delivery.expires <= time.time()
        if expired or job.id in self.revoked:   # expiry: at fetch, and again here
            self.settler.revoked(delivery, "expired" if expired else "revoked")
            delivery.lane.returned += 1
            return False
        acks_late = delivery.task.acks_late
        if not (self._acks_late if acks_late is None else acks_late):
            self.ledger.ack(delivery.stream, delivery.entry_id)
            delivery.acked = True
        self.expiring.add(delivery)
        self.inflight[job.id] = delivery
        return True

    def _maintain(self) -> None:
        """Lanes get ``maintain`` every MAINTAIN_INTERVAL, and at once after a SIGCHLD."""
        now = limits.now()
        due = now >= self._next_maintain or self._child_exited
        for lane in self.lanes:
            lane.maintain(due)
        if due:
            self._child_exited = False
            self._next_maintain = now + MAINTAIN_INTERVAL

    # -- writing -----------------------------------------------------------------------
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
            if delivery is not None:
                delivery.lane.fire_limit(delivery, kind, self.name)

    # -- housekeeping ------------------------------------------------------------------
    def _housekeeping(self) -> None:
        self._next_housekeeping = limits.now() + HOUSEKEEPING_INTERVAL
        self._housekeeping_rounds += 1
        rounds = self._housekeeping_rounds
        try:
            self.app.broker.move_due([q for lane in self.lanes for q in lane.queues])
            for lane in self.lanes:
                lane.resize()
            if rounds % 4 == 0:
                read_levels(self.app.broker, self.lanes)
            if rounds % 8 == 0:
                # the heartbeat thread publishes it: only the loop may call pools
                self.presence.snapshot = self.info().to_wire()
            if rounds % max(int(self.lost_after * RECLAIM_SHARE / HOUSEKEEPING_INTERVAL),
                            1) == 0:
                self.recovery.reclaim(self.lanes, forget=self.limiter.forget_lost)
            if rounds % 40 == 0:
                self.limiter.refresh()
                self.revoked = held.learn_revoked(self, control.revoked_ids(self.app),
                                                  forget_ended=True)
        except redis.RedisError as exc:   # whatever Redis says, the loop goes on
            self.pressure.skipped("housekeeping", exc)

    # -- shutdown ----------------------------------------------------------------------
    def _warm_stop(self) -> None:
        """Warm: every lane stops fetching at once (lane processes start draining); what
        the fetchers delivered meanwhile is taken in, then every buffer goes back to its
        queue; each pool finishes what runs, and what it never started goes back too; the
        outcomes are settled and everything owed is written before the writer drains."""
        self._stopping.set()
        for lane in self.lanes:
            lane.stop_fetching()
        self._drain_inbox()
        self.recovery.give_back(self._take_buffered())
        self._blocking_stop = True
        for lane in self.lanes:
            never_started = lane.stop(float(self.conf.worker_shutdown_timeout))
            unstarted = [self.inflight.pop(i) for i in never_started if i in self.inflight]
            self.recovery.give_back(self.settler.unhold(unstarted))
        self._blocking_stop = False
        self._drain_inbox()
        self._writer.offer(self.ledger, self.events, sync=True)
        self._blocking_stop = True     # a signal while the writer drains: cold
        self._writer.drain()
        self._blocking_stop = False

    def _take_buffered(self) -> list[Delivery]:
        """Every fetched delivery that never reached a pool: lane buffers and copies aside."""
        deliveries = [d for lane in self.lanes for d in lane.give_back()]
        deliveries += [d for copies in self.aside.values() for d in copies]
        self.aside.clear()
        return self.settler.unhold(deliveries)

    def _drain_inbox(self) -> None:
        """Take in what is left: batches, outcomes and start notices (not commands)."""
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            if type(item) is Outcome or isinstance(item[0], PoolLane) or item[0] == START:
                self._handle(item)

    def _close(self) -> None:
        """Cold (or after an error): pools end now, buffers go back, what is owed is
        written if Redis takes it; running messages are delivered again after
        ``worker_lost_after``. Then the heartbeat is dropped."""
        self._stopping.set()
        if self._beat is not None:
            self._beat.shutdown()
        cold = self._shutdown == "cold" or self._shutdown is None
        if cold:
            for lane in self.lanes:
                try:
                    lane.terminate()
                except Exception:
                    log.exception("lane %s did not terminate cleanly", lane.name)
            try:
                self._drain_inbox()
                self.recovery.give_back(self._take_buffered())
                self._writer.offer(self.ledger, self.events, sync=True)
            except redis.RedisError as exc:
                log.error("could not give back messages (%s): they are redelivered after "
                          "worker_lost_after", exc)
            if self.inflight:
                log.warning("cold shutdown: %d running task(s) will be delivered again",
                            len(self.inflight))
        else:
            self._writer.drain()
        self._writer.stop()
        try:
            self.presence.beat(offline=True)
        except redis.RedisError:
            pass
        ossignals.restore_defaults()
        log.info("worker %s stopped (%s)", self.name, self._shutdown or "error")

    # -- introspection -----------------------------------------------------------------
    def info(self, *, lanes: bool = True) -> WorkerSnapshot:
        figures = self.presence.figures
        return WorkerSnapshot(
            name=self.name, host=socket.gethostname(), pid=os.getpid(),
            started=self.started_at, at=time.time(), active=commands.running(self),
            load=figures["load"], rss=figures["rss"], cpu=figures["cpu"], parent=self.parent,
            lanes=[lane.info() for lane in self.lanes] if lanes else [])
