"""The result backend in Redis, and ``AsyncResult``, the handle a producer holds.

Keys (``P`` is ``key_prefix``):

  P:result:<id>   list of one final record; waiters rotate it with BLMOVE so that any number
                  of them can wait on one id without polling, and it expires after
                  ``result_expires``
  P:status:<id>   interim state (STARTED, RETRY, or a task's own: ``update_state``) while no
                  final record exists; the value of a custom state is its ``meta``
  P:done:<id>     the encoded return value of an ``idempotent=True`` task that ran to the
                  end, written by the process that ran it (SET NX, ``result_expires``); a
                  redelivered copy returns it instead of running again

The record format is ``engine.records``'.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import TYPE_CHECKING, Any, Iterable

import redis

# the record format and its states live in engine.records; re-exported here, where producers
# have always found them
from engine.records import (FAILURE, PENDING, READY_STATES, RETRY, REVOKED,  # noqa: F401
                            STARTED, SUCCESS, decode_record, encode_record)
from engine.cluster import is_cluster, wire_for
from engine.exceptions import ConfigurationError, TaskError, TaskRevokedError
from engine.request import will_not_block

if TYPE_CHECKING:
    from engine.app import Engine

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

#: ``_STORE_MANY`` for one record, on a Redis Cluster (each task's key in its own slot).
#: KEYS: the record's key. ARGV: expiry ms, record.
_STORE_ONE = """
redis.call('DEL', KEYS[1])
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


