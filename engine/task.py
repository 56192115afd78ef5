"""Tasks: the ``Task`` wrapper made by ``@app.task``, its per-call ``Request``, and retry.

Sending goes through the app (``Engine.send``); running goes through ``engine.worker.runner``.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import keyword
import math
import random
from typing import TYPE_CHECKING, Any, Callable

from engine import message
from engine.exceptions import ExceptionInfo, MaxRetriesExceededError, Retry
# what a running task knows: engine.request (re-exported here, where the worker finds them)
from engine.request import (Request, _async_request, _context, current_task,  # noqa: F401
                            get_current_task, get_task_logger, pop_request, push_request,
                            set_async_request)

if TYPE_CHECKING:
    from engine import eager, results
    from engine.app import Engine
    from engine.canvas import Signature

#: options ``@app.task`` accepts, with their defaults (also the class attributes of Task, so
#: a subclass or a class-based task sets them as attributes)
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
    "typing": True,                # check the arguments against the signature when sending
    "rate_limit": None,            # "N/s", "N/m", "N/h": for the whole fleet (engine.flow)
    "max_concurrency": None,       # at most N running at once across the fleet
    "unique_for": None,            # seconds: a second identical send returns the first
    "priority": 0,                 # 0 to 9 within its queue: higher is fetched first
}

#: the methods a Task subclass may override to be called around each run (Celery's names)
HOOKS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")


def check_priority(priority: Any) -> int:
    """0 to 9 (None: 0); anything else is a ValueError."""
    if priority is None:
        return 0
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ValueError(f"priority must be a whole number from 0 to 9, got {priority!r}")
    return priority


class Task:
    """A registered task. Calling it runs it here; ``delay`` sends it.

    Made by ``@app.task`` around a function, or written as a class: subclass ``Task`` (or
    ``app.Task``), set ``name`` and the options as class attributes, define ``run``, and
    register an instance (``app.register_task``). A subclass may override the hooks
    (``before_start``, ``on_success``, ``on_failure``, ``on_retry``, ``after_return``): the
    worker calls them in the process that runs the task, with Celery's arguments. Whether a
    class overrides any is found once, here, so tasks without hooks run as before.
    """

    name: str | None = None
    bind = False
    queue: str | None = None
    soft_time_limit: float | None = None
    time_limit: float | None = None
    max_retries: int | None = 3
    default_retry_delay: float = 3.0
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    retry_jitter = True
    autoretry_for: tuple[type[BaseException], ...] = ()
    acks_late: bool | None = None
    ignore_result = False
    idempotent = False
    expires: float | None = None
    typing = True
    rate_limit: str | None = None      #: "N/s", "N/m", "N/h" for the whole fleet (engine.flow)
    max_concurrency: int | None = None
    unique_for: float | None = None
    priority = 0
    #: the app of ``app.Task`` subclasses (None: the current app)
    _app: "Engine | None" = None

    def __init__(self, fn: Callable | None = None, app: "Engine | None" = None,
                 **options: Any) -> None:
        cls = type(self)
        unknown = [k for k in options if k not in TASK_OPTIONS and not hasattr(cls, k)]
        if unknown:
            raise TypeError(f"unknown task option(s): {', '.join(sorted(unknown))}")
        if fn is not None and cls.run is not Task.run:
            raise TypeError(f"{cls.__qualname__} defines run(): it is a class-based task, "
                            f"not a base for @app.task functions")
        if fn is None and cls.run is Task.run:
            raise TypeError(f"{cls.__qualname__} has no run(): define it, or decorate a "
                            f"function with @app.task")
        self.fn = fn
        if app is not None:
            self._app = app
        for key, value in options.items():
            setattr(self, key, value)
        if self.name is None:
            # module.function, as Celery names it, nested functions too
            self.name = (f"{fn.__module__}.{fn.__name__}" if fn is not None
                         else f"{cls.__module__}.{cls.__name__}")
        self.autoretry_for = tuple(self.autoretry_for)
        if (self.soft_time_limit is not None and self.time_limit is not None
                and self.soft_time_limit > self.time_limit):
            raise ValueError(f"{self.name}: soft_time_limit ({self.soft_time_limit}) is past "
                             f"time_limit ({self.time_limit})")
        self.priority = check_priority(self.priority)
        if self.rate_limit is not None:
            from engine.flow import parse_rate
            parse_rate(self.rate_limit)   # a bad rate fails at declaration, not in a worker
        #: overridden hooks or ``__call__``: the runner takes the hooked path for this task
        self.hooked = cls.__call__ is not Task.__call__ or any(
            getattr(cls, hook) is not getattr(Task, hook) for hook in HOOKS)
        if fn is not None:
            functools.update_wrapper(self, fn)
        self._checker: Callable | None = None

    @property
    def app(self) -> "Engine":
        from engine.registry import app_or_current
        return app_or_current(self._app)

    @property
    def request(self) -> Request:
        current = _async_request.get()
        if current is not None:
            return current
        stack = _context.stack
        return stack[-1] if stack else Request()

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # For an ``async def`` task this returns the coroutine, to be awaited by the caller
        # (docs/async.md): calling runs the function here, whatever kind it is.
        return self.run(*args, **kwargs)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The task's body: the decorated function (class-based tasks define their own)."""
        if self.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    # -- hooks (Celery's signatures; the defaults do nothing) ----------------------------
    def before_start(self, task_id: str, args: list, kwargs: dict) -> None:
        """Before the task runs; raising here fails the task."""

    def on_success(self, retval: Any, task_id: str, args: list, kwargs: dict) -> None:
        """After it returned ``retval``."""

    def on_failure(self, exc: BaseException, task_id: str, args: list, kwargs: dict,
                   einfo: ExceptionInfo) -> None:
        """After it raised ``exc`` (and will not be retried)."""

    def on_retry(self, exc: BaseException | None, task_id: str, args: list, kwargs: dict,
                 einfo: ExceptionInfo) -> None:
        """It will run again; ``exc`` is the exception given to ``retry`` (or None)."""

    def after_return(self, status: str, retval: Any, task_id: str, args: list, kwargs: dict,
                     einfo: ExceptionInfo | None) -> None:
        """After SUCCESS or FAILURE (``retval`` is the value or the exception); like
        Celery, ``einfo`` is None here and the hook is not called for RETRY or a Reject."""

    # -- state -----------------------------------------------------------------------------
    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None) -> None:
        """Publish an interim state (``"PROGRESS"``, any name) with ``meta``: producers see
        it as ``AsyncResult.state`` and ``.info`` until the task ends."""
        request = self.request
        task_id = task_id or request.id
        if not task_id:
            raise ValueError(f"{self.name}: update_state outside a running task needs task_id")
        if not state or not isinstance(state, str):
            raise ValueError(f"{self.name}: update_state needs a state name, got {state!r}")
        try:
            value = message.dumps(meta)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"{self.name}: update_state meta cannot be stored: {exc}") from None
        self.app.backend.set_status(task_id, state, value, task=self.name,
                                    worker=request.hostname or "", retries=request.retries)

    def AsyncResult(self, task_id: str) -> "results.AsyncResult":   # noqa: N802 (Celery's name)
        from engine import results
        return results.AsyncResult(task_id, self.app, task_name=self.name)

    # -- sending -----------------------------------------------------------------------
    def delay(self, *args: Any, **kwargs: Any) -> "results.AsyncResult":
        return self.app.send(self, args, kwargs)

    def apply_async(self, args: tuple | list | None = None, kwargs: dict | None = None, *,
                    countdown: float | None = None, eta: Any = None, expires: Any = None,
                    queue: str | None = None, soft_time_limit: float | None = None,
                    time_limit: float | None = None, task_id: str | None = None,
                    ignore_result: bool | None = None,
                    headers: dict | None = None, unique_for: float | None = None,
                    priority: int | None = None, link: Any = None,
                    link_error: Any = None) -> "results.AsyncResult":
        """Send with options; ``headers`` (a dict) travel in the message and are
        ``self.request.headers`` in the task. ``link``: signature(s) sent with this task's
        result first when it succeeds; ``link_error``: signature(s) sent with its id first
        when it fails."""
        if link is not None or link_error is not None:
            given = {"countdown": countdown, "eta": eta, "expires": expires, "queue": queue,
                     "soft_time_limit": soft_time_limit, "time_limit": time_limit,
                     "task_id": task_id, "ignore_result": ignore_result, "link": link,
                     "link_error": link_error}
            return self.signature(args, kwargs, **{k: v for k, v in given.items()
                                                   if v is not None}).apply_async()
        return self.app.send(self, args or (), kwargs or {}, countdown=countdown, eta=eta,
                             expires=expires, queue=queue, soft_time_limit=soft_time_limit,
                             time_limit=time_limit, task_id=task_id,
                             ignore_result=ignore_result, headers=headers,
                             unique_for=unique_for, priority=priority)

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> "results.AsyncResult":
        """Django: send when the current database transaction commits (at once outside
        one); never when it rolls back. Returns the result the task will have."""
        return self.apply_async_on_commit(args, kwargs)

    def apply_async_on_commit(self, args: tuple | list | None = None,
                              kwargs: dict | None = None, *, using: str | None = None,
                              **options: Any) -> "results.AsyncResult":
        """Django: ``apply_async`` when the transaction of database ``using`` commits."""
        from engine import django as _django
        return _django.on_commit_send(self, args or (), kwargs or {}, using=using,
                                      options=options)

    def apply(self, args: tuple | list | None = None, kwargs: dict | None = None, *,
              task_id: str | None = None, headers: dict | None = None,
              throw: bool | None = None) -> "eager.EagerResult":
        """Run here and now, with the worker's path (hooks, retry and failure handling),
        and return an EagerResult. ``throw`` (default: ``task_eager_propagates``) raises
        the task's exception instead of storing it in the result."""
        return self.app.apply_here(self, list(args or ()), dict(kwargs or {}),
                                   task_id=task_id, headers=headers, throw=throw)

    def check_arguments(self, args: Any, kwargs: dict) -> None:
        """TypeError, at send time, when the arguments cannot bind to the task's signature
        (like calling it would); ``typing=False`` on the task skips it."""
        checker = self._checker
        if checker is None:
            checker = self._checker = _signature_checker(self)
        try:
            checker(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}: {exc}") from None

    async def adelay(self, *args: Any, **kwargs: Any) -> "AsyncResult":
        """``delay`` from a running event loop, on ``redis.asyncio`` (``engine.aio``)."""
        from engine import aio
        return await aio.send(self.app, self, args, kwargs)

    async def aapply_async(self, args: tuple | list = (), kwargs: dict | None = None, *,
                           countdown: float | None = None, eta: Any = None,
                           expires: Any = None, queue: str | None = None,
                           soft_time_limit: float | None = None,
                           time_limit: float | None = None, task_id: str | None = None,
                           ignore_result: bool | None = None) -> "AsyncResult":
        """``apply_async`` from a running event loop (``engine.aio``)."""
        from engine import aio
        return await aio.send(self.app, self, args, kwargs or {}, countdown=countdown,
                              eta=eta, expires=expires, queue=queue,
                              soft_time_limit=soft_time_limit, time_limit=time_limit,
                              task_id=task_id, ignore_result=ignore_result)

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
              eta: "float | datetime.datetime | None" = None,
              max_retries: int | None = None) -> Retry:
        """Ask to run again later; raises Retry (so ``raise self.retry()`` reads well).
        ``eta`` is unix seconds or a datetime (naive: UTC, as in Celery).

        Past ``max_retries`` it raises ``exc`` if given, else MaxRetriesExceededError.
        A ``countdown`` or ``eta`` that is not a finite number raises ValueError (the retry
        would wait for ever), failing the task with that error.
        """
        if isinstance(eta, datetime.datetime):   # naive means UTC (Celery's rule)
            eta = (eta if eta.tzinfo is not None
                   else eta.replace(tzinfo=datetime.timezone.utc)).timestamp()
        for name, value in (("countdown", countdown), ("eta", eta)):
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ValueError(f"{self.name}: retry {name} must be a finite number of "
                                 f"seconds, got {value!r}")
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


