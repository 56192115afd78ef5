"""Events: what workers tell the monitor, batched into a capped Redis stream.

Stream ``P:events``: one entry per flush of a worker, field ``b`` holding msgpack, so that a
busy worker pays one XADD per batch, not per event. A batch is either a map or an array of
event maps (the heartbeat thread's single events). The map is compact (the worker once, no
repeated keys)::

    {"w": worker,
     "e": [[type, ts, id, task, extra], ...],            # one event each
     "t": [[id, task, queue, retries, m, received, started, succeeded, runtime], ...]}

A ``t`` item is a whole short life: a task received, started (``started`` is nil when no
start was seen) and succeeded within one flush, its three events in one flat row; ``m`` is
the message (nil for one above PLAIN_REPR_BODY bytes, whose received event is an ``e`` item).
``unpack`` turns every form into event maps, all of a batch in the order they happened:
``type``, ``ts``, ``worker``, and for task events ``id`` and ``task``. ``task-received``
carries ``args`` and ``kwargs`` as ``repr`` text of ARGS_LIMIT characters at most
(``docs/wire.md``).
"""

from __future__ import annotations

import reprlib
import time
from typing import Any, Iterator

import msgpack

from engine import message

TASK_EVENTS = ("task-received", "task-started", "task-succeeded", "task-failed",
               "task-retried", "task-revoked")
WORKER_EVENTS = ("worker-online", "worker-heartbeat", "worker-offline")


#: seconds events may wait for company before they are written (the monitor doesn't mind)
FLUSH_DELAY = 0.1
#: events that are written at once, whatever their age
FLUSH_MAX = 2000
#: characters of a received event's ``args`` and ``kwargs`` text, each at most
ARGS_LIMIT = 1024
#: message bytes up to which a received event carries the message itself, for its readers
#: to show (a plain repr of its arguments is cheap there: each msgpack byte makes a few
#: characters at most); a longer message's arguments go through the bounded ``_ARGS_REPR``
PLAIN_REPR_BODY = 2048

#: bounds the work of one repr, whatever the arguments (a million-item list costs as
#: little as ten): only about what fits ARGS_LIMIT is ever looked at
_ARGS_REPR = reprlib.Repr()
_ARGS_REPR.maxlevel, _ARGS_REPR.maxstring, _ARGS_REPR.maxother = 4, 400, 200
_ARGS_REPR.maxlist = _ARGS_REPR.maxtuple = _ARGS_REPR.maxdict = _ARGS_REPR.maxset = 30


class _Received:
    """The extra fields of a large message's ``task-received`` event, kept as the job until
    the batch is packed (on the writer's thread, off the supervisor's loop): then
    ``fields`` turns the arguments into capped text, in bounded time."""

    __slots__ = ("job", "queue")

    def __init__(self, job: Any, queue: str) -> None:
        self.job = job
        self.queue = queue

    def fields(self) -> dict[str, Any]:
        job = self.job
        return {"queue": self.queue, "retries": job.retries, "args": shown(job.args),
                "kwargs": shown(job.kwargs)}


def _show_arguments(event: dict[str, Any]) -> None:
    """A small message's received event carries the message itself (``m``: bytes the
    worker already holds, copied by msgpack in C, so the event costs the worker nothing
    more); readers get its arguments as text, like a large message's."""
    try:
        body = message.loads(event.pop("m"))
        args, kwargs = body["args"], body["kwargs"]
    except Exception:   # not the worker's writing: show that, keep the event
        event["args"] = event["kwargs"] = "<undecodable>"
        return
    args = repr(args) if args else "[]"
    kwargs = repr(kwargs) if kwargs else "{}"
    event["args"], event["kwargs"] = _cut(args), _cut(kwargs)


def shown(value: Any) -> str:
    """``value`` as repr text of ARGS_LIMIT characters at most, in bounded time."""
    try:
        text = _ARGS_REPR.repr(value)
    except Exception as exc:   # a hostile __repr__ must not cost the batch
        text = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
    return _cut(text)


def _cut(text: str) -> str:
    return text if len(text) <= ARGS_LIMIT else text[:ARGS_LIMIT - 1] + "…"


def _packable(value: Any) -> Any:
    return value.fields() if type(value) is _Received else str(value)


