"""The result backend in Redis, and ``AsyncResult``, the handle a producer holds.

Keys (``P`` is ``key_prefix``):

  P:result:<id>   list of one final record; waiters rotate it with BLMOVE so that any number
                  of them can wait on one id without polling, and it expires after
                  ``result_expires``
  P:status:<id>   interim state (STARTED, RETRY) while no final record exists
  P:done:<id>     the encoded return value of an ``idempotent=True`` task that ran to the
                  end, written by the process that ran it (SET NX, ``result_expires``); a
                  redelivered copy returns it instead of running again

A record is a msgpack array ``[state, value, exc_type, exc_message, traceback, date_done,
retries, task, worker, runtime]``, with an 11th item ``children`` (the ids of the tasks it
sent: canvas successors) when there are any; ``value`` is spliced in already encoded by the
process that ran the task, so a result is serialised exactly once.
"""

from __future__ import annotations

import importlib
import time
from typing import TYPE_CHECKING, Any, Iterable

import msgpack
import redis

from engine import message
from engine.wire import Wire
from engine.exceptions import TaskError, TaskRevokedError

if TYPE_CHECKING:
    from engine.app import Engine

PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED = (
    "PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED")
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
_NONE = msgpack.packb(None)
_FIELDS = ("state", "value", "exc_type", "exc_message", "traceback", "date_done",
           "retries", "task", "worker", "runtime", "children")


def encode_record(state: str, value: bytes = b"", *, exc_type: str = "", exc_message: str = "",
                  traceback: str = "", retries: int = 0, task: str = "", worker: str = "",
                  runtime: float = 0.0, children: list[str] | None = None) -> bytes:
    if children:
        tail = msgpack.packb([exc_type, exc_message, traceback, time.time(), retries, task,
                              worker, runtime, children], use_bin_type=True)
        return b"\x9b" + msgpack.packb(state) + (value or _NONE) + tail[1:]
    tail = msgpack.packb([exc_type, exc_message, traceback, time.time(), retries, task,
                          worker, runtime], use_bin_type=True)
    # fixarray of 10: header, state, the spliced value, then the 8 packed items of ``tail``
    # without their own fixarray header (one byte, 0x98); 11 with the children
    return b"\x9a" + msgpack.packb(state) + (value or _NONE) + tail[1:]


def decode_record(raw: bytes) -> dict[str, Any]:
    return dict(zip(_FIELDS, message.loads(raw)))


#: stores a batch of final records in one call: ARGV = expiry ms, then (id, record) pairs
_STORE_MANY = """
local prefix = KEYS[1]
for i = 2, #ARGV, 2 do
  local key = prefix .. ARGV[i]
  redis.call('DEL', key)
  redis.call('RPUSH', key, ARGV[i + 1])
  redis.call('PEXPIRE', key, ARGV[1])
end
return (#ARGV - 1) / 2
"""


class ResultBackend:
    def __init__(self, client: redis.Redis, *, prefix: str = "engine",
                 expires: float = 86400) -> None:
        self.client = client
        self.prefix = prefix
        self.expires = int(expires)
        self.wire = Wire(client)

    def result_key(self, task_id: str) -> str:
        return f"{self.prefix}:result:{task_id}"

    def status_key(self, task_id: str) -> str:
        return f"{self.prefix}:status:{task_id}"

    # -- writing (worker side, in the batches its writer sends) ------------------------
    def done(self, task_id: str) -> bytes | None:
        """The stored value of an idempotent task that already ran to the end."""
        return self.client.get(f"{self.prefix}:done:{task_id}")

    def mark_done(self, task_id: str, value: bytes) -> bytes | None:
        """Record that an idempotent task ran to the end; returns the value recorded
        earlier by another run, if one was first (None when this run is the first)."""
        key = f"{self.prefix}:done:{task_id}"
        pipe = self.client.pipeline(transaction=True)
        pipe.set(key, value, nx=True, ex=self.expires)
        pipe.get(key)
        first, stored = pipe.execute()
        return None if first else stored

    def write_commands(self, records: list[tuple[str, bytes]],
                       statuses: list[tuple[str, bytes]] = ()) -> list[tuple]:
        """The commands that store interim ``statuses`` (SET with expiry) and final
        ``records`` (one script call for the whole batch, not three commands each).

        The record keys are built inside the script from the prefix; fine on one Redis, and
        on a cluster results would need per-key commands. Sent as EVAL with the script's
        text, not EVALSHA: a redis-py pipeline holding a registered script asks SCRIPT
        EXISTS first, a round trip more on every write, and EVALSHA after a Redis restart
        fails with NOSCRIPT between commands that must go together (a result and its ack).
        Redis caches the compiled script by its hash, so EVAL costs no more."""
        commands: list[tuple] = [("SET", self.status_key(task_id), record, "EX", self.expires)
                                 for task_id, record in statuses]
        if records:
            args: list = ["EVAL", _STORE_MANY, 1, f"{self.prefix}:result:", self.expires * 1000]
            for task_id, record in records:
                args.append(task_id)
                args.append(record)
            commands.append(tuple(args))
        return commands

    # -- reading -----------------------------------------------------------------------
    def peek(self, task_id: str) -> dict[str, Any] | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.lindex(self.result_key(task_id), 0)
        pipe.get(self.status_key(task_id))
        final, interim = pipe.execute()
        raw = final or interim
        return decode_record(raw) if raw else None

    def peek_many(self, task_ids: list[str]) -> list[bytes | None]:
        pipe = self.client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.lindex(self.result_key(task_id), 0)
        return pipe.execute()

    def wait(self, task_id: str, timeout: float | None) -> dict[str, Any] | None:
        """Block until the final record exists (None when ``timeout`` runs out)."""
        key = self.result_key(task_id)
        # BLMOVE of a one-element list onto itself hands the record over and leaves it in
        # place for other waiters; 0 means forever in Redis
        if timeout is None:
            raw = self.wire.call("BLMOVE", key, key, "LEFT", "RIGHT", 0, forever=True)
        else:
            timeout = max(timeout, 0.001)
            raw = self.wire.call("BLMOVE", key, key, "LEFT", "RIGHT", timeout, block=timeout)
        return decode_record(raw) if raw else None

    def close(self) -> None:
        self.wire.close()

    def forget(self, task_id: str) -> None:
        self.client.delete(self.result_key(task_id), self.status_key(task_id))


