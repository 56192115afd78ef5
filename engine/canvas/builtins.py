"""The tasks every app registers for the canvas: ``engine.map`` and ``engine.starmap``
(what ``task.map``, ``task.starmap`` and ``task.chunks`` send): one message that calls a
task on each item in turn, in the worker's process, and returns the list of results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.canvas.plan import MAP, STARMAP
from engine.task import Task

if TYPE_CHECKING:
    from engine.app import Engine


def register(app: "Engine") -> None:
    from engine.canvas.signature import maybe_signature

    def map_items(task: dict, it: list) -> list[Any]:
        sig = maybe_signature(task, app=app)
        return [sig(item) for item in it]

    def starmap_items(task: dict, it: list) -> list[Any]:
        sig = maybe_signature(task, app=app)
        return [sig(*item) for item in it]

    # engine.Task, not the app's task_cls: that may not be importable yet (an app is made
    # while its own module is being imported), and these tasks need no hooks
    app.task(name=MAP, base=Task)(map_items)
    app.task(name=STARMAP, base=Task)(starmap_items)