class ResultBackend:
    def __init__(self, client: redis.Redis, *, prefix: str = "engine",
                 expires: float = 86400) -> None:
        self.client = client
        self.prefix = prefix
        self.expires = int(expires)
        self.wire = wire_for(client)
        self._per_key = is_cluster(client)   #: a script call per record (see write_commands)

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

        The record keys are built inside the script from the prefix; fine on one Redis; on
        a Redis Cluster each record has its own call (``_STORE_ONE``: its key in its slot). Sent as EVAL with the script's
        text, not EVALSHA: a redis-py pipeline holding a registered script asks SCRIPT
        EXISTS first, a round trip more on every write, and EVALSHA after a Redis restart
        fails with NOSCRIPT between commands that must go together (a result and its ack).
        Redis caches the compiled script by its hash, so EVAL costs no more."""
        commands: list[tuple] = [("SET", self.status_key(task_id), record, "EX", self.expires)
                                 for task_id, record in statuses]
        if records and self._per_key:
            ms = self.expires * 1000
            commands += [("EVAL", _STORE_ONE, 1, self.result_key(task_id), ms, record)
                         for task_id, record in records]
        elif records:
            args: list = ["EVAL", _STORE_MANY, 1, f"{self.prefix}:result:", self.expires * 1000]
            for task_id, record in records:
                args.append(task_id)
                args.append(record)
            commands.append(tuple(args))
        return commands

    def set_status(self, task_id: str, state: str, value: bytes, *, task: str = "",
                   worker: str = "", retries: int = 0) -> None:
        """Store an interim state now, from the process running the task
        (``Task.update_state``); ``value`` is the encoded meta."""
        record = encode_record(state, value, task=task, worker=worker, retries=retries)
        self.wire.call("SET", self.status_key(task_id), record, "EX", self.expires)

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

    async def await_record(self, aclient, task_id: str,
                           timeout: float | None) -> dict[str, Any] | None:
        """``wait`` on a ``redis.asyncio`` client, from a running event loop."""
        key = self.result_key(task_id)
        block = 0 if timeout is None else max(timeout, 0.001)
        raw = await aclient.execute_command("BLMOVE", key, key, "LEFT", "RIGHT", block)
        return decode_record(raw) if raw else None

    def close(self) -> None:
        self.wire.close()

    def forget(self, task_id: str) -> None:
        self.client.delete(self.result_key(task_id), self.status_key(task_id))


class AsyncResult:
    """A handle on one task's result: ``state``, ``ready()``, ``get()``, ``revoke()``.

    A malformed record under the task's result or status key (not a record ``encode_record``
    wrote: undecodable, say, or with a field of the wrong type) reads as ``FAILURE``: ``get()``
    raises, and ``result`` is, a TaskError whose message starts ``malformed result record:``
    and says what is wrong. It is read again each time (never cached), so a record written
    over it later is seen. A failure's exception is rebuilt as its own type only from the
    modules ``rebuild_exception`` allows; otherwise it is a TaskError naming the type.
    """

    def __init__(self, id: str, app: "Engine | None" = None, *, task_name: str | None = None,
                 ignore_result: bool = False, parent: "AsyncResult | None" = None):
        if app is None:
            from engine.registry import current_app
            app = current_app()
        self.id = id
        self.app = app
        self.task_name = task_name
        #: sent with ignore_result: no record will come, so ``get`` returns None at once
        self.ignore_result = ignore_result
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
        if record is not None and record["state"] in READY_STATES and "malformed" not in record:
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
        """The return value on SUCCESS, the exception on FAILURE, RETRY or REVOKED, the
        ``meta`` of a custom state (``update_state``), None while pending."""
        record = self._fetch()
        if not record:
            return None
        if record["state"] == SUCCESS:
            return record["value"]
        if record["exc_type"] or record["state"] == REVOKED or "malformed" in record:
            return rebuild_exception(record, modules=exception_modules(self.app))
        return record["value"]

    info = result

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

    def get(self, timeout: float | None = None, propagate: bool = True,
            disable_sync_subtasks: bool = True) -> Any:
        """Wait for the result. Raises TimeoutError when ``timeout`` runs out; on failure
        raises the task's exception (its own type when importable, else TaskError). Inside
        a task a worker runs, RuntimeError unless ``disable_sync_subtasks=False``."""
        if disable_sync_subtasks:
            will_not_block()
        record = self._record
        if record is None and self.ignore_result:
            return None
        if record is None:
            record = self.app.backend.wait(self.id, timeout)
            if record is None:
                raise TimeoutError(f"task {self.id} did not finish within {timeout} s")
            if "malformed" not in record:
                self._record = record
        return _outcome(record, propagate, exception_modules(self.app))

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """``get`` from a running event loop, on the app's ``redis.asyncio`` client."""
        record = self._record
        if record is None:
            record = await self.app.backend.await_record(_aclient(self.app), self.id, timeout)
            if record is None:
                raise TimeoutError(f"task {self.id} did not finish within {timeout} s")
            self._record = record
        return _outcome(record, propagate, exception_modules(self.app))

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

    def get(self, timeout: float | None = None, propagate: bool = True,
            disable_sync_subtasks: bool = True) -> list[Any]:
        if disable_sync_subtasks:
            will_not_block()
        if not self.results:
            return []
        app = self.results[0].app
        deadline = None if timeout is None else time.monotonic() + timeout
        # records found now; kept on each AsyncResult too, unless malformed (see AsyncResult)
        found: dict[int, dict[str, Any]] = {}
        waiting = []
        for index, result in enumerate(self.results):
            if result._record is not None:
                found[index] = result._record
            elif not result.ignore_result:     # nothing will come: None at once
                waiting.append(index)
        while waiting:
            raws = app.backend.peek_many([self.results[i].id for i in waiting])
            still = []
            for index, raw in zip(waiting, raws):
                if raw:
                    found[index] = decode_record(raw)
                else:
                    still.append(index)
            waiting = still
            if not waiting:
                break
            left = self._left(deadline, len(waiting), timeout)
            # block on the first one still missing; the rest are checked in one round after
            record = app.backend.wait(self.results[waiting[0]].id, left)
            if record is not None:
                found[waiting[0]] = record
                waiting = waiting[1:]
        for index, record in found.items():
            if "malformed" not in record:
                self.results[index]._record = record
        modules = exception_modules(app)
        return [_outcome(found[i], propagate, modules) if i in found else None
                for i in range(len(self.results))]

    def _left(self, deadline: float | None, missing: int, timeout: float | None
              ) -> float | None:
        """Seconds left of the wait (None: no limit); TimeoutError once none are."""
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError(f"{missing} of {len(self.results)} tasks not done "
                               f"within {timeout} s")
        return left

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """``get`` from a running event loop (``Engine.agather``): the same rounds, on the
        app's ``redis.asyncio`` client."""
        if not self.results:
            return []
        app = self.results[0].app
        aclient = _aclient(app)
        deadline = None if timeout is None else time.monotonic() + timeout
        waiting = [r for r in self.results if r._record is None]
        while waiting:
            async with aclient.pipeline(transaction=False) as pipe:
                for result in waiting:
                    pipe.lindex(app.backend.result_key(result.id), 0)
                raws = await pipe.execute()
            waiting = [r for r, raw in zip(waiting, raws) if not _keep(r, raw)]
            if not waiting:
                break
            left = self._left(deadline, len(waiting), timeout)
            record = await app.backend.await_record(aclient, waiting[0].id, left)
            if record is not None:
                waiting[0]._record = record
                waiting = waiting[1:]
        modules = exception_modules(app)
        return [_outcome(r._record, propagate, modules) for r in self.results]


