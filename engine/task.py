"""Tasks: the ``Task`` wrapper made by ``@app.task``, its per-call ``Request``, and retry.

Sending goes through the app (``Engine.send``); running goes through ``engine.worker.runner``.
"""

from __future__ import annotations

import functools
import random
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from engine.exceptions import MaxRetriesExceededError, Retry

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.canvas import Signature
    from engine.results import AsyncResult

#: options ``@app.task`` accepts, with their defaults
TASK_OPTIONS: dict[str, Any] = {
    "name": None,
    "bind": False,
    "queue": None,
    "soft_time_limit": None,
    "time_limit": None,
    "max_retries": 3,
    "default_retry_delay": 3.0,
    "retry_backoff": False,        # True or a base in seconds: exponential backoff
    "retry_backoff_max": 600.0,
    "retry_jitter": True,
    "autoretry_for": (),
    "acks_late": None,             # None: the app's task_acks_late
    "ignore_result": False,
    "idempotent": False,           # record completion by id and skip re-runs
    "expires": None,
}


@dataclass
class Request:
    """What a running task knows about its call (``self.request`` in bound tasks)."""

    id: str | None = None
    task: str | None = None
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    retries: int = 0
    hostname: str | None = None
    queue: str | None = None
    called_directly: bool = True


class _Context(threading.local):
    # threading.local becomes greenlet-local once gevent has patched the process
    def __init__(self) -> None:
        self.stack: list[Request] = []


_context = _Context()


def push_request(request: Request) -> None:
    _context.stack.append(request)


def pop_request() -> None:
    _context.stack.pop()


class Task:
    """A registered task. Calling it runs the function here; ``delay`` sends it."""

    def __init__(self, fn: Callable, app: "Engine | None", **options: Any) -> None:
        unknown = set(options) - set(TASK_OPTIONS)
        if unknown:
            raise TypeError(f"unknown task option(s): {', '.join(sorted(unknown))}")
        opts = {**TASK_OPTIONS, **options}
        self.fn = fn
        self._app = app
        self.name: str = opts["name"] or f"{fn.__module__}.{fn.__qualname__}"
        self.bind: bool = opts["bind"]
        self.queue: str | None = opts["queue"]
        self.soft_time_limit: float | None = opts["soft_time_limit"]
        self.time_limit: float | None = opts["time_limit"]
        self.max_retries: int | None = opts["max_retries"]
        self.default_retry_delay: float = opts["default_retry_delay"]
        self.retry_backoff: bool | float = opts["retry_backoff"]
        self.retry_backoff_max: float = opts["retry_backoff_max"]
        self.retry_jitter: bool = opts["retry_jitter"]
        self.autoretry_for: tuple[type[BaseException], ...] = tuple(opts["autoretry_for"])
        self.acks_late: bool | None = opts["acks_late"]
        self.ignore_result: bool = opts["ignore_result"]
        self.idempotent: bool = opts["idempotent"]
        self.expires: float | None = opts["expires"]
        functools.update_wrapper(self, fn)

    @property
    def app(self) -> "Engine":
        if self._app is not None:
            return self._app
        from engine.app import current_app
        return current_app()

    @property
    def request(self) -> Request:
        stack = _context.stack
        return stack[-1] if stack else Request()

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        if self.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    # -- sending -----------------------------------------------------------------------
    def delay(self, *args: Any, **kwargs: Any) -> "AsyncResult":
        return self.app.send(self, args, kwargs)

    def apply_async(self, args: tuple | list = (), kwargs: dict | None = None, *,
                    countdown: float | None = None, eta: Any = None, expires: Any = None,
                    queue: str | None = None, soft_time_limit: float | None = None,
                    time_limit: float | None = None, task_id: str | None = None,
                    ignore_result: bool | None = None, link: Any = None,
                    link_error: Any = None) -> "AsyncResult":
        """Send one call. ``link``: signature(s) sent with this task's result first when it
        succeeds; ``link_error``: signature(s) sent with its id first when it fails."""
        if link is not None or link_error is not None:
            given = {"countdown": countdown, "eta": eta, "expires": expires, "queue": queue,
                     "soft_time_limit": soft_time_limit, "time_limit": time_limit,
                     "task_id": task_id, "ignore_result": ignore_result, "link": link,
                     "link_error": link_error}
            return self.signature(args, kwargs, **{k: v for k, v in given.items()
                                                   if v is not None}).apply_async()
        return self.app.send(self, args, kwargs or {}, countdown=countdown, eta=eta,
                             expires=expires, queue=queue, soft_time_limit=soft_time_limit,
                             time_limit=time_limit, task_id=task_id, ignore_result=ignore_result)

    # -- signatures (engine.canvas) ----------------------------------------------------
    def signature(self, args: tuple | list = (), kwargs: dict | None = None, *,
                  immutable: bool = False, **options: Any) -> "Signature":
        """``add.signature((2, 2), {}, countdown=1, queue="math")``."""
        from engine.canvas import Signature
        return Signature(self, args, kwargs, options, immutable=immutable, app=self._app)

    def s(self, *args: Any, **kwargs: Any) -> "Signature":
        """A signature of this call; a parent's result, when it has one, comes first."""
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> "Signature":
        """An immutable signature: it never takes a parent's result."""
        return self.signature(args, kwargs, immutable=True)

    def map(self, it: Any) -> "Signature":
        """One task calling this one on each item: ``add1.map([1, 2])`` -> [2, 3]."""
        from engine.canvas import xmap
        return xmap(self.s(), it, app=self._app)

    def starmap(self, it: Any) -> "Signature":
        """As ``map``, each item spread: ``add.starmap([(1, 2), (3, 4)])`` -> [3, 7]."""
        from engine.canvas import xstarmap
        return xstarmap(self.s(), it, app=self._app)

    def chunks(self, it: Any, n: int) -> "Signature":
        """The items in parts of ``n``, one task per part: a list of lists back."""
        from engine.canvas import chunks
        return chunks(self.s(), it, n, app=self._app)

    def delay_many(self, calls: Any, *, queue: str | None = None) -> list["AsyncResult"]:
        """Send many calls in pipelined round trips. Each item is an args tuple, or an
        (args, kwargs) pair when it is a 2-tuple whose second item is a dict."""
        return self.app.send_many(self, calls, queue=queue)

    # -- retrying ----------------------------------------------------------------------
    def retry(self, *, exc: BaseException | None = None, countdown: float | None = None,
              eta: float | None = None, max_retries: int | None = None) -> Retry:
        """Ask to run again later; raises Retry (so ``raise self.retry()`` reads well).

        Past ``max_retries`` it raises ``exc`` if given, else MaxRetriesExceededError.
        """
        request = self.request
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"{self.name}[{request.id}] exceeded {limit} retries")
        if countdown is None and eta is None:
            countdown = self.backoff(request.retries)
        raise Retry(exc=exc, countdown=countdown, eta=eta)

    def backoff(self, retries: int) -> float:
        """Delay before retry number ``retries + 1``."""
        if not self.retry_backoff:
            return self.default_retry_delay
        base = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        delay = min(self.retry_backoff_max, base * (2 ** retries))
        return random.uniform(0, delay) if self.retry_jitter else delay
