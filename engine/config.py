"""Settings and their sources: defaults < config_from_object < conf.update < environment < CLI.

``Config`` keeps each source in its own layer so that a later source always wins no matter
in which order they were applied. Names are lower case here and ``ENGINE_`` + upper case in
settings modules and the environment.
"""

from __future__ import annotations

import importlib
import os
import types
from typing import Any, Iterator, Mapping

from engine.exceptions import ConfigurationError

DEFAULTS: dict[str, Any] = {
    "broker_url": None,
    "result_backend": None,          # None: the broker's Redis
    "result_expires": 86400,         # seconds
    "result_exception_modules": (),  # modules a producer may import to rebuild a failure's type
    "key_prefix": "engine",
    "task_default_queue": "default",
    "task_soft_time_limit": None,
    "task_time_limit": None,
    "task_acks_late": True,
    "task_max_deliveries": 10,       # poison threshold
    "task_track_started": False,
    "task_routes": None,             # dict, router, "pkg.mod:router" or a list (engine.routing)
    "task_always_eager": False,      # delay/apply_async run the task here (Task.apply)
    "task_eager_propagates": False,  # an eager task's exception is raised by apply
    "worker_pool": "prefork",
    "worker_concurrency": os.cpu_count() or 1,
    "worker_prefetch": 64,           # messages held per slot at most (fewer for long tasks)
    "worker_max_tasks_per_child": None,
    "worker_max_memory_per_child": None,   # KiB
    "worker_lost_after": 30.0,       # seconds without heartbeat before a worker counts as dead
    "worker_heartbeat": 2.0,
    "worker_shutdown_timeout": 86400.0,   # how long a warm shutdown waits for running tasks         # seconds between heartbeats
    "worker_lanes": None,            # list of "QUEUES=POOL:CONCURRENCY" strings
    "worker_send_events": True,
    "worker_import_in_child": False,
    "worker_processes": 1,           # supervisors one ``engine run`` starts (engine.worker.fleet)
    "worker_metrics_port": None,     # a Prometheus endpoint of the worker (0: any free port)
    "worker_metrics_address": "0.0.0.0",
    "worker_log_format": "text",     # or "json": one JSON object a line (engine.logs)
    "beat_schedule": {},
    "beat_lease": 5.0,             # seconds a dead beat leader keeps the lock
    "timezone": "UTC",
    "events_maxlen": 10000,
    "revoke_expires": 3600,          # seconds a revocation is remembered
    "broker_connection_retries": 6,  # retries of a command while Redis is unreachable
    "broker_connection_backoff_max": 2.0,   # seconds, cap of the doubling wait between them
    "broker_connection_retry": True,        # a starting worker waits for an unreachable broker
    "broker_connection_max_retries": 100,   # ... this many retries (0 or None: forever)
    "broker_transport_options": {},  # sentinel:// URLs: master_name, sentinel_kwargs
    "security_key": None,            # "k1,k2": the first signs messages, all verify (signing.py)
    "dashboard_url_prefix": "",      # engine dashboard --url-prefix: e.g. "/ops/engine"
}

#: Celery's names from before 4.0 (its "new lowercase settings" table, and the 3.x
#: spellings it still read) -> ours, for the settings we have: a settings module of an
#: older Celery application is read as Celery reads it. A new name given as well wins.
OLD_NAMES = {
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_RESULT_EXPIRES": "result_expires",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERY_TIMEZONE": "timezone",
    "CELERYBEAT_SCHEDULE": "beat_schedule",
    "CELERY_SECURITY_KEY": "security_key",
    "CELERY_ACKS_LATE": "task_acks_late",
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERY_TASK_ALWAYS_EAGER": "task_always_eager",
    "CELERY_EAGER_PROPAGATES": "task_eager_propagates",
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": "task_eager_propagates",
    "CELERY_DEFAULT_QUEUE": "task_default_queue",
    "CELERY_ROUTES": "task_routes",
    "CELERYD_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERYD_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERY_TRACK_STARTED": "task_track_started",
    "CELERY_TASK_TRACK_STARTED": "task_track_started",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_POOL": "worker_pool",
    "CELERYD_MAX_TASKS_PER_CHILD": "worker_max_tasks_per_child",
    "CELERYD_MAX_MEMORY_PER_CHILD": "worker_max_memory_per_child",
    "CELERY_SEND_EVENTS": "worker_send_events",
}

#: environment variable -> setting (ENGINE_APP and ENGINE_CUSTOM_POOL are read by the CLI
#: and pools.resolve; they are listed so that ``conf`` reports them)
ENVIRONMENT = {
    "ENGINE_BROKER_URL": "broker_url",
    "ENGINE_RESULT_BACKEND": "result_backend",
    "ENGINE_KEY_PREFIX": "key_prefix",
    "ENGINE_SECURITY_KEY": "security_key",
    "ENGINE_DASHBOARD_URL_PREFIX": "dashboard_url_prefix",
}