def _keep(result: AsyncResult, raw: bytes | None) -> bool:
    if raw:
        result._record = decode_record(raw)
    return bool(raw)


def _aclient(app: "Engine"):
    """The app's asyncio client, which must reach the result keys too."""
    url = app.conf.result_backend
    if url and url != app.broker_url:
        raise ConfigurationError("the async API needs the result backend on the broker's "
                                 "Redis (result_backend unset or equal to broker_url)")
    return app.aclient


def exception_modules(app: "Engine") -> tuple[str, ...]:
    """The setting ``result_exception_modules``: a list of module names, or one string of
    them separated by commas (as a settings module or the environment may give it)."""
    value = app.conf.get("result_exception_modules") or ()
    if isinstance(value, str):
        value = value.split(",")
    return tuple(name.strip() for name in value if name and name.strip())


def _outcome(record: dict[str, Any], propagate: bool, modules: Iterable[str] = ()) -> Any:
    state = record["state"]
    if state == SUCCESS and "malformed" not in record:
        return record["value"]
    exc = rebuild_exception(record, modules=modules)
    if propagate:
        raise exc
    return exc


def rebuild_exception(record: dict[str, Any], *, modules: Iterable[str] = ()
                      ) -> BaseException:
    """The task's exception as its own type, or TaskError (carrying the type name and the
    remote traceback).

    Its own type only when that is an ``Exception`` subclass found in a module this process
    has already imported (``sys.modules``), or in one of ``modules`` (the setting
    ``result_exception_modules``: module names, a package covering its submodules), which
    may be imported for it. A record names its type as text, and whoever can write a result
    key could otherwise make every producer that reads it import any module on its path
    (running that module's top level), or raise SystemExit in it."""
    exc_type, text, tb = record.get("exc_type") or "", record.get("exc_message") or "", \
        record.get("traceback") or ""
    if record["state"] == REVOKED and not exc_type:
        return TaskRevokedError(text or "revoked")
    exc: BaseException | None = None
    cls = _find_class(exc_type, modules) if exc_type else None
    if cls is not None:
        args = record.get("value")   # a FAILURE's value: the exception's arguments, if sent
        for attempt in ((args,) if type(args) is list else ()) + ([text],):
            try:
                exc = cls(*attempt)
                break
            except Exception:   # needs other constructor arguments
                exc = None
    if exc is None:
        exc = TaskError(text, exc_type=exc_type, traceback=tb)
    exc.remote_traceback = tb   # type: ignore[attr-defined]
    return exc


def _find_class(dotted: str, modules: Iterable[str]) -> type | None:
    """The Exception subclass named ``module.Qual.Name``, looked up as rebuild_exception
    says; None when it is not there (or not allowed)."""
    parts = dotted.split(".")
    allowed = tuple(modules)
    # the longest prefix that names a module wins: ``pkg.mod.Outer.Inner`` is looked up as
    # ``Outer.Inner`` in ``pkg.mod``
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        module = sys.modules.get(name)
        if module is None and any(name == m or name.startswith(m + ".") for m in allowed):
            try:
                module = importlib.import_module(name)
            except Exception:   # not importable here
                module = None
        if module is None:
            continue
        obj: Any = module
        for part in parts[cut:]:
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        if isinstance(obj, type) and issubclass(obj, Exception):
            return obj
        return None
    return None
