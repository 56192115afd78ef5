"""The task registry: task name -> Task, one per app, plus the tasks declared with
``shared_task`` before or after any app exists, and which app is the current one.

The current app lives here rather than in ``engine.app`` so that tasks and results can
find it without importing the app module (which imports them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.task import Task

#: functions decorated with ``shared_task``: (function, options); every app registers them
SHARED: list[tuple[Callable, dict]] = []
#: every app created, oldest first (``shared_task`` registers into each)
APPS: list["Engine"] = []


class _Current:
    app: "Engine | None" = None
    #: makes the default app when none exists (set by ``engine.app`` as it loads)
    default: Callable[[], "Engine"] | None = None


def set_current(app: "Engine") -> None:
    APPS.append(app)
    _Current.app = app


def current_app() -> "Engine":
    """The most recently created app (a default one is made when none exists)."""
    if _Current.app is None:
        factory: Any = _Current.default
        if factory is None:
            raise LookupError("no Engine app exists yet: create one with Engine(...)")
        _Current.app = factory()
    return _Current.app


def set_default_factory(factory: Callable[[], "Engine"]) -> None:
    _Current.default = factory


class NotRegistered(KeyError):
    """No task of that name in this app."""

    def __str__(self) -> str:
        return f"no task named {self.args[0]!r} is registered"


class TaskRegistry(dict):
    """Name -> Task. A lookup (``registry[name]``) that misses first asks ``on_miss`` (the
    app's pending autodiscovery) and looks again when it did anything; ``get`` does not."""

    def __init__(self, on_miss: "Callable[[], bool] | None" = None) -> None:
        super().__init__()
        self._on_miss = on_miss

    def register(self, task: "Task") -> "Task":
        self[task.name] = task
        return task

    def __missing__(self, name: str) -> "Task":
        if self._on_miss is not None and self._on_miss() and dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        raise NotRegistered(name)

    def names(self) -> list[str]:
        return sorted(self)


def app_or_current(app: "Engine | None") -> "Engine":
    """``app``, or the current app when it is None (tasks and signatures made without one)."""
    return app if app is not None else current_app()