class Config(Mapping[str, Any]):
    """Layered settings with attribute and item access."""

    LAYERS = ("defaults", "object", "update", "environment", "cli")

    def __init__(self, **initial: Any) -> None:
        self._layers: dict[str, dict[str, Any]] = {name: {} for name in self.LAYERS}
        self._layers["defaults"].update(DEFAULTS)
        self._layers["update"].update(initial)
        self._pending: list[tuple[Any, str]] = []   # from_object sources not read yet
        #: bumped by every write through this class, so that hot paths (the app's send
        #: path) may keep settings they read until it moves
        self._version = 0

    # -- sources -----------------------------------------------------------------------
    def update(self, other: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        values = dict(other or {}, **kwargs)
        old = {OLD_NAMES[k]: v for k, v in values.items() if k in OLD_NAMES}
        self._layers["update"].update(old)
        self._layers["update"].update({k.lower(): v for k, v in values.items()
                                       if k not in OLD_NAMES})
        self._version += 1

    def from_object(self, obj: Any, *, namespace: str | None = None) -> None:
        """Settings from a mapping, a module, a ``"module"`` or ``"module:attribute"`` path,
        or any object with attributes (a Django settings object: ``"django.conf:settings"``).
        With ``namespace``, only ``NAMESPACE_*`` names, with the prefix dropped; without,
        known setting names and upper-case names.

        A path is imported now (a bad one fails here); the object's names are read at the
        first lookup, as Celery does: Django's settings may not be configured yet while the
        module that makes the app is being imported."""
        if isinstance(obj, str):
            obj = import_object(obj)
        self._pending.append((obj, f"{namespace}_" if namespace else ""))
        self._version += 1

    def _read_pending(self) -> None:
        pending, self._pending = self._pending, []
        self._version += 1
        layer = self._layers["object"]
        for obj, prefix in pending:
            try:
                source = _names_of(obj)
            except Exception as exc:   # e.g. Django's ImproperlyConfigured
                raise ConfigurationError(f"cannot read settings from {obj!r}: "
                                         f"{type(exc).__name__}: {exc}") from None
            read, old = {}, {}
            for key, value in source.items():
                if not isinstance(key, str) or key.startswith("_"):
                    continue
                if prefix:
                    if key.startswith(prefix):
                        read[key[len(prefix):].lower()] = value
                elif key in OLD_NAMES:
                    old[OLD_NAMES[key]] = value
                elif key.lower() in DEFAULTS or key.isupper():
                    read[key.lower()] = value
            layer.update(old)
            layer.update(read)     # the new name, where both are given

    def from_cli(self, **values: Any) -> None:
        """Flags given on the command line (None means 'not given')."""
        self._layers["cli"].update({k: v for k, v in values.items() if v is not None})
        self._version += 1

    def _environment(self) -> dict[str, Any]:
        env = {}
        for var, name in ENVIRONMENT.items():
            value = os.environ.get(var)
            if value:
                env[name] = value
        return env

    # -- lookup ------------------------------------------------------------------------
    def _merged(self) -> dict[str, Any]:
        if self._pending:
            self._read_pending()
        merged: dict[str, Any] = {}
        for name in self.LAYERS:
            merged.update(self._environment() if name == "environment" else self._layers[name])
        return merged

    def __getitem__(self, key: str) -> Any:
        if self._pending:
            self._read_pending()
        layers = self._layers
        cli = layers["cli"]
        if key in cli:
            return cli[key]
        for var, name in ENVIRONMENT.items():
            if name == key and os.environ.get(var):
                return os.environ[var]
        for name in ("update", "object", "defaults"):
            if key in layers[name]:
                return layers[name][key]
        raise KeyError(key)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no setting named {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_"):
            object.__setattr__(self, key, value)
        else:
            self._layers["update"][key] = value
            self._version += 1

    def __iter__(self) -> Iterator[str]:
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __repr__(self) -> str:
        return f"Config({self._merged()!r})"


def import_object(path: str, what: str = "settings") -> Any:
    """``package.module:name`` (or a dotted ``package.module.name``, or a module alone)
    -> the object; ConfigurationError naming ``what`` otherwise."""
    module_name, sep, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        if sep or "." not in path:
            raise ConfigurationError(f"cannot import {what} {path!r}: {exc}") from None
        module_name, _, attr = path.rpartition(".")   # the dotted form: the last part
        try:
            obj = importlib.import_module(module_name)
        except ImportError:
            raise ConfigurationError(f"cannot import {what} {path!r}: {exc}") from None
    for part in filter(None, attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(f"{what} {path!r}: {module_name} has no "
                                     f"{attr!r}") from None
    return obj


def _names_of(obj: Any) -> Mapping[str, Any]:
    if isinstance(obj, Mapping):
        return obj
    if isinstance(obj, types.ModuleType):
        return vars(obj)
    # any other object by the names ``dir`` lists: instance and class attributes,
    # properties, and what a proxy forwards (Django's LazySettings)
    return {name: getattr(obj, name) for name in dir(obj) if not name.startswith("_")}
