"""Where the worker calls the hooks: Task hook methods and ``engine.signals``.

``run_task`` is the runner's hooked path, taken only for tasks whose class overrides a hook
(or ``__call__``) or while a task signal has a receiver; it keeps Celery's order (prerun,
before_start, the run, on_success/on_failure/on_retry with their signals, after_return,
postrun) in the process that runs the task. The other functions are the worker's life
(init, ready, shutdown, process init and shutdown) and what the supervisor sees (received,
revoked, rejected, unknown), each one ``receivers`` check when nobody listens.

A hook that raises is logged and changes nothing else, with one exception kept from Celery:
``before_start`` runs inside the task's attempt, so raising there fails (or retries) it.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import TYPE_CHECKING, Any, Callable

from engine import signals
from engine.exceptions import ExceptionInfo, Ignore, Retry
from engine.task import Request
from engine.task import Task as _BASE   # the defaults that overridden hooks are told from
from engine.worker import slotloop
from pools.base import FAILURE, RETRY, SUCCESS, Job, Outcome

if TYPE_CHECKING:
    from engine.task import Task
    from engine.worker.runner import TaskRunner
    from engine.worker.supervisor import Supervisor
    from pools.base import Pool

log = logging.getLogger("engine.worker")


def _call(hook: Callable, *args: Any) -> None:
    try:
        hook(*args)
    except Exception:
        log.exception("task hook %s raised (ignored)", getattr(hook, "__qualname__", hook))


def run_task(runner: "TaskRunner", task: "Task", job: Job, start: float) -> Outcome:
    """Run ``job`` with its hooks; the caller has pushed the request and pops it."""
    task_id, args, kwargs = job.id, job.args, job.kwargs
    cls = type(task)
    if signals.task_prerun.receivers:
        signals.task_prerun.send(sender=task, task_id=task_id, task=task, args=args,
                                 kwargs=kwargs)
    retval: Any = None
    state: str | None = None
    try:
        try:
            if cls.before_start is not _BASE.before_start:
                task.before_start(task_id, args, kwargs)
            retval = (task(*args, **kwargs) if cls.__call__ is not _BASE.__call__
                      else task.run(*args, **kwargs))
            if inspect.iscoroutine(retval):    # an async def task: on the slot's loop
                retval = slotloop.run(slotloop.with_request(task.request, retval))
            outcome = runner.succeeded(task, job, retval, start)
        except (Exception, SystemExit) as exc:
            outcome = runner.failed(task, job, exc, start)
            retval = exc
            state = "IGNORED" if isinstance(exc, Ignore) else outcome.state
            if state == RETRY:
                _retried(task, exc, outcome)
            elif state == FAILURE:
                _failed(task, job, exc, outcome)
        else:
            state = outcome.state
            if cls.on_success is not _BASE.on_success:
                _call(task.on_success, retval, task_id, args, kwargs)
            if signals.task_success.receivers:
                signals.task_success.send(sender=task, result=retval, runtime=outcome.runtime)
        if state in (SUCCESS, FAILURE) and cls.after_return is not _BASE.after_return:
            _call(task.after_return, state, retval, task_id, args, kwargs, None)
    finally:
        if signals.task_postrun.receivers:
            signals.task_postrun.send(sender=task, task_id=task_id, task=task, args=args,
                                      kwargs=kwargs, retval=retval, state=state)
    return outcome


def _retried(task: "Task", exc: BaseException, outcome: Outcome) -> None:
    reason = exc if isinstance(exc, Retry) else Retry(exc=exc)
    original = reason.exc
    einfo = ExceptionInfo(original if original is not None else reason, outcome.traceback)
    if type(task).on_retry is not _BASE.on_retry:
        request = task.request
        _call(task.on_retry, original, request.id, request.args, request.kwargs, einfo)
    if signals.task_retry.receivers:
        signals.task_retry.send(sender=task, request=task.request, reason=reason, einfo=einfo)


def _failed(task: "Task", job: Job, exc: BaseException, outcome: Outcome) -> None:
    einfo = ExceptionInfo(exc, outcome.traceback)
    if type(task).on_failure is not _BASE.on_failure:
        _call(task.on_failure, exc, job.id, job.args, job.kwargs, einfo)
    if signals.task_failure.receivers:
        signals.task_failure.send(sender=task, task_id=job.id, exception=exc, args=job.args,
                                  kwargs=job.kwargs, traceback=exc.__traceback__, einfo=einfo)


# -- the supervisor's view of messages ----------------------------------------------------
def received(worker: str, job: Job) -> None:
    """``task_received`` (the caller checked ``receivers``); the sender is the worker's
    name, as for the other message hooks sent in the supervisor."""
    signals.task_received.send(sender=worker, request=_request(worker, job))


def revoked(worker: str, job: Job, task: "Task | None", why: str) -> None:
    """``task_revoked``: ``why`` is "revoked", "terminated" or "expired"."""
    signals.task_revoked.send(sender=task, request=_request(worker, job),
                              terminated=why == "terminated", signum=None,
                              expired=why == "expired")


def rejected(worker: str, raw: bytes, reason: str) -> None:
    """``task_rejected``: a message that is not a task message (it was dead-lettered)."""
    signals.task_rejected.send(sender=worker, message=raw, exc=ValueError(reason))


def unknown(worker: str, body: dict, raw: bytes) -> None:
    """``task_unknown``: a message naming a task this worker does not have."""
    name = body.get("task")
    signals.task_unknown.send(sender=worker, name=name, id=body.get("id"), message=raw,
                              exc=KeyError(name))


def _request(worker: str, job: Job) -> Request:
    return Request(id=job.id, task=job.task, args=job.args, kwargs=job.kwargs,
                   retries=job.retries, hostname=worker, queue=job.queue,
                   called_directly=False, headers=job.headers)


# -- the worker's life ----------------------------------------------------------------------
def worker_init(supervisor: "Supervisor") -> None:
    """Before the worker starts. Lane processes of a supervisor (``--lane-of``) send none of
    worker_init/ready/shutdown: those belong to the worker the user started."""
    if signals.worker_init.receivers and supervisor.parent is None:
        signals.worker_init.send(sender=supervisor)


def worker_ready(supervisor: "Supervisor") -> None:
    if signals.worker_ready.receivers and supervisor.parent is None:
        signals.worker_ready.send(sender=supervisor)


def worker_shutdown(supervisor: "Supervisor") -> None:
    if signals.worker_shutdown.receivers and supervisor.parent is None:
        signals.worker_shutdown.send(sender=supervisor)


def runs_tasks_here(pool_classes: list[type["Pool"]]) -> bool:
    """Whether this process runs tasks itself: one of its lanes' pools runs them in-process
    (a prefork pool runs them in children, which send worker_process_init themselves)."""
    return any(not getattr(cls, "runs_in_children", False) for cls in pool_classes)


def process_init() -> None:
    """``worker_process_init`` in the process about to run tasks (after any fork)."""
    if signals.worker_process_init.receivers:
        signals.worker_process_init.send(sender=None)


def process_shutdown(exitcode: int) -> None:
    if signals.worker_process_shutdown.receivers:
        signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=exitcode)



def hand_over_logging(level: str) -> None:
    """Celery's rule for the command line: with a ``setup_logging`` receiver connected (by
    the app's modules, imported by now), logging is theirs: the handlers the command line
    installed on the root logger go, and the receivers are called to set up their own."""
    if not signals.setup_logging.receivers:
        return
    root = logging.getLogger()
    fmt = None
    for handler in list(root.handlers):
        if fmt is None and handler.formatter is not None:
            fmt = handler.formatter._fmt
        root.removeHandler(handler)
    signals.setup_logging.send(sender=None, loglevel=getattr(logging, level.upper()),
                               logfile=None, format=fmt, colorize=False)