class AsyncResult:
    """A handle on one task's result: ``state``, ``ready()``, ``get()``, ``revoke()``."""

    def __init__(self, id: str, app: "Engine | None" = None, *, task_name: str | None = None,
                 parent: "AsyncResult | None" = None):
        if app is None:
            from engine.app import current_app
            app = current_app()
        self.id = id
        self.app = app
        self.task_name = task_name
        #: the handle of the step before this one in a chain (known where it was sent)
        self.parent = parent
        self._children: list | None = None
        self._record: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id} {self.task_name or ''}>".replace(" >", ">")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _fetch(self) -> dict[str, Any] | None:
        if self._record is not None:
            return self._record
        record = self.app.backend.peek(self.id)
        if record is not None and record["state"] in READY_STATES:
            self._record = record
        return record

    @property
    def state(self) -> str:
        record = self._fetch()
        return record["state"] if record else PENDING

    status = state

    def ready(self) -> bool:
        return self.state in READY_STATES

    def successful(self) -> bool:
        return self.state == SUCCESS

    def failed(self) -> bool:
        return self.state == FAILURE

    @property
    def result(self) -> Any:
        """The return value, or the exception instance of a failure (None while pending)."""
        record = self._fetch()
        if not record:
            return None
        if record["state"] == SUCCESS:
            return record["value"]
        if record["exc_type"]:
            return rebuild_exception(record)
        return None

    @property
    def children(self) -> list:
        """Handles of what this task sent when it finished (the next step of its chain,
        its links; a group's members): known at once where the canvas was sent, else read
        from the stored result once the task has ended (empty before)."""
        if self._children is not None:
            return list(self._children)
        record = self._fetch()
        ids = (record or {}).get("children") or []
        return [AsyncResult(i, self.app, parent=self) for i in ids]

    @property
    def traceback(self) -> str | None:
        record = self._fetch()
        return (record or {}).get("traceback") or None

    @property
    def retries(self) -> int:
        return int((self._fetch() or {}).get("retries") or 0)

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """Wait for the result. Raises TimeoutError when ``timeout`` runs out; on failure
        raises the task's exception (its own type when importable, else TaskError)."""
        record = self._record
        if record is None:
            record = self.app.backend.wait(self.id, timeout)
            if record is None:
                raise TimeoutError(f"task {self.id} did not finish within {timeout} s")
            self._record = record
        return _outcome(record, propagate)

    def revoke(self, terminate: bool = False) -> None:
        self.app.revoke(self.id, terminate=terminate)

    def forget(self) -> None:
        self._record = None
        self.app.backend.forget(self.id)


class ResultSet:
    """Many results awaited at once: one pipelined check per round, one blocking wait."""

    def __init__(self, results: Iterable[AsyncResult]) -> None:
        self.results = list(results)

    def __len__(self) -> int:
        return len(self.results)

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        if not self.results:
            return []
        app = self.results[0].app
        deadline = None if timeout is None else time.monotonic() + timeout
        waiting = [r for r in self.results if r._record is None]
        while waiting:
            raws = app.backend.peek_many([r.id for r in waiting])
            still = []
            for result, raw in zip(waiting, raws):
                if raw:
                    result._record = decode_record(raw)
                else:
                    still.append(result)
            waiting = still
            if not waiting:
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"{len(waiting)} of {len(self.results)} tasks not done "
                                   f"within {timeout} s")
            # block on the first one still missing; the rest are checked in one round after
            record = app.backend.wait(waiting[0].id, left)
            if record is not None:
                waiting[0]._record = record
                waiting = waiting[1:]
        return [_outcome(r._record, propagate) for r in self.results]


def _outcome(record: dict[str, Any], propagate: bool) -> Any:
    state = record["state"]
    if state == SUCCESS:
        return record["value"]
    exc = rebuild_exception(record)
    if propagate:
        raise exc
    return exc


def rebuild_exception(record: dict[str, Any]) -> BaseException:
    """The task's exception as its own type when it can be imported and built from its
    message; TaskError (carrying the type name and remote traceback) otherwise."""
    exc_type, text, tb = record.get("exc_type") or "", record.get("exc_message") or "", \
        record.get("traceback") or ""
    if record["state"] == REVOKED and not exc_type:
        return TaskRevokedError(text or "revoked")
    module_name, _, qualname = exc_type.rpartition(".")
    exc: BaseException | None = None
    if module_name:
        try:
            cls: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                cls = getattr(cls, part)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                exc = cls(text)
        except Exception:   # not importable here, or needs other constructor arguments
            exc = None
    if exc is None:
        exc = TaskError(text, exc_type=exc_type, traceback=tb)
    exc.remote_traceback = tb   # type: ignore[attr-defined]
    return exc
