"""Intake: a fetched stream entry becomes a delivery in its lane, a dead letter, or is parked.

The supervisor hands every fetched, taken-back or reclaimed batch to ``Intake.accept_batch``
on its loop. Each entry is decoded once; what cannot run here is settled at once through the
ledger (dead-lettered with its reason, parked in the delayed set until its eta, revoked
because it expired) and what can run waits in its lane's buffer with its time limits
resolved from every source (message, task, lane, worker).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from engine import flow, limits, message
from engine import signals as hooksig
from engine.worker import hooks
from engine.exceptions import WorkerLostError
from engine.results import FAILURE, encode_record
from engine.signing import BAD_SIGNATURE, Signer
from engine.wire import fields_get, text
from engine.worker.lanes import Delivery, PoolLane

if TYPE_CHECKING:
    from engine.events import EventBuffer
    from engine.flow import Limiter
    from engine.worker.ledger import Ledger

log = logging.getLogger("engine.worker")

WORKER_LOST = f"{WorkerLostError.__module__}.{WorkerLostError.__qualname__}"


class Intake:
    def __init__(self, app: Any, worker: str, ledger: "Ledger", events: "EventBuffer", *,
                 revoked: Callable[[Delivery, str], None], limiter: "Limiter") -> None:
        conf = app.conf
        self.tasks = app.tasks
        self.keys = app.broker.keys
        self.worker = worker
        self.ledger = ledger
        self.events = events
        self.revoked = revoked     #: ``Settler.revoked``
        self.limiter = limiter
        self._held: dict[str, list[Delivery]] = {}   # limited tasks of the batch in hand
        self.max_deliveries = int(conf.task_max_deliveries)
        #: with ``security_key``: entries whose ``s`` does not verify are dead-lettered
        self.signer = app.signer
        # read once: settings are fixed for a worker's life, and Config lookups are layered
        self.default_limits = (conf.task_soft_time_limit, conf.task_time_limit)

    def accept_batch(self, lane: PoolLane, batch: list,
                     deliveries: dict[str, int] | None = None) -> None:
        """``batch`` as XREADGROUP returns it; ``deliveries`` counts per entry id where
        known (taken back or reclaimed), else each entry is on its first delivery."""
        now = time.time()
        signer = self.signer    # checked once a batch: the unsigned path costs nothing more
        for stream, entries in batch:
            stream = stream.decode() if isinstance(stream, bytes) else stream
            queue_name = self.keys.queue_name(stream)
            if signer is not None:
                entries = self._verified(signer, stream, queue_name, entries, lane)
            for entry_id, fields in entries:
                try:
                    count = deliveries.get(text(entry_id), 1) if deliveries else 1
                    if self.accept(lane, stream, queue_name, entry_id, fields, count, now):
                        continue
                except Exception as exc:   # a body nothing above foresaw: file it, go on
                    log.exception("entry %s of %s could not be taken in", text(entry_id),
                                  stream)
                    raw = fields_get(fields, b"m") if isinstance(fields, list) else None
                    self._dead_letter(queue_name, raw if isinstance(raw, bytes) else b"",
                                      f"the worker could not take it in: "
                                      f"{type(exc).__name__}: {exc}", stream, entry_id)
                lane.returned += 1
        if self._held:
            self._admit_held(lane, now)

    def _verified(self, signer: Signer, stream: str, queue_name: str, entries: list,
                  lane: PoolLane) -> list:
        """The entries whose ``s`` is their ``m``'s signature; the others are dead-lettered
        (``bad signature``). Entries without fields or without ``m`` pass on to ``accept``,
        which acks or files them as it does unsigned."""
        passed = []
        for entry_id, fields in entries:
            raw = fields_get(fields, b"m") if fields else None
            if raw is None or signer.verify(raw, fields_get(fields, b"s")):
                passed.append((entry_id, fields))
            else:
                self._dead_letter(queue_name, raw, BAD_SIGNATURE, stream, entry_id)
                lane.returned += 1
        return passed

    def accept(self, lane: PoolLane, stream: str, queue_name: str, entry_id: bytes,
               fields: Any, count: int, now: float) -> bool:
        """True when the entry waits in the lane's buffer; False when it was settled."""
        ledger = self.ledger
        if type(fields) is list and len(fields) == 2 and fields[0] == b"m":
            raw = fields[1]     # the entry as producers write it, straight off the wire
        else:
            raw = fields_get(fields, b"m")
        if raw is None:
            # an entry trimmed or deleted while pending, or one without the m field
            if fields:
                self._dead_letter(queue_name, b"", "entry has no 'm' field", stream, entry_id)
            else:
                ledger.ack(stream, entry_id)
            return False
        try:
            body = message.decode_message(raw)
        except message.MessageError as exc:
            self._dead_letter(queue_name, raw, str(exc), stream, entry_id)
            if hooksig.task_rejected.receivers:
                hooks.rejected(self.worker, raw, str(exc))
            return False
        task = self.tasks.get(body["task"])
        if task is None:
            self._dead_letter(queue_name, raw, f"unknown task {body['task']!r}", stream, entry_id)
            if hooksig.task_unknown.receivers:
                hooks.unknown(self.worker, body, raw)
            return False
        job = message.job_from_body(body, raw, queue_name)
        if count > self.max_deliveries:
            self._dead_letter(queue_name, raw, f"delivered {count} times (task_max_deliveries="
                              f"{self.max_deliveries})", stream, entry_id)
            if not (job.ignore_result or task.ignore_result):
                ledger.record(job.id, encode_record(
                    FAILURE, exc_type=WORKER_LOST, exc_message="poison message: too many "
                    "deliveries", task=job.task, worker=self.worker, retries=job.retries))
            return False
        delivery = Delivery(job, stream, entry_id, lane, task, deliveries=count)
        eta, expires = body.get("eta"), body.get("expires")
        if expires is not None and expires <= now:
            self.revoked(delivery, "expired")
            return False
        delivery.expires = expires
        if eta is not None and eta > now + 0.001:
            # a message that arrived early (hand-built, or raced the delay mover): park it
            ledger.push(queue_name, raw, eta)
            ledger.ack(stream, entry_id)
            return False
        spec = lane.spec
        if (job.soft_limit is None and job.hard_limit is None and task.soft_time_limit is None
                and task.time_limit is None and spec.soft_time_limit is None
                and spec.time_limit is None and self.default_limits == (None, None)):
            pass   # the common case, kept cheap: no limit anywhere
        else:
            soft, hard = limits.resolve_limits(
                (job.soft_limit, job.hard_limit), (task.soft_time_limit, task.time_limit),
                (spec.soft_time_limit, spec.time_limit), self.default_limits)
            delivery.soft, delivery.hard = soft, hard
            job.soft_limit, job.hard_limit = soft, hard
        if job.task in self.limiter.names:
            # asked for once per batch and task, once the whole batch is in (_admit_held)
            delivery.unique = body.get("uq")
            self._held.setdefault(job.task, []).append(delivery)
            return True
        if "uq" in body:
            delivery.unique = body["uq"]
        self.events.received(job, queue_name, now)
        if hooksig.task_received.receivers:
            hooks.received(self.worker, job)
        lane.buffer.append(delivery)
        return True

    def _admit_held(self, lane: PoolLane, now: float) -> None:
        """What the fleet's limits let run of the batch's limited tasks goes into the lane;
        the rest back to its queue's delayed set, due when the limit allows (it waits in
        Redis, and comes back as a new entry: it is not counted as a delivery)."""
        held, self._held = self._held, {}
        limiter = self.limiter
        for task, deliveries in held.items():
            granted, wait = limiter.admit(task, len(deliveries))
            slot = task in limiter.concurrency
            for delivery in deliveries[:granted]:
                delivery.slot = slot
                job = delivery.job
                self.events.received(job, job.queue)
                if hooksig.task_received.receivers:
                    hooks.received(self.worker, job)
                lane.buffer.append(delivery)
            rate = limiter.rates.get(task)
            for index, delivery in enumerate(deliveries[granted:]):
                self.ledger.push(delivery.job.queue, delivery.job.body,
                                 flow.held_eta(now, wait, index, rate))
                self.ledger.ack(delivery.stream, delivery.entry_id)
                lane.returned += 1
            if granted < len(deliveries):
                limiter.note_held(task, now, wait, len(deliveries) - granted)

    def _dead_letter(self, queue_name: str, raw: bytes, reason: str, stream: str,
                     entry_id: bytes) -> None:
        log.error("dead letter on queue %s (entry %s): %s", queue_name, text(entry_id), reason,
                  extra={"queue": queue_name, "worker": self.worker})
        self.ledger.dead_letter(queue_name, raw, reason)
        self.ledger.ack(stream, entry_id)

