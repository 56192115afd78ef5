"""The ``Engine`` app: configuration, the task registry, connections, and sending.

``load_app`` turns an ``-A`` target into the app. Connections are made on first use, so an
app can be defined at import time without any Redis running.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import logging
import os
import sys
import threading
import time
import uuid
from typing import Any, Callable, Iterable

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from engine import message
from engine.broker import Broker
from engine.config import Config
from engine.exceptions import BrokerUnavailable, ConfigurationError
from engine.registry import SHARED, TaskRegistry
from engine.results import AsyncResult, ResultBackend, ResultSet
from engine.task import Task

log = logging.getLogger("engine")

_apps: list["Engine"] = []
_current: "Engine | None" = None


def current_app() -> "Engine":
    """The most recently created app (a default one is made when none exists)."""
    global _current
    if _current is None:
        _current = Engine("default")
    return _current


class Engine:
    """A task app. ``broker``/``backend`` override configuration; with no broker set
    anywhere the embedded Redis under ``$ENGINE_HOME`` is started and used."""

    def __init__(self, main: str = "__main__", *, broker: str | None = None,
                 backend: str | None = None, include: Iterable[str] = (),
                 **settings: Any) -> None:
        global _current
        self.main = main
        self.conf = Config(**settings)
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        self.tasks = TaskRegistry()
        self.include = list(include)
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._backend_client: redis.Redis | None = None
        self._broker: Broker | None = None
        self._backend: ResultBackend | None = None
        for fn, options in SHARED:
            self._register(fn, options, app=None)
        from engine.canvas import builtins
        builtins.register(self)
        _apps.append(self)
        _current = self

    def __repr__(self) -> str:
        return f"<Engine {self.main}>"

    # -- configuration -----------------------------------------------------------------
    def config_from_object(self, obj: Any, *, namespace: str | None = None) -> None:
        self.conf.from_object(obj, namespace=namespace)

    def autodiscover_tasks(self, packages: Iterable[str], related_name: str = "tasks") -> None:
        """Import ``<package>.<related_name>`` for each package (missing modules are skipped,
        errors inside them are not)."""
        for package in packages:
            name = f"{package}.{related_name}"
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name not in (name, package):
                    raise

    def import_includes(self) -> None:
        for name in self.include:
            importlib.import_module(name)

    # -- tasks -------------------------------------------------------------------------
    def task(self, fn: Callable | None = None, **options: Any) -> Any:
        """``@app.task`` or ``@app.task(name=..., queue=..., ...)``."""
        if fn is not None and callable(fn) and not options:
            return self._register(fn, {}, app=self)
        return lambda f: self._register(f, options, app=self)

    def _register(self, fn: Callable, options: dict, *, app: "Engine | None") -> Task:
        task = Task(fn, app, **options)
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

    def new_client(self) -> redis.Redis:
        """A client with a connection pool of its own (for blocking reads)."""
        return connect(self.broker_url, conf=self.conf)

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            self._broker = Broker(self.client, prefix=self.conf.key_prefix)
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

    # -- sending -----------------------------------------------------------------------
    def _body(self, task_name: str, args: Any, kwargs: dict, *, task: Task | None,
              countdown: float | None = None, eta: Any = None, expires: Any = None,
              soft_time_limit: float | None = None, time_limit: float | None = None,
              task_id: str | None = None, ignore_result: bool | None = None
              ) -> tuple[str, bytes, float | None]:
        task_id = task_id or str(uuid.uuid4())
        when = _absolute(eta) if eta is not None else (
            time.time() + countdown if countdown else None)
        if expires is None and task is not None:
            expires = task.expires
        if ignore_result is None:
            ignore_result = bool(task and task.ignore_result)
        if not isinstance(args, (list, tuple)):
            raise TypeError(f"{task_name}: args must be a list or tuple, got {type(args).__name__}")
        if not isinstance(kwargs, dict):
            raise TypeError(f"{task_name}: kwargs must be a dict, got {type(kwargs).__name__}")
        body = message.encode_message(
            task_id, task_name, args, kwargs, eta=when,
            expires=_absolute(expires) if expires is not None else None,
            soft=soft_time_limit, hard=time_limit, ignore_result=ignore_result)
        return task_id, body, when

    def send(self, task: Task, args: Any, kwargs: dict, *, queue: str | None = None,
             **options: Any) -> AsyncResult:
        queue = queue or task.queue or self.conf.task_default_queue
        task_id, body, when = self._body(task.name, args, kwargs, task=task, **options)
        with self._sending():
            self.broker.enqueue(queue, body, eta=when)
        return AsyncResult(task_id, self, task_name=task.name)

    def send_task(self, name: str, args: Any = (), kwargs: dict | None = None, *,
                  queue: str | None = None, **options: Any) -> AsyncResult:
        """Send by name; the task need not be importable here."""
        task = self.tasks.get(name)
        queue = queue or (task.queue if task else None) or self.conf.task_default_queue
        task_id, body, when = self._body(name, args, kwargs or {}, task=task, **options)
        with self._sending():
            self.broker.enqueue(queue, body, eta=when)
        return AsyncResult(task_id, self, task_name=name)

    def send_many(self, task: Task, calls: Iterable[Any], *,
                  queue: str | None = None) -> list[AsyncResult]:
        queue = queue or task.queue or self.conf.task_default_queue
        items, results = [], []
        ignore = task.ignore_result
        expires = _absolute(task.expires) if task.expires is not None else None
        encode = message.encode_message
        name = task.name
        ids = _uuid4_strings()
        for index, call in enumerate(calls):
            if (isinstance(call, tuple) and len(call) == 2 and isinstance(call[1], dict)
                    and isinstance(call[0], (list, tuple))):
                args, kwargs = call
            else:
                args, kwargs = call, {}
            task_id = next(ids)
            try:
                body = encode(task_id, name, args, kwargs, expires=expires, ignore_result=ignore)
            except TypeError as exc:
                raise TypeError(f"call {index}: {exc}") from None
            items.append((queue, body, None))
            results.append(AsyncResult(task_id, self, task_name=name))
        # everything is encoded before the first byte is sent: a bad argument sends nothing
        with self._sending():
            self.broker.enqueue_many(items)
        return results

    @contextlib.contextmanager
    def _sending(self):
        """Turn Redis being away (after the client's retry budget) into one clear error."""
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerUnavailable(
                f"cannot reach the broker at {self.conf.broker_url}: gave up after "
                f"{self.conf.broker_connection_retries} retries ({exc})") from exc

    def signature(self, name: str, args: Any = (), kwargs: dict | None = None, *,
                  immutable: bool = False, **options: Any):
        """A Signature of the task ``name`` (which need not be importable here)."""
        from engine.canvas import Signature
        return Signature(name, args, kwargs, options, immutable=immutable, app=self)

    def gather(self, results: Iterable[AsyncResult], timeout: float | None = None,
               propagate: bool = True) -> list[Any]:
        """Wait for many results at once."""
        return ResultSet(results).get(timeout=timeout, propagate=propagate)

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, self)

    def revoke(self, task_id: str, *, terminate: bool = False) -> None:
        from engine import control
        control.revoke(self, task_id, terminate=terminate)


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _uuid4_strings(block: int = 256):
    """Endless random (version 4) UUID strings, as ``str(uuid.uuid4())`` spells them, from
    one ``os.urandom`` call per ``block`` ids: a third of the cost of ``uuid4()`` each, which
    was a sixth of ``send_many``'s time."""
    urandom, variant = os.urandom, _VARIANT
    while True:
        raw = urandom(16 * block).hex()
        for i in range(0, 32 * block, 32):
            h = raw[i:i + 32]
            yield f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:]}"


