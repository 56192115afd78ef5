"""engine: a task engine whose worker is a supervisor driving interchangeable pools.

Public names are loaded on first use, so that ``engine run --pool gevent`` can monkey-patch
the process before redis-py or threading are imported.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Engine": "engine.app",
    "shared_task": "engine.app",
    "current_app": "engine.app",
    # through engine.app, which defines the current app these fall back on
    "AsyncResult": "engine.app",
    "ResultSet": "engine.app",
    "Task": "engine.app",
    "current_task": "engine.task",
    "get_task_logger": "engine.task",
    "signals": "engine.signals",
    "crontab": "engine.schedules",
    "signature": "engine.canvas",
    "Signature": "engine.canvas",
    "chain": "engine.canvas",
    "group": "engine.canvas",
    "chord": "engine.canvas",
    "chunks": "engine.canvas",
    "xmap": "engine.canvas",
    "xstarmap": "engine.canvas",
    "GroupResult": "engine.canvas",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    import importlib
    imported = importlib.import_module(module)
    value = imported if module == f"engine.{name}" else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_PUBLIC))
