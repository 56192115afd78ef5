"""Recovery: messages that change hands between workers, or go back to their queue.

``take_back`` (at start: what this worker name held when it last died comes back first),
``reclaim`` (housekeeping: the pending messages of workers whose heartbeat expired) and
``give_back`` (warm and cold shutdown: fetched messages that never started return to their
queue at once). Liveness is decided by heartbeat keys in ``engine.broker``'s claim script,
never by how long a task has run.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Callable

import redis

from engine.broker import GROUP
from engine.wire import text
from engine.worker.lanes import Delivery, Lane, PoolLane

if TYPE_CHECKING:
    from engine.broker import Broker

log = logging.getLogger("engine.worker")

#: entries read per round while taking back
TAKE_BACK_BATCH = 500

Accept = Callable[[PoolLane, list, "dict[str, int] | None"], None]


class Recovery:
    def __init__(self, broker: "Broker", worker: str, accept: Accept) -> None:
        self.broker = broker
        self.worker = worker
        self.accept = accept       #: ``Intake.accept_batch``
        #: (lane name, stream) -> the last id taken back, while some are left to take
        self._taking_back: dict[tuple[str, str], object] = {}

    def take_back(self, lane: Lane) -> None:
        """Messages this worker name held when it last died, into the lane first (before
        its fetch thread starts: the id-0 read would otherwise see what it fetched), within
        the lane's prefetch room; the rest follow in housekeeping as room frees
        (``reclaim``), read on from where this stopped."""
        for stream in lane.streams:
            self._taking_back[(lane.name, stream)] = "0"
        self._take_back_more(lane)

    def _take_back_more(self, lane: Lane) -> None:
        broker = self.broker
        for stream in lane.streams:
            key = (lane.name, stream)
            last_id = self._taking_back.get(key)
            while last_id is not None:
                room = min(lane.room(), TAKE_BACK_BATCH)
                if room <= 0:
                    return
                batch = broker.fetch(self.worker, {stream: last_id}, count=room,
                                     block_ms=None)
                entries = batch[0][1] if batch else []
                if not entries:
                    del self._taking_back[key]
                    break
                last_id = entries[-1][0]
                pending = broker.client.xpending_range(
                    stream, GROUP, min=entries[0][0], max=last_id, count=len(entries),
                    consumername=self.worker)
                counts = {text(p["message_id"]): int(p["times_delivered"]) for p in pending}
                log.warning("taking back %d message(s) this worker held before a restart",
                            len(entries))
                lane.hold(len(entries))
                self.accept(lane, [(stream, entries)], counts)
                # only now: a round that failed before this reads the same entries again
                self._taking_back[key] = last_id

    def reclaim(self, lanes: list[Lane], *, forget: Callable[[set[str]], None]) -> None:
        """Take over the pending messages of workers whose heartbeat has expired, and go on
        taking back this name's own, each lane within its prefetch room; ``forget(alive)``
        frees what the others held of the fleet's limits."""
        broker = self.broker
        if self._taking_back:
            for lane in lanes:
                self._take_back_more(lane)
        alive = broker.alive_workers() | {self.worker}
        forget(alive)
        for lane in lanes:
            room = lane.room() if lane.streams else 0
            if room <= 0:
                continue   # within the prefetch budget: a later round, or a worker with room
            for stream, entries, deliveries in broker.claim_from_dead(
                    self.worker, lane.queues, alive=alive, count=room,
                    streams=lane.streams):
                log.warning("reclaimed %d message(s) of a lost worker from %s",
                            len(entries), stream)
                lane.hold(len(entries))
                self.accept(lane, [(stream, entries)], deliveries)

    def give_back(self, deliveries: list[Delivery]) -> None:
        """Put fetched messages that never started back on their queue, now."""
        by_stream: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)
        for d in deliveries:
            if not d.acked:
                by_stream[d.stream].append((d.entry_id, d.job.body))
        for stream, entries in by_stream.items():
            try:
                self.broker.requeue(stream, entries)
            except redis.RedisError as exc:   # all or nothing (one MULTI): nothing moved
                log.warning("could not give back %d message(s) of %s (%s): they stay pending "
                            "on %s and run again once a survivor reclaims them (after "
                            "worker_lost_after) or this name restarts", len(entries), stream,
                            exc, self.worker)
        if deliveries:
            log.info("gave back %d message(s) that never started", len(deliveries))
