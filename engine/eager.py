"""Running a task here and now: ``Task.apply`` and ``task_always_eager``, with ``EagerResult``.

The run takes the worker's own path (``engine.worker.runner``: request, hooks, signals,
Retry, Reject, autoretry) in the calling thread; only the result stays in memory instead of
going through Redis, and the return value is not encoded (as in Celery). A retry runs again
at once with ``retries + 1`` (the countdown is not waited), until it succeeds, fails or
runs out of retries.
"""

from __future__ import annotations

import socket
import uuid
from typing import TYPE_CHECKING, Any

from engine.exceptions import Ignore
from engine.results import rebuild_exception
from engine.worker.runner import TaskRunner
from pools.base import FAILURE, REJECTED, RETRY, SUCCESS, Job, Outcome

if TYPE_CHECKING:
    from engine.task import Task


class _EagerRunner(TaskRunner):
    """The worker's runner, keeping the value or the exception object of the last run."""

    def __init__(self, app: Any, hostname: str) -> None:
        super().__init__(app, hostname)
        self.value: Any = None
        self.exc: BaseException | None = None

    def succeeded(self, task: "Task", job: Job, value: Any, start: float) -> Outcome:
        self.value, self.exc = value, None
        return Outcome(job.id, SUCCESS)

    def failed(self, task: "Task", job: Job, exc: BaseException, start: float) -> Outcome:
        self.value, self.exc = None, exc
        return super().failed(task, job, exc, start)


class EagerResult:
    """The result of a task run by ``apply``: already ready, nothing to wait for."""

    def __init__(self, id: str, state: str, value: Any = None, *, task_name: str | None = None,
                 exception: BaseException | None = None, traceback: str = "") -> None:
        self.id = id
        self.task_name = task_name
        self.state = self.status = state
        self._value = value
        self._exception = exception
        self.traceback = traceback or None

    def __repr__(self) -> str:
        return f"<EagerResult {self.id} {self.state}>"

    @property
    def result(self) -> Any:
        return self._value if self.state == SUCCESS else self._exception

    info = result

    def ready(self) -> bool:
        return self.state != RETRY

    def successful(self) -> bool:
        return self.state == SUCCESS

    def failed(self) -> bool:
        return self.state == FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True,
            disable_sync_subtasks: bool = True) -> Any:
        """The value, or the exception raised with ``propagate``. ``disable_sync_subtasks``
        is taken for Celery's signature: an eager result never waits."""
        if self.state == SUCCESS:
            return self._value
        if propagate and self._exception is not None:
            raise self._exception
        return self._exception

    def forget(self) -> None:
        pass


def apply(task: "Task", args: list, kwargs: dict, *, task_id: str | None = None,
          headers: dict | None = None, throw: bool | None = None) -> EagerResult:
    app = task.app
    if throw is None:
        throw = bool(app.conf.get("task_eager_propagates"))
    runner = _EagerRunner(app, socket.gethostname())
    job = Job(id=task_id or str(uuid.uuid4()), task=task.name, args=args, kwargs=kwargs,
              headers=headers, queue="")
    while True:
        outcome = runner.execute(job, task, eager=True)
        if outcome.state != RETRY:
            break
        job.retries += 1
    if isinstance(runner.exc, Ignore):
        return EagerResult(job.id, "IGNORED", task_name=task.name)
    if outcome.state == SUCCESS:
        return EagerResult(job.id, SUCCESS, runner.value, task_name=task.name)
    exc = runner.exc if runner.exc is not None else rebuild_exception(
        {"state": FAILURE, "exc_type": outcome.exc_type, "exc_message": outcome.exc_message,
         "traceback": outcome.traceback})
    if throw:
        raise exc
    state = "REJECTED" if outcome.state == REJECTED else FAILURE
    return EagerResult(job.id, state, exception=exc, task_name=task.name,
                       traceback=outcome.traceback)
