"""``--lane`` parsing and the choice of which lanes run in a process of their own."""

import pytest

from engine.exceptions import ConfigurationError
from engine.worker.isolation import child_name, wants_isolation
from engine.worker.lanespec import parse_lane
from pools.base import PoolOptions
from pools.prefork import PreforkPool
from pools.solo import SoloPool
from pools.threads import ThreadsPool


def test_queues_pool_and_concurrency():
    spec = parse_lane("io,mail=gevent:500", prefetch=3)
    assert (spec.queues, spec.pool, spec.concurrency, spec.prefetch, spec.name) == \
        (["io", "mail"], "gevent", 500, 3, "io,mail")


def test_per_lane_options_override_the_worker_flags():
    spec = parse_lane("cpu=prefork:4,prefetch=2,soft=5,hard=10,max-tasks=100,max-memory=2000,"
                      "name=crunch,isolate=yes", prefetch=8,
                      options=PoolOptions(max_memory_per_child=9999, app_path="tasks"))
    assert (spec.prefetch, spec.soft_time_limit, spec.time_limit, spec.name, spec.isolate) == \
        (2, 5.0, 10.0, "crunch", True)
    assert spec.options.max_tasks_per_child == 100
    assert spec.options.max_memory_per_child == 2000
    assert spec.options.app_path == "tasks"


def test_a_class_path_pool_keeps_its_colon():
    spec = parse_lane("x=pkg.mod:Class:3")
    assert (spec.pool, spec.concurrency) == ("pkg.mod:Class", 3)


@pytest.mark.parametrize("text", ["cpu", "=prefork:2", "cpu=prefork:0", "cpu=prefork:x",
                                  "cpu=prefork:2,bogus=1", "cpu=prefork:2,soft=-1",
                                  "cpu=prefork:2,isolate=maybe", "cpu=prefork:2,prefetch"])
def test_a_bad_lane_is_one_clear_error(text):
    with pytest.raises(ConfigurationError, match="bad lane"):
        parse_lane(text)


def test_which_lanes_get_a_process_of_their_own():
    from pools.gevent import GeventPool
    assert wants_isolation(parse_lane("io=gevent:100"), GeventPool)
    assert not wants_isolation(parse_lane("cpu=prefork:2"), PreforkPool)
    assert not wants_isolation(parse_lane("cpu=prefork:2,max-memory=100000"), PreforkPool)
    assert wants_isolation(parse_lane("t=threads:8,max-memory=100000"), ThreadsPool)
    assert not wants_isolation(parse_lane("t=threads:8"), ThreadsPool)
    assert wants_isolation(parse_lane("s=solo:1,isolate=yes"), SoloPool)
    assert not wants_isolation(parse_lane("io=gevent:10,isolate=no"), GeventPool)


def test_a_lane_process_name_is_safe_in_a_destination_list():
    assert child_name("w@host", "io,mail") == "w@host.io+mail"


def _lane(concurrency: int, prefetch: int):
    from engine.broker import Keys
    import threading
    from engine.worker.lanes import PoolLane
    from engine.worker.lanespec import LaneSpec
    # the budget alone: no pool, and no fetch thread is ever started
    return PoolLane(LaneSpec(queues=["q"], pool="threads", concurrency=concurrency,
                             prefetch=prefetch), pool=None, broker_keys=Keys("t"),
                    make_broker=None, consumer="c", deliver=None, stopping=threading.Event())


def test_lane_holds_its_whole_prefetch_until_it_knows_task_times():
    lane = _lane(2, 64)
    lane.resize()
    assert lane.capacity == 128 and lane.low_water == 64


def test_short_tasks_get_deep_batches_long_ones_are_not_hoarded():
    # Given a lane of 2 slots, prefetch at most 64
    lane = _lane(2, 64)
    # When its tasks take 1 ms: about 50 ms of work per slot
    for _ in range(200):
        lane.note_runtime(0.001)
    lane.resize()
    assert lane.capacity == 2 * 50
    # When they take a second: one running and one waiting per slot
    for _ in range(400):
        lane.note_runtime(1.0)
    lane.resize()
    assert lane.capacity == 2 * 2
    # And no-ops go back to the full limit
    for _ in range(400):
        lane.note_runtime(0.00001)
    lane.resize()
    assert lane.capacity == 128


def test_prefetch_one_holds_only_what_runs():
    lane = _lane(3, 1)
    for _ in range(10):
        lane.note_runtime(5.0)
    lane.resize()
    assert lane.capacity == 3
