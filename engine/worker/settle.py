"""Settlement: how a job's end becomes what the worker owes Redis.

For each ``Outcome`` the supervisor takes from a pool, ``Settler`` notes in the ledger the
result record, the retry, the requeued or dead-lettered copy, and the ack (unless the
message was acked at start), with the matching event and log line. A job whose process died
goes back to its lane for another delivery, up to ``task_max_deliveries``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

from engine import flow, message
from engine.canvas import worker as canvas
from engine import signals as hooksig
from engine.worker import hooks
from engine.logs import task_context
from engine.results import REVOKED, RETRY, encode_record
from engine.worker.intake import WORKER_LOST
from engine.worker.lanes import Delivery
from engine.worker.runner import LATEST_ETA
from pools.base import FAILURE, REJECTED, SUCCESS, Outcome

if TYPE_CHECKING:
    from engine.events import EventBuffer
    from engine.flow import Limiter
    from engine.worker.ledger import Ledger
    from engine.worker.metrics import WorkerMetrics

log = logging.getLogger("engine.worker")


class Settler:
    def __init__(self, app: Any, worker: str, ledger: "Ledger", events: "EventBuffer", *,
                 max_deliveries: int, limiter: "Limiter") -> None:
        self.app = app
        self.worker = worker
        self.ledger = ledger
        self.events = events
        self.max_deliveries = max_deliveries
        self.limiter = limiter
        #: set by the supervisor with --metrics-port only (else one None check per outcome)
        self.metrics: "WorkerMetrics | None" = None

    def settle(self, delivery: Delivery, outcome: Outcome) -> bool:
        """Note what ``outcome`` owes; False when the job goes back to its lane instead
        (its process died: it runs again, at least once)."""
        try:
            return self._settle(delivery, outcome)
        except Exception as exc:   # a bug or a hostile outcome: this task fails, not us
            self._broken(delivery, outcome, exc)
            return True

    def _settle(self, delivery: Delivery, outcome: Outcome) -> bool:
        lane = delivery.lane
        lane.note_runtime(outcome.runtime)
        job = delivery.job
        state = outcome.state
        if delivery.revoked:
            self.revoked(delivery, "terminated")
            return True
        if state == FAILURE and outcome.exc_type == WORKER_LOST and not delivery.acked:
            if delivery.deliveries < self.max_deliveries:
                log.warning("task %s[%s] lost its process; delivering it again", job.task,
                            job.id,
                            extra=task_context(job.id, job.task, job.queue, self.worker))
                delivery.deliveries += 1
                delivery.started = None
                return False
            # a poison message: it killed its process every time it ran; file it with the
            # reason (the FAILURE record below tells the caller)
            self.ledger.dead_letter(job.queue, job.body, f"its process died in each of "
                                    f"{delivery.deliveries} deliveries (task_max_deliveries="
                                    f"{self.max_deliveries})")
        lane.processed += 1
        if state == SUCCESS:
            if job.canvas is not None:
                self._canvas(delivery, outcome)   # its record, with its children
            elif not (job.ignore_result or delivery.task.ignore_result or outcome.stored):
                self.ledger.record(job.id, encode_record(
                    SUCCESS, outcome.result, retries=job.retries, task=job.task,
                    worker=self.worker, runtime=outcome.runtime))
            self.events.succeeded(job.id, job.task, outcome.runtime)
        elif state == RETRY:
            self._retry(delivery, outcome)
        elif state == REJECTED:
            if outcome.requeue:
                self.ledger.push(job.queue, job.body)
            else:
                self.ledger.dead_letter(job.queue, job.body, f"rejected: {outcome.exc_message}")
                self._store(delivery, encode_record(   # and FAILURE, as Celery stores
                    FAILURE, exc_type=outcome.exc_type, exc_message=outcome.exc_message,
                    retries=job.retries, task=job.task, worker=self.worker))
            self.events.task("task-failed", job.id, job.task, exception="Reject",
                             rejected=True)
        else:
            self._failure(delivery, outcome)
        if delivery.slot or delivery.unique:
            # a retry or a requeued copy is still pending: its unique lock stays
            self._release(delivery, final=state != RETRY and not (
                state == REJECTED and outcome.requeue))
        if self.metrics is not None:
            self.metrics.settled(delivery, state, outcome.runtime)
        if not delivery.acked:
            self.ledger.ack(delivery.stream, delivery.entry_id)
        return True

    def unhold(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Deliveries going back to their queue unstarted give their fleet slots back."""
        for delivery in deliveries:
            if delivery.slot:
                self._release(delivery, final=False)
        return deliveries

    def _release(self, delivery: Delivery, *, final: bool) -> None:
        """Give back what the delivery holds of the fleet's limits (engine.flow)."""
        if delivery.slot:
            command = self.limiter.release_command(delivery.job.task)
            if command is not None:
                self.ledger.extend([command])
            delivery.slot = False
        if final and delivery.unique:
            self.ledger.extend([flow.release_unique_command(delivery.unique, delivery.job.id)])
            delivery.unique = None

    def _broken(self, delivery: Delivery, outcome: Outcome, exc: Exception) -> None:
        """Settling ``outcome`` raised: what it noted stays (the writer sends what can be
        sent), the task is recorded as a FAILURE naming the error, and its message acked."""
        job = delivery.job
        log.exception("task %s[%s]: settling its %s outcome failed; recording FAILURE",
                      job.task, job.id, outcome.state)
        try:
            failed = Outcome.from_exception(job.id, exc, runtime=outcome.runtime or 0.0)
            failed.exc_message = f"the worker could not settle its {outcome.state} " \
                                 f"outcome: {failed.exc_message}"
            self._failure(delivery, failed)
        except Exception:
            log.exception("task %s[%s]: could not record its FAILURE either", job.task, job.id)
        if not delivery.acked:
            self.ledger.ack(delivery.stream, delivery.entry_id)
            delivery.acked = True

    def revoked(self, delivery: Delivery, why: str) -> None:
        """Record REVOKED (expired, revoked, terminated) and ack: the task will not run."""
        job = delivery.job
        self._store(delivery, encode_record(REVOKED, exc_message=why, retries=job.retries,
                                            task=job.task, worker=self.worker))
        self.events.task("task-revoked", job.id, job.task, reason=why)
        if hooksig.task_revoked.receivers:
            hooks.revoked(self.worker, job, delivery.task, why)
        if delivery.slot or delivery.unique:
            self._release(delivery, final=True)
        if self.metrics is not None:
            self.metrics.revoked(delivery)
        if not delivery.acked:
            self.ledger.ack(delivery.stream, delivery.entry_id)
            delivery.acked = True
        context = task_context(job.id, job.task, job.queue, self.worker)
        if why == "terminated":   # revoke --terminate ended it while it ran
            log.info("task %s[%s] terminated: ended while running (revoked with terminate)",
                     job.task, job.id, extra=context)
        else:
            log.info("task %s[%s] %s: not run", job.task, job.id, why, extra=context)

    def _failure(self, delivery: Delivery, outcome: Outcome) -> None:
        job = delivery.job
        delivery.lane.failed += 1
        # a failure is an ERROR with its traceback (Celery's habit), a time limit included
        context = task_context(job.id, job.task, job.queue, self.worker, outcome.traceback)
        if outcome.exc_type.endswith("TimeLimitExceeded"):
            log.error("task %s[%s] hit its time limit: %s", job.task, job.id,
                      outcome.exc_message, extra=context)
        else:
            log.error("task %s[%s] failed: %s: %s", job.task, job.id, outcome.exc_type,
                      outcome.exc_message, extra=context)
        self._store(delivery, encode_record(
            FAILURE, outcome.result, exc_type=outcome.exc_type, exc_message=outcome.exc_message,
            traceback=outcome.traceback, retries=job.retries, task=job.task,
            worker=self.worker, runtime=outcome.runtime))
        self.events.task("task-failed", job.id, job.task, exception=outcome.exc_type,
                         message=outcome.exc_message, traceback=outcome.traceback,
                         runtime=outcome.runtime)
        if job.canvas is not None:
            self._canvas(delivery, outcome)   # the chain's later steps, errbacks, chord

    def _retry(self, delivery: Delivery, outcome: Outcome) -> None:
        job = delivery.job
        when = outcome.retry_at
        if (not isinstance(when, (int, float)) or isinstance(when, bool)
                or not math.isfinite(when) or when > LATEST_ETA):
            # the runner checks this; a pool's own runner may not: fail the task, not us
            outcome.state, outcome.exc_type = FAILURE, f"{ValueError.__module__}.ValueError"
            outcome.exc_message = f"retry at {when!r:.60} is not a time: {outcome.exc_message}"
            self._failure(delivery, outcome)
            return
        retries = job.retries + 1
        body = message.reencode(job.body, retries=retries, eta=when)
        # always through the delayed zset, even with no countdown (the mover runs every
        # housekeeping round): a ZADD sent twice over a flaky connection is one retry
        self.ledger.delay(job.queue, body, when)
        if not job.ignore_result:
            self.ledger.status(job.id, encode_record(
                RETRY, exc_type=outcome.exc_type, exc_message=outcome.exc_message,
                traceback=outcome.traceback, retries=retries, task=job.task,
                worker=self.worker))
        log.warning("task %s[%s] will retry (%d) in %.1f s: %s", job.task, job.id, retries,
                    max(when - time.time(), 0), outcome.exc_message,
                    extra=task_context(job.id, job.task, job.queue, self.worker))
        self.events.task("task-retried", job.id, job.task, retries=retries,
                         exception=outcome.exc_type, message=outcome.exc_message)

    def _canvas(self, delivery: Delivery, outcome: Outcome) -> None:
        """What a canvas step owes (``engine.canvas.worker``): written with its result,
        its successors before its ack."""
        job = delivery.job
        self.ledger.canvas_step(canvas.settle(self.app, job, outcome, worker=self.worker,
                                              store=not (job.ignore_result or
                                                         delivery.task.ignore_result or
                                                         outcome.stored)))

    def _store(self, delivery: Delivery, record: bytes) -> None:
        if not (delivery.job.ignore_result or delivery.task.ignore_result):
            self.ledger.record(delivery.job.id, record)