class EventBuffer:
    """Collects events between flushes; ``enabled=False`` makes every call free.

    Called on the supervisor's loop only (not thread-safe). ``flush`` writes only once the
    oldest pending event is FLUSH_DELAY old or FLUSH_MAX are pending, so a busy worker adds
    one XADD per FLUSH_DELAY rather than one per result write; ``flush(force=True)`` at exit.

    A received task is held open as one row (a list) until its end: its start writes a
    time into the row, its success closes it into the batch's ``t`` rows, one flat msgpack
    array for three events. Any other end, or a flush while it is still open, writes the
    row out as separate events instead: nothing waits longer than it did as events."""

    def __init__(self, stream: str, worker: str, *, enabled: bool = True,
                 maxlen: int = 10000) -> None:
        self.stream = stream
        self.worker = worker
        self.enabled = enabled
        self.maxlen = maxlen
        self._pending: list[tuple] = []
        #: task id -> [id, task, queue, retries, m, received, started] of a task received
        #: since the last flush and not ended yet
        self._open: dict[str, list] = {}
        self._lives: list[list] = []          # the rows closed by a success
        self._since = 0.0     # monotonic time of the oldest pending event

    def __len__(self) -> int:
        return len(self._pending) + len(self._open) + len(self._lives)

    def task(self, kind: str, job_id: str, task: str, **fields: Any) -> None:
        if not self.enabled:
            return
        if kind == "task-started":
            self.started(job_id, task)
        elif kind == "task-succeeded":
            self.succeeded(job_id, task, fields.get("runtime"))
        else:
            self._single(kind, job_id, task, fields or None)

    def started(self, job_id: str, task: str) -> None:
        """``task-started``: written into the task's open row, else a single event."""
        if self.enabled:
            row = self._open.get(job_id)
            if row is not None and row[6] is None:
                row[6] = time.time()
            else:
                self._single("task-started", job_id, task, None)

    def succeeded(self, job_id: str, task: str, runtime: float | None) -> None:
        """``task-succeeded`` with its ``runtime``, closing the task's row when open."""
        if self.enabled:
            row = self._open.pop(job_id, None)
            if row is not None:
                row += (time.time(), runtime)
                self._lives.append(row)
            else:
                self._single("task-succeeded", job_id, task, {"runtime": runtime})

    def _single(self, kind: str, job_id: str, task: str, fields: dict | None) -> None:
        """An event on its own; a row still open for the task goes out before it (as its
        events), so that the task's events keep their order."""
        row = self._open.pop(job_id, None)
        if row is not None:
            self._spill(row)
        self._note_first()
        self._pending.append((kind, time.time(), job_id, task, fields))

    def _note_first(self) -> None:
        if not (self._pending or self._open or self._lives):
            self._since = time.monotonic()

    def received(self, job: Any, queue: str, now: float | None = None) -> None:
        """``task-received`` of ``job`` from ``queue``: ``queue``, ``retries``, and ``args``
        and ``kwargs`` as capped text (made by ``pack``). ``now``: the time it came (the
        intake's, once a batch), else the time of the call."""
        if not self.enabled:
            return
        self._note_first()
        opened = self._open
        body = job.body
        if now is None:
            now = time.time()
        if 0 < len(body) <= PLAIN_REPR_BODY:
            earlier = opened.get(job.id)
            if earlier is not None:    # a second copy of a task still open: the first as is
                self._spill(earlier)
            opened[job.id] = [job.id, job.task, queue, job.retries, body, now, None]
        else:
            self._pending.append(("task-received", now, job.id, job.task,
                                  _Received(job, queue)))

    def _spill(self, row: list) -> None:
        """An open row as the separate events it stands for."""
        job_id, task, queue, retries, body, received, started = row[:7]
        self._pending.append(("task-received", received, job_id, task,
                              {"queue": queue, "retries": retries, "m": body}))
        if started is not None:
            self._pending.append(("task-started", started, job_id, task, None))

    def due(self) -> bool:
        """Whether ``take`` would hand over a batch now."""
        count = len(self)
        return bool(count) and (count >= FLUSH_MAX
                                or time.monotonic() - self._since >= FLUSH_DELAY)

    def take(self, *, force: bool = False, packed: bool = True) -> bytes | tuple | None:
        """The batch of everything pending when due (or ``force``), else None: packed, or
        (``packed=False``) as it is for ``pack`` to pack later on another thread (the
        supervisor's writer does, off its loop). Open rows go out as their events."""
        if not (force or self.due()) or not self:
            return None
        for row in self._open.values():
            self._spill(row)
        batch = (self._pending, self._lives)
        self._pending, self._open, self._lives = [], {}, []
        return self.pack(batch) if packed else batch

    def pack(self, batch: tuple) -> bytes:
        events, lives = batch
        out: dict[str, Any] = {"w": self.worker, "e": events}
        if lives:
            out["t"] = lives
        return msgpack.packb(out, use_bin_type=True, default=_packable)

    def flush(self, pipe, *, force: bool = False) -> int:
        """Add one XADD for everything pending to ``pipe`` when due (or ``force``);
        returns how many entries (events and short lives)."""
        count = len(self)
        payload = self.take(force=force)
        if payload is None:
            return 0
        pipe.xadd(self.stream, {"b": payload}, maxlen=self.maxlen, approximate=True)
        return count


