"""After a pause, what a worker's threads pool had queued comes back into the lane's buffer
and is checked with it (``engine.worker.ownership``): an entry another worker reclaimed
meanwhile is dropped, one still pending here is kept, and one acked when it was handed to the
pool (acks early) is kept without asking, as nobody else can have it."""

from __future__ import annotations

import threading

from engine import message
from engine.worker.lanes import Delivery, PoolLane
from engine.worker.lanespec import LaneSpec
from engine.worker.ownership import Ownership
from pools.threads import ThreadsPool

from tests.integration.reliability_helpers import rapp  # noqa: F401


def test_a_paused_workers_queued_jobs_are_checked_before_they_run(rapp):
    broker, client = rapp.broker, rapp.client
    broker.ensure_groups(["default"])
    stream = broker.keys.queue("default")
    bodies = [message.encode_message(f"id-{i}", "t.noop", [], {}) for i in range(3)]
    for body in bodies:
        client.xadd(stream, {"m": body})
    # Given three entries the worker "zombie" fetched and handed to its threads pool
    [(_, held)] = broker.fetch("zombie", {stream: ">"}, count=3, block_ms=None)
    ids = [entry_id for entry_id, _ in held]
    pool = ThreadsPool(1, lambda outcome: None, runner=None)   # never started: jobs wait
    spec = LaneSpec(["default"], pool="threads", concurrency=1, prefetch=4)
    lane = PoolLane(spec, pool, broker.keys, make_broker=lambda: broker, consumer="zombie",
                    deliver=lambda item: None, stopping=threading.Event())
    inflight = {}
    for body, entry_id in zip(bodies, ids):
        delivery = Delivery(message.load_job(body, "default"), stream, entry_id, lane, None)
        inflight[delivery.job.id] = delivery
        pool.submit(delivery.job)
    # the first acked as it was handed over (acks early), the second reclaimed by a
    # survivor while the zombie was stopped, the third still pending on the zombie
    client.xack(stream, "engine", ids[0])
    inflight["id-0"].acked = True
    client.xclaim(stream, "engine", "survivor", 0, [ids[1]])
    # When the zombie's loop checks its lane after the pause
    Ownership(broker, "zombie", lost_after=3, inflight=inflight).verify(lane)
    # Then the pool holds nothing, and the buffer keeps the first and the third, in order
    assert pool.info()["queued"] == 0
    assert [d.job.id for d in lane.buffer] == ["id-0", "id-2"]
    assert inflight == {}
    assert lane.returned == 1 and not lane.unverified
