"""``app.control`` and ``app.control.inspect()``: Celery's remote-control API from Python.

The same channel as ``engine inspect``/``engine control`` (``engine.control``), with
Celery's method names, arguments and reply shapes: an inspect method returns ``{worker:
reply}`` (None when no worker answered in ``timeout``), a control method with
``reply=True`` a list of ``{worker: reply}``. Commands go out with ``"shape": "celery"``,
which the worker answers from ``engine.worker.replies``. The command line's replies are not
these: they keep their own shapes.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Sequence

from engine import control, flow

if TYPE_CHECKING:
    from engine.app import Engine

__all__ = ["Control", "Inspect"]


def _names(destination: str | Sequence[str] | None) -> list[str] | None:
    if destination is None:
        return None
    return [destination] if isinstance(destination, str) else list(destination)


class Inspect:
    """Ask workers what they hold. ``destination`` is a worker name or a list of them (all
    when None); a single name makes each method return that worker's reply alone."""

    def __init__(self, destination: str | Sequence[str] | None = None, timeout: float = 1.0,
                 callback: Callable[[dict], Any] | None = None, app: "Engine | None" = None,
                 limit: int | None = None, **_: Any) -> None:
        self.app = app
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.limit = limit

    def _request(self, command: str, **arguments: Any) -> Any:
        replies = Control(self.app).broadcast(
            command, arguments=arguments, destination=self.destination, reply=True,
            timeout=self.timeout, callback=self.callback, limit=self.limit)
        if not replies:
            return None
        by_worker = {name: value for reply in replies for name, value in reply.items()}
        if isinstance(self.destination, str):
            return by_worker.get(self.destination)
        return by_worker

    def active(self, safe: bool | None = None) -> Any:
        return self._request("active", safe=safe)

    def reserved(self, safe: bool | None = None) -> Any:
        return self._request("reserved")

    def scheduled(self, safe: bool | None = None) -> Any:
        return self._request("scheduled")

    def query_task(self, *ids: str) -> Any:
        if len(ids) == 1 and isinstance(ids[0], (list, tuple)):
            ids = tuple(ids[0])
        return self._request("query_task", ids=list(ids))

    def registered(self, *taskinfoitems: str) -> Any:
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def stats(self) -> Any:
        return self._request("stats")

    def ping(self, destination: str | Sequence[str] | None = None) -> Any:
        if destination is not None:
            self.destination = destination
        return self._request("ping")

    def active_queues(self) -> Any:
        return self._request("active_queues")

    def revoked(self) -> Any:
        return self._request("revoked")

    def conf(self, with_defaults: bool = False) -> Any:
        return self._request("conf", with_defaults=with_defaults)


class Control:
    """``app.control``: broadcast commands to workers, Celery's way."""

    def __init__(self, app: "Engine | None" = None) -> None:
        from engine.registry import app_or_current
        self.app = app_or_current(app)

    def inspect(self, destination: str | Sequence[str] | None = None, timeout: float = 1.0,
                callback: Callable[[dict], Any] | None = None, limit: int | None = None,
                **options: Any) -> Inspect:
        return Inspect(destination, timeout, callback, app=self.app, limit=limit, **options)

    def broadcast(self, command: str, arguments: dict | None = None,
                  destination: str | Sequence[str] | None = None, reply: bool = False,
                  timeout: float = 1.0, limit: int | None = None,
                  callback: Callable[[dict], Any] | None = None, **extra: Any
                  ) -> list[dict] | None:
        """Send ``command`` with ``arguments`` to every worker (or those named). With
        ``reply`` wait up to ``timeout`` seconds for the answers, or until ``limit`` came
        or every worker that heard it answered: ``[{worker: reply}, ...]``, sorted by
        worker. Without it, return None at once."""
        app = self.app
        names = _names(destination)
        reply_to = f"{app.broker.keys.prefix}:reply:{uuid.uuid4().hex}" if reply else None
        message = {**(arguments or {}), **extra, "cmd": command, "shape": "celery",
                   "destination": names, "reply_to": reply_to}
        heard = app.client.publish(app.broker.keys.control,
                                   control.encode(message, app.signer))
        if not reply:
            return None
        expected = min(len(names), heard) if names else heard
        if limit is not None:
            expected = min(expected, limit)
        return self._gather(reply_to, expected, timeout, callback)

    def _gather(self, reply_to: str, expected: int, timeout: float,
                callback: Callable[[dict], Any] | None) -> list[dict]:
        """Celery's reply shape, ``{worker: reply}``, each seen by ``callback`` as it comes."""
        def shaped(answer: dict) -> dict:
            return {answer.get("worker", ""): answer.get("reply")}
        on_reply = None if callback is None else (lambda answer: callback(shaped(answer)))
        return [shaped(a) for a in control.gather(self.app, reply_to, expected, timeout,
                                                  on_reply)]

    # -- control verbs ------------------------------------------------------------------
    def ping(self, destination: str | Sequence[str] | None = None, timeout: float = 1.0,
             **options: Any) -> list[dict] | None:
        return self.broadcast("ping", destination=destination, reply=True, timeout=timeout,
                              **options)

    def revoke(self, task_id: str | Sequence[str], destination: str | Sequence[str] | None
               = None, terminate: bool = False, signal: Any = None, **options: Any
               ) -> list[dict] | None:
        """Revoke one id or a list of them: remembered for workers started later too
        (``revoke_expires``), and ended if running with ``terminate``. ``signal`` is not
        used: the pool ends a task its own way (prefork: SIGTERM, then SIGKILL)."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        app = self.app
        expires = time.time() + app.conf.revoke_expires
        app.client.zadd(app.broker.keys.revoked, {i: expires for i in ids})
        return self.broadcast("revoke", {"task_id": ids, "terminate": bool(terminate)},
                              destination=destination, **options)

    def terminate(self, task_id: str | Sequence[str], destination: str | Sequence[str] |
                  None = None, signal: Any = None, **options: Any) -> list[dict] | None:
        return self.revoke(task_id, destination=destination, terminate=True, **options)

    def rate_limit(self, task_name: str, rate_limit: str | int | None,
                   destination: str | Sequence[str] | None = None, **options: Any
                   ) -> list[dict] | None:
        """Set a task's rate (``"N/s"``, ``"N/m"``, ``"N/h"``; 0 or None: no limit) on the
        live workers, and store it for those started later (ValueError for a bad rate)."""
        rate = "0" if rate_limit in (None, 0, "") else str(rate_limit)
        flow.set_rate_limit(self.app, task_name, rate)
        return self.broadcast("rate_limit", {"task_name": task_name, "rate_limit": rate},
                              destination=destination, **options)

    def pool_grow(self, n: int = 1, destination: str | Sequence[str] | None = None,
                  **options: Any) -> list[dict] | None:
        return self.broadcast("pool_grow", {"n": n}, destination=destination, **options)

    def pool_shrink(self, n: int = 1, destination: str | Sequence[str] | None = None,
                    **options: Any) -> list[dict] | None:
        return self.broadcast("pool_shrink", {"n": n}, destination=destination, **options)

    def shutdown(self, destination: str | Sequence[str] | None = None, **options: Any
                 ) -> list[dict] | None:
        return self.broadcast("shutdown", destination=destination, **options)

    def purge(self) -> int:
        """Delete every waiting and delayed message of every known queue; how many."""
        broker = self.app.broker
        return sum(broker.purge(queue) for queue in broker.known_queues())
