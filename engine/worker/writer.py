"""Write-behind for the supervisor: results, acks, retries and events go to Redis from here.

The loop hands over a ``WriteBatch`` of plain command tuples (``engine.worker.ledger``) and
goes on feeding the pools while this thread sends it as one pipeline on the ``Wire``
(``engine.wire``), so Redis round trips overlap with work. Batches are independent of one
another. When nothing else is running, the loop writes the batch itself (``write``) to save
a thread hop of latency.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

import redis

from engine.events import EventBuffer
from engine.worker.ledger import Ledger, WriteBatch
from engine.worker.pressure import Pressure, Throttled, is_oom

log = logging.getLogger("engine.worker")

#: seconds a result or ack may wait for others to share its round trip (only while other
#: tasks are still running: the last one is written at once)
WRITE_DELAY = 0.002
#: owed writes that are handed over without waiting
WRITE_MAX = 1000
#: batches waiting for the writer thread before the loop blocks until one is written
MAX_BACKLOG = 32
#: seconds between retries of a write batch while Redis is away (doubled up to the max)
RETRY_DELAY, RETRY_DELAY_MAX = 0.05, 2.0
#: error replies that pass (a replica promoted, a script or a load that ends, a cluster
#: that heals): the refused commands are sent again; any other error reply is final
_PASSING = ("BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS", "LOADING")
#: what a command's arguments may be (anything else cannot be packed: a bug upstream)
_ARGUMENT_TYPES = (bytes, str, int, float, memoryview)


def _passing(error: redis.ResponseError) -> bool:
    return (is_oom(error) or isinstance(error, redis.exceptions.ReadOnlyError)
            or str(error).startswith(_PASSING))


def _names(commands: list[tuple]) -> str:
    """``EVAL×1 XADD×2``: what a list of commands is, for a log line."""
    counts: dict[str, int] = {}
    for command in commands:
        name = str(command[0])
        counts[name] = counts.get(name, 0) + 1
    return " ".join(f"{name}×{n}" for name, n in counts.items())


class Writer:
    def __init__(self, app, *, events_stream: str, events_maxlen: int,
                 cancelled: Callable[[], bool], pack_events: Callable[[list], bytes],
                 sleep: Callable[[float], None] = time.sleep,
                 pressure: Pressure | None = None) -> None:
        self.app = app
        self.events_stream = events_stream
        self.events_maxlen = events_maxlen
        self.pack_events = pack_events
        self.cancelled = cancelled          #: True once a cold shutdown gives up on Redis
        self.sleep = sleep                  #: waits between retries (the supervisor's lets a
                                            #: signal end a wait on its own thread)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # batches submitted (only the submitting thread adds) and done (only the writer
        # thread adds): each counter has one writer, so the common submit takes no lock
        self._submitted = 0
        self._done = 0
        self._idle = threading.Condition()   # waited on only when full, or to drain
        self._waiting = 0                    # threads in such a wait (each re-checks every
                                             # 0.1 s, so a notify missed in a race is late,
                                             # never lost)
        self._io = threading.Lock()         # one pipeline on the wire at a time
        self._thread: threading.Thread | None = None
        self.written = 0
        #: raised while Redis refuses writes for memory (the fetchers read it too)
        self.pressure = pressure if pressure is not None else Pressure()
        self._outage_log = Throttled()
        self._error_log = Throttled()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="writer", daemon=True)
        self._thread.start()

    @property
    def _outstanding(self) -> int:
        return self._submitted - self._done

    @property
    def busy(self) -> bool:
        return self._submitted != self._done

    def offer(self, ledger: Ledger, events: EventBuffer, *, running: bool = False,
              sync: bool = False) -> None:
        """On the loop, every turn: take what ``ledger`` owes (with the events, when due)
        once nothing else runs (latency: written here, a thread hop less), enough has
        gathered, or the oldest has waited WRITE_DELAY (throughput: one round trip for
        many); ``sync`` writes everything here and now."""
        owed = len(ledger)
        if not sync:
            if owed:
                if running and owed < WRITE_MAX and \
                        time.monotonic() < ledger.deadline(WRITE_DELAY):
                    return
            elif not events.due():
                return
        batch = ledger.take(events.take(force=sync, packed=False))
        if batch is None:
            return
        if sync or (not running and not self.busy):
            self.write(batch)
        else:
            self.submit(batch)

    def submit(self, batch: WriteBatch) -> None:
        """Queue a batch for the writer thread (blocks only past MAX_BACKLOG)."""
        if self._submitted - self._done >= MAX_BACKLOG:
            with self._idle:
                self._waiting += 1
                try:
                    while self._submitted - self._done >= MAX_BACKLOG:
                        self._idle.wait(0.1)
                finally:
                    self._waiting -= 1
        self._submitted += 1
        self._queue.put(batch)

    def write(self, batch: WriteBatch) -> None:
        """Write a batch on the calling thread, now."""
        try:
            with self._io:
                self._send(batch)
        except Exception:
            self._abandoned(batch)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted batch is written; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            self._waiting += 1
            try:
                while self._outstanding:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._idle.wait(0.1 if left is None else min(left, 0.1))
            finally:
                self._waiting -= 1
        return True

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5)

    def _loop(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                with self._io:
                    self._send(batch)
            except Exception:
                self._abandoned(batch)
            self._done += 1
            if self._waiting:
                with self._idle:
                    self._idle.notify_all()

    def _send(self, batch: WriteBatch) -> None:
        """One pipeline: results (and statuses) first, then the batch's other commands
        (retries, dead letters, requeues, successors), then acks and events: a crash between
        them re-runs a task, never loses a result (with other commands, or while Redis
        refuses writes, the acks go in a second round trip once the rest is in). Every
        command may be sent twice (a reply lost with the connection): results replace, acks
        and deletes are idempotent, retries wait as zset members; only events, dead letters
        and requeued copies may repeat."""
        app = self.app
        backend = app.backend
        commands = backend.write_commands(batch.records, batch.statuses)
        if commands and backend.client is not app.client:
            self._until_written(backend.wire, commands)   # a result backend of its own
            commands = []
        commands += batch.commands
        tail = app.broker.ack_commands(batch.acks)
        if batch.events is not None:
            tail.append(("XADD", self.events_stream, "MAXLEN", "~", self.events_maxlen,
                         "*", "b", self.pack_events(batch.events)))
        wire = app.broker.wire
        if batch.canvas:
            commands = self._canvas(wire, commands, batch.canvas)
        if (batch.commands or batch.canvas or self.pressure.refusing) and commands:
            # Redis out of memory refuses XADD, ZADD and SET but takes XACK: an ack must not
            # go through for a retry, dead letter or parked copy it refused (a crash then
            # would lose the message), so those first, the acks once they are in. Batches
            # of results and acks alone keep one round trip: the results script's first
            # write is a DEL, which Redis takes even then, so it is never refused.
            self._until_written(wire, commands)
            self._until_written(wire, tail)
        else:
            commands += tail
            self._until_written(wire, commands)
        self.written += 1

    def _canvas(self, wire, commands: list[tuple], owed: list) -> list[tuple]:
        """Canvas steps' successors go after the results (``engine.canvas.worker``). Chord
        members take one round trip more: the results, sends and chord counts are written
        now, and what the counts say (the chord's body, or its failure) is returned to go
        before the acks, so that no member is acked before its chord's body is sent."""
        sends = [command for step in owed for command in step.sends]
        steps = [step.chord for step in owed if step.chord is not None]
        if not steps:
            return commands + sends
        from engine.canvas.worker import after_chord
        replies = self._until_written(wire, commands + sends + [s.command for s in steps])
        later = [after_chord(self.app, step, reply)
                 for step, reply in zip(steps, replies[-len(steps):])]
        records = self.app.backend.write_commands(
            [record for step in later for record in step.records], [])
        return records + [command for step in later for command in step.sends]

    def _until_written(self, wire, commands: list[tuple]) -> list:
        """Send ``commands`` until Redis has taken each of them, or a cold shutdown gives
        up. A dropped connection resends them all (each may run twice: see ``_send``); a
        command Redis refuses for now (out of memory, a read-only replica, a busy script)
        is sent again alone, with backoff, while those it took stay taken; one it refuses
        for good (a wrong type, a bug) is logged and not sent again."""
        delay = RETRY_DELAY
        found: list = [None] * len(commands)   # each command's last reply
        pending = list(range(len(commands)))
        refused_before = False
        while True:
            try:
                replies = wire.pipeline([commands[i] for i in pending], retry=False,
                                        raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if self.cancelled():
                    log.error("dropping a write batch during cold shutdown: %s", exc)
                    return found
                self._outage_log.warning("Redis unavailable (%s); retrying the write batch "
                                         "(%d command(s)), backing off up to %.1f s", exc,
                                         len(pending), RETRY_DELAY_MAX)
                self.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY_MAX)
                continue
            except redis.DataError as exc:
                # nothing was sent: a command carries an argument no command can (a bug
                # upstream); drop that one, send the others
                packable = self._packable([commands[i] for i in pending], exc)
                pending = [i for i in pending if commands[i] in packable]
                continue
            again: list[int] = []
            first = None
            for index, reply in zip(pending, replies):
                found[index] = reply
                if isinstance(reply, redis.ResponseError):
                    if _passing(reply):
                        again.append(index)
                        first = first or reply
                    else:
                        self._error_log.warning("Redis refused %s for good (%s): not sent "
                                                "again", commands[index][0], reply)
            if not again:
                if refused_before:
                    self.pressure.owed = 0
                    self.pressure.accepted()
                return found
            if self.cancelled():
                log.error("dropping %s (refused: %s) during cold shutdown",
                          _names([commands[i] for i in again]), first)
                return found
            refused_before = True
            self.pressure.owed = len(again)
            detail = (f"writer: {_names([commands[i] for i in again])} of {len(pending)} "
                      f"command(s) refused, the "
                      f"other {len(pending) - len(again)} went through; {first}")
            if is_oom(first):
                self.pressure.refused(detail)
            else:
                self._outage_log.warning("Redis refuses writes for now (%s)", detail)
            pending = again
            self.sleep(delay)
            delay = min(delay * 2, RETRY_DELAY_MAX)

    def _packable(self, commands: list[tuple], exc: Exception) -> list[tuple]:
        keep = [c for c in commands if all(
            isinstance(a, _ARGUMENT_TYPES) and not isinstance(a, bool) for a in c)]
        dropped = [c for c in commands if c not in keep] if len(keep) < len(commands) else []
        if not dropped:   # not an argument we can name: nothing can be sent
            log.error("a write batch cannot be packed (%s): abandoned", exc)
            return []
        log.error("dropping %s from a write batch: an argument cannot be sent (%s)",
                  _names(dropped), exc)
        return keep

    def _abandoned(self, batch: WriteBatch) -> None:
        log.exception("a write batch of %d item(s) failed with an unexpected error and was "
                      "abandoned: its results and acks may not be in Redis (unacked messages "
                      "stay pending on this worker until it restarts)", len(batch))
