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
    def register(self, task: "Task") -> "Task":
        self[task.name] = task
        return task

    def __missing__(self, name: str) -> "Task":
        raise NotRegistered(name)

    def names(self) -> list[str]:
        return sorted(self)