def connect(url: str, *, conf: Config | None = None) -> redis.Redis:
    """A client that rides out short outages: a command that meets a dropped connection
    or a restarting Redis is retried with doubling waits, then raises ConnectionError.
    No socket timeout: blocking reads (BLMOVE in ``get``, XREADGROUP) wait longer."""
    conf = conf or Config()
    retry = Retry(ExponentialBackoff(cap=float(conf.broker_connection_backoff_max), base=0.1),
                  int(conf.broker_connection_retries))
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=5, retry=retry,
                                    retry_on_error=[redis.ConnectionError, redis.TimeoutError])
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL {url!r}: {exc}") from None


def _absolute(when: Any) -> float:
    """Seconds from now or a datetime -> unix seconds."""
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None:
            when = when.astimezone()   # naive means local time
        return when.timestamp()
    if isinstance(when, (int, float)):
        return time.time() + float(when)
    raise TypeError(f"expected seconds or a datetime, got {type(when).__name__}")


def load_app(target: str) -> Engine:
    """``module`` or ``module:attribute`` -> the Engine; ConfigurationError otherwise."""
    if not target:
        raise ConfigurationError("no app given: use -A module[:attribute] or set ENGINE_APP")
    module_name, _, attr = target.partition(":")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")   # like python -m: the current directory is importable
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(f"cannot import app module {module_name!r}: {exc}") from None
        raise
    if attr:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}")
        if not isinstance(obj, Engine):
            raise ConfigurationError(f"{target} is a {type(obj).__name__}, not an Engine app")
        app = obj
    else:
        found = [v for v in vars(module).values() if isinstance(v, Engine)]
        if not found:
            raise ConfigurationError(f"module {module_name!r} defines no Engine app "
                                     f"(use -A {module_name}:attribute)")
        app = found[0]
    app.import_includes()
    return app


def shared_task(fn: Callable | None = None, **options: Any) -> Any:
    """Declare a task without an app at hand: every app, existing or later, registers it,
    and it sends through the current app."""
    def declare(f: Callable) -> Task:
        SHARED.append((f, options))
        task = Task(f, None, **options)
        for app in _apps:
            app.tasks.register(task)
        return task
    if fn is not None and callable(fn) and not options:
        return declare(fn)
    return declare
