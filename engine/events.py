"""Events: what workers tell the monitor, batched into a capped Redis stream.

Stream ``P:events``: one entry per flush of a worker, field ``b`` holding msgpack, so that a
busy worker pays one XADD per batch, not per event. A batch is either a map ``{"w": worker,
"e": [[type, ts, id, task, extra], ...]}`` (compact: the worker once, no repeated keys) or
an array of event maps (the heartbeat thread's single events). ``unpack`` turns both into
event maps: ``type``, ``ts``, ``worker``, and for task events ``id`` and ``task``.
``task-received`` carries ``args`` and ``kwargs`` as ``repr`` text of ARGS_LIMIT characters
at most (``docs/wire.md``).
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

    Called on the supervisor's loop only (not thread-safe): an event costs a tuple here
    and its share of one msgpack call and one XADD. ``flush`` writes only once the oldest
    pending event is FLUSH_DELAY old or FLUSH_MAX are pending, so a busy worker adds one
    XADD per FLUSH_DELAY rather than one per result write; ``flush(force=True)`` at exit."""

    def __init__(self, stream: str, worker: str, *, enabled: bool = True,
                 maxlen: int = 10000) -> None:
        self.stream = stream
        self.worker = worker
        self.enabled = enabled
        self.maxlen = maxlen
        self._pending: list[tuple] = []
        self._since = 0.0     # monotonic time of the oldest pending event

    def task(self, kind: str, job_id: str, task: str, **fields: Any) -> None:
        if self.enabled:
            if not self._pending:
                self._since = time.monotonic()
            self._pending.append((kind, time.time(), job_id, task, fields or None))

    def received(self, job: Any, queue: str) -> None:
        """``task-received`` of ``job`` from ``queue``: ``queue``, ``retries``, and ``args``
        and ``kwargs`` as capped text (made by ``pack``)."""
        if self.enabled:
            if not self._pending:
                self._since = time.monotonic()
            body = job.body
            extra = {"queue": queue, "retries": job.retries, "m": body} \
                if 0 < len(body) <= PLAIN_REPR_BODY else _Received(job, queue)
            self._pending.append(("task-received", time.time(), job.id, job.task, extra))

    def due(self) -> bool:
        """Whether ``take`` would hand over a batch now."""
        pending = self._pending
        return bool(pending) and (len(pending) >= FLUSH_MAX
                                  or time.monotonic() - self._since >= FLUSH_DELAY)

    def take(self, *, force: bool = False, packed: bool = True) -> bytes | list | None:
        """The batch of everything pending when due (or ``force``), else None: packed, or
        (``packed=False``) the list for ``pack`` to pack later on another thread (the
        supervisor's writer does, off its loop)."""
        pending = self._pending
        if not pending or not (force or self.due()):
            return None
        self._pending = []
        return self.pack(pending) if packed else pending

    def pack(self, events: list) -> bytes:
        return msgpack.packb({"w": self.worker, "e": events}, use_bin_type=True,
                             default=_packable)

    def flush(self, pipe, *, force: bool = False) -> int:
        """Add one XADD for everything pending to ``pipe`` when due (or ``force``);
        returns how many events."""
        count = len(self._pending)
        payload = self.take(force=force)
        if payload is None:
            return 0
        pipe.xadd(self.stream, {"b": payload}, maxlen=self.maxlen, approximate=True)
        return count


def unpack(fields: dict) -> list[dict[str, Any]]:
    """The events of one stream entry, as maps, in the order they happened."""
    raw = fields.get(b"b") or fields.get("b")
    if not raw:
        return []
    batch = msgpack.unpackb(raw, raw=False)
    if isinstance(batch, list):
        return batch
    worker = batch.get("w")
    events = []
    for kind, ts, job_id, task, extra in batch.get("e") or ():
        event = {"type": kind, "ts": ts, "worker": worker}
        if job_id is not None:
            event["id"] = job_id
            event["task"] = task
        if extra:
            event.update(extra)
            if "m" in extra:
                _show_arguments(event)
        events.append(event)
    return events


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
