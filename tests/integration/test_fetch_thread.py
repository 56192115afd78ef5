"""A lane's fetch thread outlives its own bugs: an error that is no RedisError is logged,
and the thread starts over instead of leaving the lane without a fetcher."""

from __future__ import annotations

import threading

from engine.broker import Broker
from engine.testing import wait_for
from engine.worker.lanes import PoolLane
from engine.worker.lanespec import LaneSpec
from pools.threads import ThreadsPool

from tests.integration.reliability_helpers import rapp  # noqa: F401


class FailsOnce(Broker):
    """A broker whose first fetch fails as a bug would (not a Redis error)."""

    failures = 0

    def fetch(self, *args, **kwargs):
        if FailsOnce.failures == 0:
            FailsOnce.failures += 1
            raise RuntimeError("a bug in the fetch path")
        return super().fetch(*args, **kwargs)


def test_a_fetch_thread_that_fails_starts_over(rapp, caplog):
    # Given a lane whose fetch thread's first read fails with an error that is a bug
    broker = rapp.broker
    broker.ensure_groups(["default"])
    delivered: list = []
    stopping = threading.Event()
    spec = LaneSpec(["default"], pool="threads", concurrency=2, prefetch=4)
    lane = PoolLane(spec, ThreadsPool(2, lambda outcome: None, runner=None), broker.keys,
                    make_broker=lambda: FailsOnce(rapp.new_client(), prefix=broker.keys.prefix),
                    consumer="w-fetch", deliver=delivered.append, stopping=stopping)
    lane.start(lambda lane: None)
    try:
        # When a message is sent after it failed
        wait_for(lambda: FailsOnce.failures == 1, message="the first fetch to fail")
        rapp.client.xadd(broker.keys.queue("default"), {"m": b"body"})
        # Then the thread, started over, delivers it; the failure is in the log
        wait_for(lambda: delivered, message="the message to be delivered")
        [(_, [(_, [(_, fields)])])] = delivered
        assert fields == [b"m", b"body"]
        assert "the fetch thread failed" in caplog.text
    finally:
        stopping.set()
        lane.stop_fetching()
        lane.pool.stop(5)
