"""Running one job in the current process: the ``Runner`` every pool is given.

It looks the task up, sets ``self.request``, calls it, and turns whatever happens (a value,
an exception, Retry, Reject, Ignore, a time limit) into an Outcome. Tasks with hook methods,
or any connected task signal, take the hooked path of ``engine.worker.hooks``. An ``async
def`` task runs on the slot's event loop (``engine.worker.slotloop``) under ``execute``, or
as a coroutine of a pool's own loop under ``execute_async`` (``pools.asyncio``). The return
value is encoded
here, in the process that ran the task, so results cross process boundaries as bytes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import math
import time
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Coroutine

import redis

from engine import message, tracing
from engine.exceptions import Ignore, Reject, Retry, TimeLimitExceeded
from engine.results import encode_record
from engine.signals import TASK_HOOKS as _TASK_HOOKS
from engine.task import Request, _context, set_async_request
from engine.worker import hooks, slotloop
from pools.base import FAILURE, REJECTED, RETRY, SUCCESS, Job, Outcome

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.task import Task

#: the latest unix time a retry may ask for: the end of year 9999, the last a datetime can
#: hold (Celery reads every eta as one); later, infinite or not-a-number is no time at all
LATEST_ETA = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc).timestamp()


def retry_time(eta: Any, countdown: Any, now: float) -> float:
    """When a retry runs: ``eta`` (unix seconds, or a datetime: a naive one is UTC, as in
    Celery; an aware one is converted) or ``now + countdown``. ValueError, saying why, for
    anything that is not a time before LATEST_ETA."""
    if eta is not None:
        if isinstance(eta, dt.datetime):
            when = (eta if eta.tzinfo is not None
                    else eta.replace(tzinfo=dt.timezone.utc)).timestamp()
        elif isinstance(eta, (int, float)) and not isinstance(eta, bool):
            when = float(eta)
        else:
            raise ValueError(f"retry eta must be unix seconds or a datetime, got "
                             f"{type(eta).__name__} {eta!r:.60}")
        what = f"retry eta {eta!r:.60}"
    else:
        if countdown is None:
            countdown = 0.0
        if not isinstance(countdown, (int, float)) or isinstance(countdown, bool):
            raise ValueError(f"retry countdown must be seconds, got "
                             f"{type(countdown).__name__} {countdown!r:.60}")
        when = now + float(countdown)
        what = f"retry countdown {countdown!r:.60}"
    if not math.isfinite(when) or when > LATEST_ETA:
        raise ValueError(f"{what} is not a time (finite, before year 10000)")
    return when


def exception_args(exc: BaseException) -> bytes:
    """The exception's arguments as the record's value (Celery keeps them), or nothing
    when they cannot be sent: then its message alone rebuilds it."""
    try:
        return message.dumps(list(exc.args))
    except (TypeError, ValueError, OverflowError):
        return b""


class TaskRunner:
    """The engine's Runner (see ``pools.base.Runner``)."""

    def __init__(self, app: "Engine", hostname: str) -> None:
        self.app = app
        self.hostname = hostname
        self._async: dict[Any, bool] = {}   # task -> is it an async def

    def load(self, body: bytes) -> Job:
        # a pool only ever holds bodies the supervisor's intake decoded and checked
        return message.load_accepted_job(body)

    def execute(self, job: Job, task: "Task | None" = None, *, eager: bool = False) -> Outcome:
        """Run ``job`` (its task looked up by name unless given; ``eager``: for
        ``Task.apply``, which marks the request so)."""
        if tracing.ENABLED:   # ENGINE_TRACING=1: the run in a span (opentelemetry only then)
            return tracing.run_in_span(self._execute, job, task, eager)
        return self._execute(job, task, eager)

    def _execute(self, job: Job, task: "Task | None", eager: bool) -> Outcome:
        start = time.perf_counter()
        if task is None:
            try:
                task = self.app.tasks[job.task]
            except KeyError as exc:
                return Outcome.from_exception(job.id, exc)
        # positional: keyword arguments cost ~0.4 us here, a sixth of the whole call
        # (Request's field order is part of this line); the stacks pushed inline likewise
        context = _context
        request = Request(job.id, job.task, job.args, job.kwargs, job.retries, self.hostname,
                          job.queue, False, job.headers, eager, job)
        context.stack.append(request)
        context.tasks.append(task)
        try:
            if task.idempotent:
                done = self.app.backend.done(job.id)
                if done is not None:
                    # it ran to the end before (then its worker died before the ack, or
                    # the message was delivered twice): do not run it again
                    return Outcome(job.id, SUCCESS, done, runtime=time.perf_counter() - start)
            if task.hooked or _TASK_HOOKS.connected:
                # the one check the default path pays: hook methods (found when the task
                # was made) or a connected task signal (engine.worker.hooks)
                return hooks.run_task(self, task, job, start)
            value = task.run(*job.args, **job.kwargs)
            if isinstance(value, CoroutineType):   # an async def task: on the slot's loop
                value = slotloop.run(slotloop.with_request(request, value))
            return self.succeeded(task, job, value, start)
        except (Exception, SystemExit) as exc:
            return self.failed(task, job, exc, start)
        finally:
            context.stack.pop()
            context.tasks.pop()

    def execute_async(self, job: Job) -> Coroutine[Any, Any, Outcome] | None:
        """The coroutine running an ``async def`` task's job to its Outcome, for pools with
        an event loop of their own (``pools.base.Runner``); None for any other task."""
        task = self.app.tasks.get(job.task)
        if task is None:
            return None
        is_async = self._async.get(task)
        if is_async is None:
            is_async = self._async[task] = inspect.iscoroutinefunction(getattr(task, "fn", None))
        return self._execute_async(job, task) if is_async else None

    async def _execute_async(self, job: Job, task: "Task") -> Outcome:
        start = time.perf_counter()
        set_async_request(Request(job.id, job.task, job.args, job.kwargs, job.retries,
                                  self.hostname, job.queue, False, job.headers, False, job))
        try:
            if task.idempotent:
                # the backend is a blocking client: off the loop
                done = await asyncio.to_thread(self.app.backend.done, job.id)
                if done is not None:
                    return Outcome(job.id, SUCCESS, done, runtime=time.perf_counter() - start)
            value = await task.run(*job.args, **job.kwargs)
            if task.idempotent:
                return await asyncio.to_thread(self.succeeded, task, job, value, start)
            return self.succeeded(task, job, value, start)
        except (Exception, SystemExit) as exc:
            return self.failed(task, job, exc, start)

    def succeeded(self, task: "Task", job: Job, value: Any, start: float) -> Outcome:
        """The Outcome of a run that returned ``value``; raises when it cannot be encoded."""
        # a canvas step's result goes to its successors even when it is not stored
        encoded = b"" if ((job.ignore_result or task.ignore_result) and job.canvas is None) \
            else message.dumps(value)
        if task.idempotent:
            stored = self.app.backend.mark_done(job.id, message.dumps(value))
            if stored is not None:   # a copy running elsewhere finished first
                encoded = stored
        return Outcome(job.id, SUCCESS, encoded, runtime=time.perf_counter() - start)

    def failed(self, task: "Task", job: Job, exc: BaseException, start: float) -> Outcome:
        """The Outcome of a run that raised ``exc``: RETRY (``retry()``, ``autoretry_for``),
        REJECTED, SUCCESS with nothing stored (``Ignore``) or FAILURE."""
        if isinstance(exc, Retry):
            return self._retry(job, exc, start)
        if isinstance(exc, Reject):
            outcome = Outcome.from_exception(job.id, exc, state=REJECTED,
                                             runtime=time.perf_counter() - start)
            outcome.requeue = exc.requeue
            return outcome
        if isinstance(exc, Ignore):
            # acknowledged, nothing written: the task keeps whatever state it set itself
            return Outcome(job.id, SUCCESS, runtime=time.perf_counter() - start, stored=True)
        if (task.autoretry_for and isinstance(exc, task.autoretry_for)
                and not isinstance(exc, TimeLimitExceeded)
                and (task.max_retries is None or job.retries < task.max_retries)):
            return self._retry(job, Retry(exc=exc, countdown=task.backoff(job.retries)), start)
        outcome = Outcome.from_exception(job.id, exc, runtime=time.perf_counter() - start)
        if exc.args != (outcome.exc_message,):   # ValueError("bad", 42): its args travel
            outcome.result = exception_args(exc)
        return outcome

    def store(self, job: Job, outcome: Outcome) -> bool:
        """Store a SUCCESS result here and now (a prefork child's lone job: the caller waits,
        and no batch in the supervisor would share the write). False, and the supervisor
        stores it, when there is nothing to store or Redis did not take it at once."""
        if outcome.stored:
            return True          # nothing to write (Ignore)
        if outcome.state != SUCCESS or job.ignore_result or job.canvas is not None:
            return False     # a canvas step's record (with its children) is the supervisor's
        task = self.app.tasks.get(job.task)
        if task is None or task.ignore_result:
            return False
        backend = self.app.backend
        record = encode_record(SUCCESS, outcome.result, retries=job.retries, task=job.task,
                               worker=self.hostname, runtime=outcome.runtime)
        try:
            [store] = backend.write_commands([(job.id, record)])
            backend.wire.call(*store, retry=False)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return False
        return True

    @staticmethod
    def _retry(job: Job, retry: Retry, start: float) -> Outcome:
        runtime = time.perf_counter() - start
        try:
            when = retry_time(retry.eta, retry.countdown, time.time())
        except ValueError as exc:
            # a retry that cannot be scheduled ends the task: its FAILURE says why
            return Outcome.from_exception(job.id, exc, state=FAILURE, runtime=runtime)
        reason = retry.exc if retry.exc is not None else retry
        outcome = Outcome.from_exception(job.id, reason, state=RETRY, runtime=runtime)
        outcome.retry_at = when
        return outcome
