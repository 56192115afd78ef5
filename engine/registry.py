"""The task registry: task name -> Task, one per app, plus the tasks declared with
``shared_task`` before or after any app exists."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from engine.task import Task

#: functions decorated with ``shared_task``: (function, options); every app registers them
SHARED: list[tuple[Callable, dict]] = []


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
