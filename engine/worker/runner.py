"""Running one job in the current process: the ``Runner`` every pool is given.

It looks the task up, sets ``self.request``, calls it, and turns whatever happens (a value,
an exception, Retry, Reject, a time limit) into an Outcome. The return value is encoded
here, in the process that ran the task, so results cross process boundaries as bytes.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import TYPE_CHECKING, Any

import redis

from engine import message
from engine.exceptions import Reject, Retry, TimeLimitExceeded
from engine.results import encode_record
from engine.task import Request, pop_request, push_request
from pools.base import FAILURE, REJECTED, RETRY, SUCCESS, Job, Outcome

if TYPE_CHECKING:
    from engine.app import Engine

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


class TaskRunner:
    """The engine's Runner (see ``pools.base.Runner``)."""

    def __init__(self, app: "Engine", hostname: str) -> None:
        self.app = app
        self.hostname = hostname

    def load(self, body: bytes) -> Job:
        return message.load_job(body)

    def execute(self, job: Job) -> Outcome:
        start = time.perf_counter()
        try:
            task = self.app.tasks[job.task]
        except KeyError as exc:
            return Outcome.from_exception(job.id, exc)
        push_request(Request(id=job.id, task=job.task, args=job.args, kwargs=job.kwargs,
                             retries=job.retries, hostname=self.hostname, queue=job.queue,
                             called_directly=False))
        try:
            if task.idempotent:
                done = self.app.backend.done(job.id)
                if done is not None:
                    # it ran to the end before (then its worker died before the ack, or
                    # the message was delivered twice): do not run it again
                    return Outcome(job.id, SUCCESS, done, runtime=time.perf_counter() - start)
            value = task.run(*job.args, **job.kwargs)
            encoded = b"" if (job.ignore_result or task.ignore_result) else message.dumps(value)
            if task.idempotent:
                stored = self.app.backend.mark_done(job.id, message.dumps(value))
                if stored is not None:   # a copy running elsewhere finished first
                    encoded = stored
            return Outcome(job.id, SUCCESS, encoded, runtime=time.perf_counter() - start)
        except Retry as retry:
            return self._retry(job, retry, start)
        except Reject as reject:
            outcome = Outcome.from_exception(job.id, reject, state=REJECTED,
                                             runtime=time.perf_counter() - start)
            outcome.requeue = reject.requeue
            return outcome
        except (Exception, SystemExit) as exc:
            runtime = time.perf_counter() - start
            if (task.autoretry_for and isinstance(exc, task.autoretry_for)
                    and not isinstance(exc, TimeLimitExceeded)
                    and (task.max_retries is None or job.retries < task.max_retries)):
                return self._retry(job, Retry(exc=exc, countdown=task.backoff(job.retries)),
                                   start)
            return Outcome.from_exception(job.id, exc, runtime=runtime)
        finally:
            pop_request()

    def store(self, job: Job, outcome: Outcome) -> bool:
        """Store a SUCCESS result here and now (a prefork child's lone job: the caller waits,
        and no batch in the supervisor would share the write). False, and the supervisor
        stores it, when there is nothing to store or Redis did not take it at once."""
        if outcome.state != SUCCESS or job.ignore_result:
            return False
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


