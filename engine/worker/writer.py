"""Write-behind for the supervisor: results, acks, retries and events go to Redis from here.

The loop hands over a ``WriteBatch`` (plain lists, no Redis objects) and goes on feeding the
pools while this thread builds and sends the pipeline (on the ``Wire``: see engine.wire), so Redis round trips overlap with
work. Within a batch, results are written before acks (a crash between them re-runs a task,
never loses a result); batches are independent of one another. When nothing else is
running, the loop writes the batch itself (``write``) to save a thread hop of latency.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import redis

log = logging.getLogger("engine.worker")

#: batches waiting for the writer thread before the loop blocks until one is written
MAX_BACKLOG = 32
#: seconds between retries of a write batch while Redis is away (doubled up to the max)
RETRY_DELAY, RETRY_DELAY_MAX = 0.05, 2.0


@dataclass(slots=True)
class WriteBatch:
    statuses: list[tuple[str, bytes]] = field(default_factory=list)
    records: list[tuple[str, bytes]] = field(default_factory=list)
    extras: list[Callable[[Any], None]] = field(default_factory=list)
    acks: dict[str, list[bytes]] = field(default_factory=dict)
    events: list | None = None      #: EventBuffer.take(packed=False), packed here
    #: what canvas steps owe (``engine.canvas.worker.Owed``): sends and chord counts,
    #: written after the records and before the acks
    canvas: list = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.statuses) + len(self.records) + len(self.extras)
                + sum(len(ids) for ids in self.acks.values()) + (self.events is not None)
                + len(self.canvas))


class Writer:
    def __init__(self, app, *, events_stream: str, events_maxlen: int,
                 cancelled: Callable[[], bool], pack_events: Callable[[list], bytes],
                 sleep: Callable[[float], None] = time.sleep) -> None:
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

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="writer", daemon=True)
        self._thread.start()

    @property
    def _outstanding(self) -> int:
        return self._submitted - self._done

    @property
    def busy(self) -> bool:
        return self._submitted != self._done

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
        with self._io:
            self._send(batch)

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
                log.exception("a write batch failed and was dropped (its messages will be "
                              "delivered again)")
            self._done += 1
            if self._waiting:
                with self._idle:
                    self._idle.notify_all()

    def _send(self, batch: WriteBatch) -> None:
        """Results (and statuses) first, then retries, dead letters and requeues, then canvas
        successors, then acks and events: a crash between them re-runs a task, never loses
        a result or a successor. Chord members take one round trip more: their count is
        written, and only then the chord's body (when the count says so) and the acks."""
        app = self.app
        results = self._results(batch.records, batch.statuses)
        tail = app.broker.ack_commands(batch.acks)
        if batch.events is not None:
            tail.append(("XADD", self.events_stream, "MAXLEN", "~", self.events_maxlen,
                         "*", "b", self.pack_events(batch.events)))
        if not batch.canvas:
            self._run(results, batch.extras, tail)
            self.written += 1
            return
        sends = [command for owed in batch.canvas for command in owed.sends]
        steps = [owed.chord for owed in batch.canvas if owed.chord is not None]
        if steps:
            from engine.canvas.worker import after_chord
            replies = self._run(results, batch.extras, sends + [s.command for s in steps])
            later = [after_chord(app, step, reply)
                     for step, reply in zip(steps, replies[-len(steps):])]
            records = self._results([r for owed in later for r in owed.records], [])
            self._run(records, [], [c for owed in later for c in owed.sends] + tail)
        else:
            self._run(results, batch.extras, sends + tail)
        self.written += 1

    def _results(self, records: list, statuses: list) -> list[tuple]:
        """The commands storing records and statuses; sent here at once when the result
        backend is a Redis of its own (then none are returned)."""
        backend = self.app.backend
        commands = backend.write_commands(records, statuses)
        if commands and backend.client is not self.app.client:
            self._execute_raw(backend.wire, commands)
            return []
        return commands

    def _run(self, head: list[tuple], extras: list, tail: list[tuple]) -> list:
        """``head``, the extras, then ``tail`` in one pipeline; their replies."""
        if extras:
            # the rare extras are written against a redis-py pipeline: build one for all
            pipe = self.app.client.pipeline(transaction=False)
            for command in head:
                pipe.execute_command(*command)
            for extra in extras:
                extra(pipe)
            for command in tail:
                pipe.execute_command(*command)
            return self._execute(pipe)
        return self._execute_raw(self.app.broker.wire, head + tail)

    def _execute_raw(self, wire, commands: list[tuple]) -> list:
        """``_execute`` for a Wire: the same retries, the same idempotence."""
        if not commands:
            return []
        return self._until_written(lambda: wire.pipeline(commands, retry=False))

    def _execute(self, pipe) -> list:
        """Run a pipeline, riding out a Redis restart: retry with backoff until it goes
        through or a cold shutdown gives up. Every write in it may be sent twice (a reply
        lost with the connection): results replace, acks and deletes are idempotent, retries
        wait as zset members; only events, dead letters and Reject(requeue=True) copies may
        repeat."""
        # redis-py empties the pipeline whatever the outcome: keep the commands to resend,
        # and any registered scripts they call (a restarted Redis may have lost its script
        # cache, and the pipeline loads only the scripts it knows of)
        commands, scripts = list(pipe.command_stack), set(pipe.scripts)

        def send() -> list:
            pipe.command_stack, pipe.scripts = list(commands), set(scripts)
            return pipe.execute()
        return self._until_written(send)

    def _until_written(self, send: Callable[[], Any]) -> Any:
        """Call ``send`` until it goes through, backing off while Redis is away, or give
        up when a cold shutdown says so."""
        delay = RETRY_DELAY
        while True:
            try:
                return send()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if self.cancelled():
                    log.error("dropping a write batch during cold shutdown: %s", exc)
                    return []
                log.warning("Redis unavailable (%s); retrying the write batch in %.2f s",
                            exc, delay)
                self.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY_MAX)
