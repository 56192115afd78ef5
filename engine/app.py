"""The ``Engine`` app: configuration, the task registry, connections, and sending.

``load_app`` turns an ``-A`` target into the app. Connections are made on first use, so an
app can be defined at import time without any Redis running.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import redis

from engine import loader, message, routing, signals, signing, tracing, urls
from engine.urls import connect
from engine.message import absolute_time as _absolute, finite_seconds as _finite
from engine.broker import Broker, EnqueueError
from engine.config import Config, import_object
from engine.exceptions import BrokerOutOfMemory, BrokerUnavailable, ConfigurationError
from engine.registry import (APPS, SHARED, TaskRegistry, current_app,  # noqa: F401 (public)
                             set_current, set_default_factory)
from engine.results import AsyncResult, ResultBackend, ResultSet
from engine.task import Task, check_priority

log = logging.getLogger("engine")


class Engine:
    """A task app. ``broker``/``backend`` override configuration; with no broker set
    anywhere the embedded Redis under ``$ENGINE_HOME`` is started and used."""

    def __init__(self, main: str = "__main__", *, broker: str | None = None,
                 backend: str | None = None, include: Iterable[str] = (),
                 task_cls: "type[Task] | str | None" = None, **settings: Any) -> None:
        self.main = main
        #: the default base class of this app's tasks: a class or "pkg.mod:Class", resolved
        #: on first use (it may import modules that import this app)
        self.task_cls = task_cls or Task
        self._task_base: type[Task] | None = None
        self.conf = Config(**settings)
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        self.tasks = TaskRegistry(on_miss=self.discover_pending)
        self._discovery: list[tuple[Any, str]] = []   # autodiscover_tasks not done yet
        self.include = list(include)
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._backend_client: redis.Redis | None = None
        self._broker: Broker | None = None
        self._backend: ResultBackend | None = None
        self._send_cache: _SendSettings | None = None
        self._signer: signing.Signer | None | bool = False    # False: not read yet
        for fn, options in SHARED:
            # engine.Task unless the declaration names a base: resolving task_cls here
            # would import its module while the app's own module is still being imported
            options = dict(options)
            base = options.pop("base", None) or Task
            self.tasks.register(base(fn, None, **options))
        from engine.canvas import builtins
        builtins.register(self)
        set_current(self)

    def __repr__(self) -> str:
        return f"<Engine {self.main}>"

    # -- configuration -----------------------------------------------------------------
    def config_from_object(self, obj: Any, *, namespace: str | None = None) -> None:
        self.conf.from_object(obj, namespace=namespace)

    def autodiscover_tasks(self, packages: Iterable[str] | Callable[[], Iterable[str]] | None
                           = None, related_name: str = "tasks", force: bool = False) -> None:
        """Import ``<package>.<related_name>`` for each package (missing modules are skipped,
        errors inside them are not). With no packages, under Django: every INSTALLED_APPS
        entry. ``packages`` may be a callable returning them.

        Lazy, as in Celery: done when a worker, beat or command loads the app
        (``import_default_modules``), or on the first lookup of a task name not registered
        yet; at once with ``force=True``. The module that makes the app may then call it
        before Django's app registry is ready, or before the task modules can import it."""
        job = (packages, related_name)
        if force:
            loader.discover(*job)
        elif job not in self._discovery:
            self._discovery.append(job)

    def discover_pending(self) -> bool:
        """Run the autodiscovery asked for so far; whether there was any."""
        pending, self._discovery = self._discovery, []
        for packages, related_name in pending:
            loader.discover(packages, related_name)
        return bool(pending)

    def import_default_modules(self) -> None:
        """What a worker, beat or command does after loading the app (``engine.loader``):
        Django's registry made ready when ``DJANGO_SETTINGS_MODULE`` is set, ``include``
        imported, the pending autodiscovery done, ``import_modules`` sent."""
        loader.import_default_modules(self)

    import_includes = import_default_modules   # the earlier name

    # -- tasks -------------------------------------------------------------------------
    def task(self, fn: Callable | None = None, **options: Any) -> Any:
        """``@app.task`` or ``@app.task(name=..., queue=..., base=DbTask, ...)``."""
        if fn is not None and callable(fn) and not options:
            return self._register(fn, {}, app=self)
        return lambda f: self._register(f, options, app=self)

    @property
    def Task(self) -> type[Task]:   # noqa: N802 (Celery's name)
        """This app's task base class (a subclass of ``task_cls`` bound to the app):
        subclass it for hooks or class-based tasks."""
        if self._task_base is None:
            base = self.task_cls
            if isinstance(base, str):
                base = import_object(base, "task_cls")
            if not (isinstance(base, type) and issubclass(base, Task)):
                raise ConfigurationError(f"task_cls {self.task_cls!r} is not a Task subclass")
            self._task_base = type(base.__name__, (base,), {
                "_app": self, "__module__": base.__module__,
                "__qualname__": base.__qualname__, "__doc__": base.__doc__})
        return self._task_base

    def _register(self, fn: Callable, options: dict, *, app: "Engine | None") -> Task:
        options = dict(options)
        base = options.pop("base", None) or self.Task
        task = base(fn, app, **options)
        return self.tasks.register(task)

    def register_task(self, task: "Task | type[Task]") -> Task:
        """Register a class-based task (an instance, or the class: it is instantiated);
        returns the instance. A task with no app of its own is bound to this one."""
        if isinstance(task, type):
            task = task()
        if not isinstance(task, Task):
            raise TypeError(f"register_task takes a Task or Task subclass, got {task!r}")
        if task._app is None:
            task._app = self
        return self.tasks.register(task)

    # -- connections -------------------------------------------------------------------
    @property
    def broker_url(self) -> str:
        url = self.conf.broker_url
        if not url:
            from engine import embedded
            url = embedded.ensure_running()
            self.conf.update(broker_url=url)
        return url

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = connect(self.broker_url, conf=self.conf)
        return self._client

    @property
    def aclient(self) -> "redis.asyncio.Redis":
        """The ``redis.asyncio`` client of the running event loop: one per app per loop,
        made on first use (``engine.aio``; RuntimeError outside a running loop)."""
        from engine import aio
        return aio.client(self)

    def new_client(self) -> redis.Redis:
        """A client with a connection pool of its own (for blocking reads)."""
        return connect(self.broker_url, conf=self.conf)

    @property
    def signer(self) -> signing.Signer | None:
        """The ``security_key`` signer, or None when messages are not signed."""
        if self._signer is False:
            self._signer = signing.from_setting(self.conf.security_key)
        return self._signer   # type: ignore[return-value]

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            self._broker = Broker(self.client, prefix=self.conf.key_prefix, signer=self.signer)
        return self._broker

    @property
    def backend(self) -> ResultBackend:
        if self._backend is None:
            url = self.conf.result_backend
            if url and url != self.broker_url:
                client = self._backend_client = connect(url, conf=self.conf)
            else:
                client = self.client
            self._backend = ResultBackend(client, prefix=self.conf.key_prefix,
                                          expires=self.conf.result_expires)
        return self._backend

    def close(self) -> None:
        for owner in (self._broker, self._backend):
            if owner is not None:
                owner.close()
        for client in (self._client, self._backend_client):
            if client is not None:
                client.close()
        self._client = self._backend_client = None
        self._broker = None
        self._backend = None
        self._signer = False

    # -- sending -----------------------------------------------------------------------
    def _body(self, task_name: str, args: Any, kwargs: dict, *, task: Task | None,
              countdown: float | None = None, eta: Any = None, expires: Any = None,
              soft_time_limit: float | None = None, time_limit: float | None = None,
              task_id: str | None = None, ignore_result: bool | None = None,
              headers: dict | None = None, unique: str | None = None, priority: int = 0
              ) -> tuple[str, bytes, float | None]:
        task_id = task_id or str(uuid.uuid4())
        if countdown is not None:
            _finite("countdown", countdown)
        when = _absolute(eta, "eta") if eta is not None else (
            time.time() + countdown if countdown else None)
        if expires is None and task is not None:
            expires = task.expires
        if ignore_result is None:
            ignore_result = bool(task and task.ignore_result)
        if not isinstance(args, (list, tuple)):
            raise TypeError(f"{task_name}: args must be a list or tuple, got {type(args).__name__}")
        if not isinstance(kwargs, dict):
            raise TypeError(f"{task_name}: kwargs must be a dict, got {type(kwargs).__name__}")
        if (soft_time_limit is not None and time_limit is not None
                and soft_time_limit > time_limit):
            raise ValueError(f"{task_name}: soft_time_limit ({soft_time_limit}) is past "
                             f"time_limit ({time_limit})")
        if headers is not None and not isinstance(headers, dict):
            raise TypeError(f"{task_name}: headers must be a dict, got {type(headers).__name__}")
        body = message.encode_message(
            task_id, task_name, args, kwargs, eta=when,
            expires=_absolute(expires, "expires") if expires is not None else None,
            soft=soft_time_limit, hard=time_limit, ignore_result=ignore_result,
            headers=headers, unique=unique, priority=priority)
        return task_id, body, when

    def send(self, task: Task, args: Any, kwargs: dict, *, queue: str | None = None,
             **options: Any) -> AsyncResult:
        if task.typing:
            task.check_arguments(args, kwargs)
        if self._send_settings().eager:
            return task.apply(args, kwargs, task_id=options.get("task_id"),
                              headers=options.get("headers"))
        return self._publish(task.name, task, args, kwargs, queue, options)

    def send_task(self, name: str, args: Any = (), kwargs: dict | None = None, *,
                  queue: str | None = None, **options: Any) -> AsyncResult:
        """Send by name; the task need not be importable here."""
        return self._publish(name, self.tasks.get(name), args, kwargs or {}, queue, options)

    def apply_here(self, task: Task, args: list, kwargs: dict, *, task_id: str | None,
                   headers: dict | None, throw: bool | None) -> Any:
        """``Task.apply``: run it in this process (``engine.eager``), its result in memory."""
        from engine import eager
        return eager.apply(task, args, kwargs, task_id=task_id, headers=headers, throw=throw)

    def _publish(self, name: str, task: Task | None, args: Any, kwargs: dict,
                 queue: str | None, options: dict) -> AsyncResult:
        queue = self.route(name, task, args, kwargs, queue, options)
        priority = options["priority"] = check_priority(options.get("priority")) or (
            task.priority if task is not None else 0)
        unique_for = options.pop("unique_for", None) or (
            task.unique_for if task is not None else None)
        if unique_for:
            return self._send_unique(name, task, args, kwargs, queue, unique_for, options)
        if signals.before_task_publish.receivers or signals.after_task_publish.receivers:
            return signals.publish(self, name, task, args, kwargs, queue, options,
                                   ignore_result=ignored(task, options))
        task_id, body, when = self._body(name, args, kwargs, task=task, **options)
        self._enqueue(name, task_id, queue, body, when, priority)
        return AsyncResult(task_id, self, task_name=name, ignore_result=ignored(task, options))

    def _send_unique(self, name: str, task: Task | None, args: Any, kwargs: dict,
                     queue: str, seconds: float, options: dict) -> AsyncResult:
        """Send unless the same task with the same arguments is pending or running (at
        most ``seconds``): then the first one's result handle, and nothing is sent."""
        from engine import flow
        task_id = options.pop("task_id", None) or str(uuid.uuid4())
        try:
            key = flow.Keys(self.broker.keys.prefix).unique(name, args, kwargs)
        except (TypeError, ValueError, OverflowError):
            message.check_arguments(name, args, kwargs)   # raises, naming the argument
            raise
        with self._sending(task_id):
            holder = flow.claim_unique(self, key, task_id, seconds)
        if holder is not None:
            return AsyncResult(holder, self, task_name=name)
        _, body, when = self._body(name, args, kwargs, task=task, task_id=task_id,
                                   unique=key, **options)
        self._enqueue(name, task_id, queue, body, when, options.get("priority", 0))
        return AsyncResult(task_id, self, task_name=name, ignore_result=ignored(task, options))

    def route(self, name: str, task: Task | None, args: Any, kwargs: dict,
              queue: str | None, options: dict) -> str:
        """The queue a send goes to; ``options`` completed from ``task_routes``
        (``engine.routing``: Celery's precedence)."""
        settings = self._send_settings()
        if settings.routes is None:
            return queue or (task.queue if task is not None else None) or settings.queue
        return settings.routes.resolve(name, task, args, kwargs, queue, options,
                                       default=settings.queue)

    def _routes(self) -> routing.Routes | None:
        return self._send_settings().routes

    def _send_settings(self) -> "_SendSettings":
        """The settings every send reads, read again only after a write to ``conf``
        (a layered lookup costs about a microsecond, a send a few)."""
        cached = self._send_cache
        conf = self.conf
        if cached is None or cached.version != conf._version:
            setting = conf.get("task_routes")
            routes = None
            if setting:
                # compiled once per value set (a dict changed in place is not seen again)
                routes = (cached.routes if cached is not None and cached.setting is setting
                          else routing.Routes(setting))
            cached = self._send_cache = _SendSettings(
                conf._version, conf.task_default_queue, bool(conf.get("task_always_eager")),
                setting, routes)
        return cached

    def _enqueue(self, name: str, task_id: str, queue: str, body: bytes,
                 when: float | None, priority: int = 0) -> None:
        if tracing.ENABLED:   # ENGINE_TRACING=1: a 'send' span, its traceparent in the body
            with tracing.SendSpan(name, task_id, queue, body) as body:
                with self._sending(task_id):
                    self.broker.enqueue(queue, body, eta=when, priority=priority)
            return
        with self._sending(task_id):
            self.broker.enqueue(queue, body, eta=when, priority=priority)

    def send_many(self, task: Task, calls: Iterable[Any], *,
                  queue: str | None = None) -> list[AsyncResult]:
        routes = self._routes()
        routed: dict = {}
        if routes is None or routes.by_name_only:
            queue = self.route(task.name, task, (), {}, queue, routed)
        if (signals.before_task_publish.receivers or signals.after_task_publish.receivers
                or self._send_settings().eager or any(routed.values())
                or (routes is not None and not routes.by_name_only)):
            # per-call work (publish receivers, eager runs, routes reading the arguments or
            # setting options): one send each, after checking every call first
            pairs = [_call_pair(call) for call in calls]
            if task.typing:
                for index, (args, kwargs) in enumerate(pairs):
                    _numbered(index, task.check_arguments, args, kwargs)
            return [self.send(task, args, kwargs, queue=queue) for args, kwargs in pairs]
        items, results = [], []
        ignore = task.ignore_result
        expires = _absolute(task.expires, "expires") if task.expires is not None else None
        encode = message.encode_message
        name = task.name
        ids = message.uuid4_strings()
        check = task.check_arguments if task.typing else None
        for index, call in enumerate(calls):
            if (isinstance(call, tuple) and len(call) == 2 and isinstance(call[1], dict)
                    and isinstance(call[0], (list, tuple))):
                args, kwargs = call      # (the test of _call_pair, inline: the hot loop)
            else:
                args, kwargs = call, {}
            task_id = next(ids)
            try:
                if check is not None:
                    check(args, kwargs)
                body = encode(task_id, name, args, kwargs, expires=expires, ignore_result=ignore)
            except TypeError as exc:
                raise TypeError(f"call {index}: {exc}") from None
            items.append((queue, body, None))
            results.append(AsyncResult(task_id, self, task_name=name, ignore_result=ignore))
        # everything is encoded before the first byte is sent: a bad argument sends nothing
        try:
            self.broker.enqueue_many(items)
        except EnqueueError as exc:
            sent = [results[i] for i in exc.sent]
            unsent = [results[i] for i in exc.unsent]
            what = (f"{len(sent)} of {len(results)} calls were queued, {len(unsent)} were "
                    f"not (see .sent, .unsent and .unsent_indexes)")
            raise self._send_error(exc.error, sent=sent, unsent=unsent,
                                   unsent_indexes=exc.unsent, what=what) from exc.error
        return results

    @contextlib.contextmanager
    def _sending(self, task_id: str):
        """Turn Redis being away (after the client's retry budget) or refusing the write
        into one clear error."""
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            result = AsyncResult(task_id, self)
            raise self._send_error(exc, sent=[], unsent=[result], unsent_indexes=[0],
                                   what=f"task {task_id} was not queued") from exc

    def _send_error(self, exc: Exception, *, sent: list[AsyncResult],
                    unsent: list[AsyncResult], unsent_indexes: list[int],
                    what: str) -> BrokerUnavailable:
        url = urls.redact(self.broker_url)
        if isinstance(exc, redis.OutOfMemoryError):
            kind: type[BrokerUnavailable] = BrokerOutOfMemory
            text = (f"the broker at {url} is out of memory: Redis refused the write because "
                    f"maxmemory is reached and its maxmemory-policy evicts nothing; {what}. "
                    f"Free memory (drain queues, trim dead letters) or raise maxmemory ({exc})")
        elif isinstance(exc, redis.ResponseError):
            kind, text = BrokerUnavailable, f"the broker at {url} refused the write: {exc}; {what}"
        else:
            kind, text = BrokerUnavailable, (
                f"cannot reach the broker at {url}: gave up after "
                f"{self.conf.broker_connection_retries} retries ({exc}); {what}")
        return kind(text, sent=sent, unsent=unsent, unsent_indexes=unsent_indexes)

    def signature(self, name: str, args: Any = (), kwargs: dict | None = None, *,
                  immutable: bool = False, **options: Any):
        """A Signature of the task ``name`` (which need not be importable here)."""
        from engine.canvas import Signature
        return Signature(name, args, kwargs, options, immutable=immutable, app=self)

    def gather(self, results: Iterable[AsyncResult], timeout: float | None = None,
               propagate: bool = True) -> list[Any]:
        """Wait for many results at once."""
        return ResultSet(results).get(timeout=timeout, propagate=propagate)

    async def agather(self, results: Iterable[AsyncResult], timeout: float | None = None,
                      propagate: bool = True) -> list[Any]:
        """``gather`` from a running event loop, on ``redis.asyncio`` (``self.aclient``)."""
        return await ResultSet(results).aget(timeout=timeout, propagate=propagate)

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, self)

    @property
    def control(self) -> Any:
        from engine.inspect import Control   # Celery's app.control and .inspect()
        return Control(self)

    def revoke(self, task_id: str, *, terminate: bool = False) -> None:
        from engine import control
        control.revoke(self, task_id, terminate=terminate)


