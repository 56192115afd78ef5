"""Taking back a restarted worker's pending messages, round by round: a round that fails
after its read (Redis answers the read, then refuses the XPENDING that counts the
deliveries) must read the same entries again next time, or they stay pending on the live
worker for ever."""

from __future__ import annotations

import threading

import redis

from engine.broker import Broker
from engine.worker.lanes import PoolLane
from engine.worker.lanespec import LaneSpec
from engine.worker.recovery import Recovery
from pools.threads import ThreadsPool

from tests.integration.reliability_helpers import own_redis, rapp  # noqa: F401


def test_a_failed_take_back_round_is_read_again(rapp, own_redis):
    # Given three messages pending on the worker name "back" from an earlier life
    broker, client = rapp.broker, rapp.client
    broker.ensure_groups(["default"])
    stream = broker.keys.queue("default")
    for i in range(3):
        client.xadd(stream, {"m": b"body %d" % i})
    [(_, held)] = broker.fetch("back", {stream: ">"}, count=3, block_ms=None)
    # and a take-back whose client may not send XPENDING, for now
    client.acl_setuser("taker", enabled=True, nopass=True, keys=["*"],
                       commands=["+@all", "-xpending"])
    taker = Broker(redis.Redis.from_url(own_redis.url, username="taker"),
                   prefix=broker.keys.prefix)
    spec = LaneSpec(["default"], pool="threads", concurrency=2, prefetch=4)
    lane = PoolLane(spec, ThreadsPool(2, lambda outcome: None, runner=None), broker.keys,
                    make_broker=lambda: taker, consumer="back", deliver=lambda item: None,
                    stopping=threading.Event())
    taken: list = []
    recovery = Recovery(taker, "back",
                        lambda lane, batch, counts: taken.extend(e for _, es in batch for e in es))
    # When a round fails after its read
    try:
        recovery.take_back(lane)
    except redis.ResponseError as exc:
        assert "xpending" in str(exc).lower()
    else:
        raise AssertionError("the XPENDING was not refused")
    assert taken == []
    # Then the next round (housekeeping's, once Redis takes XPENDING) takes them all back
    client.acl_setuser("taker", commands=["+xpending"])
    recovery.reclaim([lane], forget=lambda alive: None)
    assert [entry_id for entry_id, _ in taken] == [entry_id for entry_id, _ in held]