def _accepts_anything(*args: Any, **kwargs: Any) -> None:
    pass


def _signature_checker(task: Task) -> Callable[..., None]:
    """A do-nothing function with the task's parameters (``self`` dropped when bound):
    calling it binds the arguments as the task would, at the cost of one call, where
    ``inspect.Signature.bind`` costs microseconds a send. Defaults are passed in, never
    re-evaluated; annotations are left out."""
    fn = task.fn if task.fn is not None else task.run
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):   # a builtin or a callable with no signature
        return _accepts_anything
    if task.fn is not None and task.bind:
        params = params[1:]
    out: list[str] = []
    namespace: dict[str, Any] = {}
    positional_only = star = False
    for i, p in enumerate(params):
        if p.kind is p.POSITIONAL_ONLY:
            positional_only = True
        elif positional_only:
            out.append("/")
            positional_only = False
        if p.kind is p.VAR_POSITIONAL:
            out.append("*" + p.name)
            star = True
            continue
        if p.kind is p.VAR_KEYWORD:
            out.append("**" + p.name)
            continue
        if p.kind is p.KEYWORD_ONLY and not star:
            out.append("*")
            star = True
        text = p.name
        if p.default is not p.empty:
            namespace[f"_default_{i}"] = p.default
            text += f"=_default_{i}"
        out.append(text)
    if positional_only:
        out.append("/")
    name = getattr(fn, "__name__", "task")
    if not name.isidentifier() or keyword.iskeyword(name):
        name = "task"
    exec(f"def {name}({', '.join(out)}):\n    pass\n", namespace)   # noqa: S102
    return namespace[name]