@dataclass(slots=True)
class _SendSettings:
    version: int
    queue: str
    eager: bool
    setting: Any
    routes: routing.Routes | None


def ignored(task: Task | None, options: dict) -> bool:
    """Whether a send's result is ignored (the option, else the task's)."""
    ignore = options.get("ignore_result")
    return bool(task is not None and task.ignore_result) if ignore is None else bool(ignore)


def _call_pair(call: Any) -> tuple[Any, dict]:
    """A ``delay_many`` item: an args tuple, or (args, kwargs): a 2-tuple ending in a dict."""
    if (isinstance(call, tuple) and len(call) == 2 and isinstance(call[1], dict)
            and isinstance(call[0], (list, tuple))):
        return call
    return call, {}


def _numbered(index: int, check: Callable, *args: Any) -> None:
    try:
        check(*args)
    except TypeError as exc:
        raise TypeError(f"call {index}: {exc}") from None


def load_app(target: str) -> Engine:
    """``module`` or ``module:attribute`` -> the Engine, its modules imported
    (``engine.loader``); ConfigurationError otherwise."""
    return loader.load_app(target)


def shared_task(fn: Callable | None = None, **options: Any) -> Any:
    """Declare a task without an app at hand: every app, existing or later, registers it,
    and it sends through the current app."""
    def declare(f: Callable) -> Task:
        SHARED.append((f, options))
        opts = dict(options)
        task = (opts.pop("base", None) or Task)(f, None, **opts)
        for app in APPS:
            app.tasks.register(task)
        return task
    if fn is not None and callable(fn) and not options:
        return declare(fn)
    return declare


set_default_factory(lambda: Engine("default"))
