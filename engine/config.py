"""Settings and their sources: defaults < config_from_object < conf.update < environment < CLI.

``Config`` keeps each source in its own layer so that a later source always wins no matter
in which order they were applied. Names are lower case here and ``ENGINE_`` + upper case in
settings modules and the environment.
"""

from __future__ import annotations

import importlib
import os
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
    "beat_schedule": {},
    "beat_lease": 5.0,             # seconds a dead beat leader keeps the lock
    "timezone": "UTC",
    "events_maxlen": 10000,
    "revoke_expires": 3600,          # seconds a revocation is remembered
    "broker_connection_retries": 6,  # retries of a command while Redis is unreachable
    "broker_connection_backoff_max": 2.0,   # seconds, cap of the doubling wait between them
}

#: environment variable -> setting (ENGINE_APP and ENGINE_CUSTOM_POOL are read by the CLI
#: and pools.resolve; they are listed so that ``conf`` reports them)
ENVIRONMENT = {
    "ENGINE_BROKER_URL": "broker_url",
    "ENGINE_RESULT_BACKEND": "result_backend",
    "ENGINE_KEY_PREFIX": "key_prefix",
}


class Config(Mapping[str, Any]):
    """Layered settings with attribute and item access."""

    LAYERS = ("defaults", "object", "update", "environment", "cli")

    def __init__(self, **initial: Any) -> None:
        self._layers: dict[str, dict[str, Any]] = {name: {} for name in self.LAYERS}
        self._layers["defaults"].update(DEFAULTS)
        self._layers["update"].update(initial)

    # -- sources -----------------------------------------------------------------------
    def update(self, other: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        values = dict(other or {}, **kwargs)
        self._layers["update"].update({k.lower(): v for k, v in values.items()})

    def from_object(self, obj: Any, *, namespace: str | None = None) -> None:
        if isinstance(obj, str):
            try:
                obj = importlib.import_module(obj)
            except ImportError as exc:
                raise ConfigurationError(f"cannot import settings {obj!r}: {exc}") from None
        prefix = f"{namespace}_" if namespace else ""
        source = obj if isinstance(obj, Mapping) else vars(obj)
        layer = self._layers["object"]
        for key, value in source.items():
            if not isinstance(key, str) or key.startswith("_"):
                continue
            if prefix:
                if key.startswith(prefix):
                    layer[key[len(prefix):].lower()] = value
            elif key.lower() in DEFAULTS or key.isupper():
                layer[key.lower()] = value

    def from_cli(self, **values: Any) -> None:
        """Flags given on the command line (None means 'not given')."""
        self._layers["cli"].update({k: v for k, v in values.items() if v is not None})

    def _environment(self) -> dict[str, Any]:
        env = {}
        for var, name in ENVIRONMENT.items():
            value = os.environ.get(var)
            if value:
                env[name] = value
        return env

    # -- lookup ------------------------------------------------------------------------
    def _merged(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for name in self.LAYERS:
            merged.update(self._environment() if name == "environment" else self._layers[name])
        return merged

    def __getitem__(self, key: str) -> Any:
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
