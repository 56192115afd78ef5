"""Running one job in the current process: the ``Runner`` every pool is given.

It looks the task up, sets ``self.request``, calls it, and turns whatever happens (a value,
an exception, Retry, Reject, a time limit) into an Outcome. The return value is encoded
here, in the process that ran the task, so results cross process boundaries as bytes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import redis

from engine import message
from engine.exceptions import Reject, Retry, TimeLimitExceeded
from engine.results import encode_record
from engine.task import Request, pop_request, push_request
from pools.base import REJECTED, RETRY, SUCCESS, Job, Outcome

if TYPE_CHECKING:
    from engine.app import Engine


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
            # a canvas step's result goes to its successors even when it is not stored
            encoded = b"" if ((job.ignore_result or task.ignore_result) and job.canvas is None) \
                else message.dumps(value)
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
        reason = retry.exc if retry.exc is not None else retry
        outcome = Outcome.from_exception(job.id, reason, state=RETRY,
                                         runtime=time.perf_counter() - start)
        outcome.retry_at = retry.eta if retry.eta is not None else \
            time.time() + (retry.countdown or 0.0)
        return outcome