def decode(fields: dict) -> Any:
    """The batch of one stream entry as msgpack gives it (a map or an array of event maps),
    None when it holds none: for ``flat``, or for a reader that folds rows itself."""
    raw = fields.get(b"b") or fields.get("b")
    return msgpack.unpackb(raw, raw=False) if raw else None


def _compact(batch: dict) -> Iterator[tuple]:
    """``(type, ts, worker, id, task, extra)`` of each event of a compact batch: its ``e``
    items in order, then its ``t`` rows' events, each row's in order."""
    worker = batch.get("w")
    for kind, ts, job_id, task, extra in batch.get("e") or ():
        yield kind, ts, worker, job_id, task, extra
    for job_id, task, queue, retries, body, received, started, ended, runtime in \
            batch.get("t") or ():
        yield ("task-received", received, worker, job_id, task,
               {"queue": queue, "retries": retries, "m": body})
        if started is not None:
            yield "task-started", started, worker, job_id, task, None
        yield "task-succeeded", ended, worker, job_id, task, {"runtime": runtime}


def entries(fields: dict) -> list[tuple]:
    """The events of one stream entry as flat tuples ``(type, ts, worker, id, task, extra)``
    in the order they happened, without making a map of each: for readers that fold many
    events (the monitor). ``extra`` holds the event's other fields, or is None; for a batch
    of event maps (the heartbeat thread's) it is the event map itself."""
    return flat(decode(fields))


def flat(batch: Any) -> list[tuple]:
    """``entries`` of a batch already decoded (``decode``)."""
    if not batch:
        return []
    if isinstance(batch, list):
        return [(e.get("type"), e.get("ts"), e.get("worker"), e.get("id"), e.get("task"), e)
                for e in batch if isinstance(e, dict)]
    events = list(_compact(batch))
    events.sort(key=_second)   # rows and single events interleave in time
    return events


def unpack(fields: dict, *, arguments: bool = True) -> list[dict[str, Any]]:
    """The events of one stream entry, as maps, in the order they happened.
    ``arguments=False`` leaves a small message's received event its ``m`` (the message
    bytes) instead of ``args``/``kwargs`` text, for readers that show the arguments of few
    tasks: ``arguments(event)`` makes the text when it is wanted."""
    batch = decode(fields)
    if not batch:
        return []
    if isinstance(batch, list):
        return batch
    events = []
    append = events.append
    for kind, ts, worker, job_id, task, extra in _compact(batch):
        event = {"type": kind, "ts": ts, "worker": worker}
        if job_id is not None:
            event["id"] = job_id
            event["task"] = task
        if extra:
            event.update(extra)
            if arguments and "m" in extra:
                _show_arguments(event)
        append(event)
    events.sort(key=_ts)   # rows and single events interleave in time
    return events


def _second(item: tuple) -> float:
    return item[1]


def _ts(event: dict[str, Any]) -> float:
    return event["ts"]


def arguments(event: dict[str, Any]) -> tuple[str, str] | None:
    """(args, kwargs) text of a received event, from its text or from its ``m`` (what
    ``unpack(..., arguments=False)`` leaves); None when it carries neither."""
    if "m" in event:
        shown_event = {"m": event["m"]}
        _show_arguments(shown_event)
        return shown_event["args"], shown_event["kwargs"]
    if isinstance(event.get("args"), str):
        return event["args"], str(event.get("kwargs", ""))
    return None


def read(client, stream: str, *, last_id: str = "$", block_ms: int | None = 1000,
         count: int = 100) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (entry id, event) from ``last_id`` on, forever (callers break out); an empty
    event after each ``block_ms`` without news. ``$`` means entries added from now on."""
    if last_id == "$":
        # pinned once: repeating "$" on every call would lose what lands between two calls
        newest = client.xrevrange(stream, count=1)
        last_id = newest[0][0] if newest else "0-0"
        last_id = last_id.decode() if isinstance(last_id, bytes) else last_id
    while True:
        response = client.xread({stream: last_id}, count=count, block=block_ms)
        for _, entries in response or []:
            for entry_id, fields in entries:
                last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                for event in unpack(fields):
                    yield last_id, event
        if not response:
            yield last_id, {}
