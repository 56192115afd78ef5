"""Whether a worker that was paused still owns what it fetched.

A worker stopped (SIGSTOP, a frozen VM, a swap storm) for longer than its heartbeat key
lives looks lost: a survivor reclaims its pending messages and runs them. When it comes back,
the messages still in its lanes' buffers belong to someone else; starting them would run
them twice. So, once a pause is noticed, each lane feeds nothing until one XPENDING per
stream (this consumer, over the buffered ids' range) has said which buffered entries are
still pending on this worker; the others leave the buffer without being run or acked
(their new owner runs and acks them).

A pause is noticed two ways: the loop's turns are further apart than STALL_SHARE of
``worker_lost_after`` (``check``), or a fetch thread's read took that much longer than it
may block (``PoolLane``'s fetch thread: a batch Redis handed over while this process was
stopped).
Both are per turn or per batch, never per task. Jobs a pool queues behind its running ones
(its prefetch) come back into the buffer first and are checked with it, where the pool can
give them back (``Pool.take_back``: prefork's ring, the threads and asyncio pools). Those
that run, and those queued in a pool that cannot (a plugin without it), may run twice, as
any running task of a worker taken for lost does. An entry acked when it was handed to the
pool (acks early) is kept without asking: nobody else can have it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING

import redis

from engine.broker import GROUP
from engine.limits import now as monotonic

if TYPE_CHECKING:
    from engine.broker import Broker
    from engine.worker.lanes import Delivery, Lane

log = logging.getLogger("engine.worker")

#: a pause longer than this share of ``worker_lost_after`` is checked (the heartbeat key
#: lives HEARTBEAT_TTL_SHARE of it; half of that left for a late beat)
STALL_SHARE = 0.25


class Ownership:
    """On the loop: notices pauses and drops buffered messages this worker lost."""

    def __init__(self, broker: "Broker", consumer: str, *, lost_after: float,
                 inflight: dict[str, "Delivery"] | None = None) -> None:
        self.broker = broker
        self.consumer = consumer
        self.inflight = {} if inflight is None else inflight   #: the supervisor's
        self.stall_after = max(lost_after * STALL_SHARE, 0.05)
        self._last: float | None = None   # the first turn follows start, not a pause

    def check(self, lanes: list["Lane"]) -> None:
        """Once per loop turn, before feeding."""
        now = monotonic()
        gap, self._last = (0.0 if self._last is None else now - self._last), now
        if gap > self.stall_after:
            log.warning("worker loop was paused for %.1f s: checking that its buffered "
                        "messages are still its own before starting them", gap)
            for lane in lanes:
                if lane.streams:
                    lane.unverified = True
        for lane in lanes:
            if lane.streams and lane.unverified:
                self.verify(lane)

    def verify(self, lane: "Lane") -> None:
        """Keep in ``lane``'s buffer only what is still pending on this consumer."""
        self.take_back(lane)
        buffer = lane.buffer
        by_stream: dict[str, list] = defaultdict(list)
        for delivery in buffer:
            if not delivery.acked:
                by_stream[delivery.stream].append(delivery.entry_id)
        ours: set[bytes] = set()
        try:
            for stream, ids in by_stream.items():
                keys = sorted(ids, key=_id_key)
                ours.update(self._pending(stream, keys[0], keys[-1], len(ids)))
        except redis.RedisError as exc:
            log.warning("lane %s: could not check its buffered messages (%s); not starting "
                        "them until it can", lane.name, exc)
            return   # still unverified: the lane feeds nothing meanwhile
        kept = [d for d in buffer if d.acked or _b(d.entry_id) in ours]
        lost = len(buffer) - len(kept)
        if lost:
            buffer.clear()
            buffer.extend(kept)
            lane.returned += lost
            log.warning("lane %s: %d buffered message(s) were reclaimed by another worker "
                        "while this one was paused: dropped, not run", lane.name, lost)
        lane.unverified = False

    def take_back(self, lane: "Lane") -> None:
        """The jobs ``lane``'s pool queued and has not started, back at the head of its
        buffer in their order, as if never submitted (where the pool can: ``take_back``)."""
        pool = getattr(lane, "pool", None)
        if pool is None or pool.take_back is None:
            return
        for job_id in reversed(pool.take_back()):
            delivery = self.inflight.pop(job_id, None)
            if delivery is not None:
                lane.buffer.appendleft(delivery)

    def _pending(self, stream: str, first: bytes, last: bytes, count: int) -> set[bytes]:
        """Every id pending on this consumer from ``first`` to ``last``, page by page (the
        range also holds what runs, and what ended but is not acked yet)."""
        found: set[bytes] = set()
        start: bytes | str = first
        page = max(count, 100)
        while True:
            rows = self.broker.client.xpending_range(stream, GROUP, min=start, max=last,
                                                     count=page, consumername=self.consumer)
            found.update(_b(row["message_id"]) for row in rows)
            if len(rows) < page:
                return found
            start = b"(" + _b(rows[-1]["message_id"])   # exclusive: Redis 6.2 and later


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(ms), int(seq or 0)
