"""What a running task knows about its call: ``Request``, the per-thread request stack,
the asyncio task's request, ``current_task`` and ``get_task_logger``.

The runner (``engine.worker.runner``) pushes a Request before it calls a task and pops it
after; ``Task.request`` reads the top one.
"""

from __future__ import annotations

import logging
import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.task import Task


@dataclass
class Request:
    """What a running task knows about its call (``self.request`` in bound tasks).

    ``engine.worker.runner`` builds it with positional arguments (the cheap way): a new
    field goes at the end."""

    id: str | None = None
    task: str | None = None
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    retries: int = 0
    hostname: str | None = None
    queue: str | None = None
    called_directly: bool = True
    headers: dict | None = None     #: ``apply_async(headers=...)``, as sent
    is_eager: bool = False
    job: Any = None                 #: the ``pools.base.Job`` being run, on a worker

    @property
    def name(self) -> str | None:
        """The task name (Celery's worker request spells it so)."""
        return self.task

    @property
    def time_limit(self) -> float | None:
        """The hard limit in seconds the call was sent with, else the task's own (Celery's
        ``request.time_limit``); None when neither has one."""
        return self._limit("hard_limit", "time_limit")

    @property
    def soft_time_limit(self) -> float | None:
        return self._limit("soft_limit", "soft_time_limit")

    def _limit(self, sent: str, declared: str) -> float | None:
        value = getattr(self.job, sent, None)
        if value is not None:
            return value
        for request, task in zip(_context.stack, _context.tasks):
            if request is self:
                return getattr(task, declared, None)
        return None

    @property
    def delivery_info(self) -> dict:
        """Celery's keys: ``exchange`` (always ''), ``routing_key`` (the queue),
        ``priority`` (0 to 9) and ``redelivered`` (None: not known in the task)."""
        priority = 0
        body = getattr(self.job, "body", None)
        if body:
            from engine.message import decode_message
            try:
                priority = decode_message(body).get("priority", 0)
            except ValueError:
                pass
        return {"exchange": "", "routing_key": self.queue, "priority": priority,
                "redelivered": None}


class _Context(threading.local):
    # threading.local becomes greenlet-local once gevent has patched the process
    def __init__(self) -> None:
        self.stack: list[Request] = []
        self.tasks: list["Task"] = []


_context = _Context()
#: the Request of the ``async def`` task running in this asyncio task: coroutines share
#: their thread (and, in gevent, run in the loop's greenlet), so a thread-local cannot say
_async_request: ContextVar[Request | None] = ContextVar("engine_request", default=None)


def will_not_block() -> None:
    """RuntimeError when a worker is running a task here (not an eager or direct call):
    a task waiting for another's result can hold the slot that one needs (Celery's rule)."""
    stack = _context.stack
    request = stack[-1] if stack else _async_request.get()
    if request is not None and not request.called_directly and not request.is_eager:
        raise RuntimeError("never call result.get() within a task: it can wait for ever "
                           "for a slot it holds itself (pass disable_sync_subtasks=False to "
                           "wait anyway, or chain the tasks)")


def push_request(request: Request, task: "Task | None" = None) -> None:
    _context.stack.append(request)
    _context.tasks.append(task)


def pop_request() -> None:
    _context.stack.pop()
    _context.tasks.pop()


def get_current_task() -> "Task | None":
    """The task running in this thread (greenlet), or None."""
    tasks = _context.tasks
    return tasks[-1] if tasks else None


class _CurrentTask:
    """``engine.current_task``: Celery's proxy to the running task (false outside one);
    ``current_task.request.id``, ``current_task.name``."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        task = get_current_task()
        if task is None:
            raise AttributeError(f"no task is running here (current_task.{name})")
        return getattr(task, name)

    def __bool__(self) -> bool:
        return get_current_task() is not None

    def __repr__(self) -> str:
        return f"<current_task: {get_current_task()!r}>"


current_task = _CurrentTask()


class _TaskContext(logging.Filter):
    """Puts ``task_id`` and ``task_name`` on every record of a task logger (``"???"``
    outside a task), for formats such as ``%(task_name)s[%(task_id)s]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        stack = _context.stack
        request = stack[-1] if stack else None
        record.task_id = (request.id if request else None) or "???"
        record.task_name = (request.task if request else None) or "???"
        return True


_TASK_CONTEXT = _TaskContext()


def get_task_logger(name: str) -> logging.Logger:
    """A logger for task modules (Celery's ``get_task_logger``): ``name`` under the
    ``engine.task`` logger, its records carrying ``task_id`` and ``task_name``."""
    logger = logging.getLogger(f"engine.task.{name}")
    if _TASK_CONTEXT not in logger.filters:
        logger.addFilter(_TASK_CONTEXT)
    return logger


def set_async_request(request: Request | None) -> None:
    """Set the Request seen by ``self.request`` in the current asyncio task's context."""
    _async_request.set(request)
