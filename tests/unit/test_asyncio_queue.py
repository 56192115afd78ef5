"""The jobs the asyncio pool holds behind its running ones (coroutines waiting for a slot,
plain jobs waiting for a sync thread): one that has not started can be given up
(``withdraw``, ``take_back``), and once a supervisor's loop drives the pool (``turned``)
none starts while that loop has stopped turning (a pause)."""

import time

import pytest

from pools.asyncio import AsyncioPool
from pools.asyncio.queued import LOOP_FRESH
from pools.base import PoolOptions
from pools.testing import touch, value

from tests.unit.test_asyncio_pool import AsyncRunner


@pytest.fixture
def make(harnesses):
    return lambda concurrency, prefetch=2: harnesses(
        AsyncioPool, concurrency, runner=AsyncRunner(), options=PoolOptions(prefetch=prefetch))


def held_and_queued(harness, task, *args):
    """The one slot held until its gate opens, and ``task(*args)`` queued behind it (a
    coroutine job behind ``a.gate``, a plain one behind ``sample.hold``)."""
    gate = harness.gate()
    holder = "a.gate" if task.startswith("a.") else "sample.hold"
    running = harness.submit(harness.job(holder, harness.path("held"), gate), wait=False)
    harness.wait_started(running)
    queued = harness.submit(harness.job(task, *args), wait=False)
    return gate, running, queued


@pytest.mark.parametrize("task", ["a.value", "sample.ok"])
def test_withdraw_gives_up_a_queued_job_only(make, task):
    harness = make(1)
    gate, running, queued = held_and_queued(harness, task, *([1] if task == "a.value" else []))
    assert harness.call("info")["queued"] == 1
    # A queued job is given up (no outcome will come); a running or unknown one is not
    assert harness.call("withdraw", queued.id) is True
    assert harness.call("withdraw", queued.id) is False
    assert harness.call("withdraw", running.id) is False
    assert harness.call("withdraw", "no-such-job") is False
    assert harness.call("info")["queued"] == 0
    touch(gate)
    assert value(harness.wait_outcome(running)) in ("through", "released")
    # the slot goes on with what comes next, and the withdrawn job never started
    assert value(harness.wait_outcome(harness.run(task, *([2] if task == "a.value" else []))))
    assert harness.outcome(queued) is None and queued.id not in harness.started
    harness.check()


def test_take_back_gives_up_the_queued_jobs_in_order(make):
    harness = make(1, prefetch=3)
    gate, running, first = held_and_queued(harness, "a.value", 1)
    queued = [first, harness.submit(harness.job("a.value", 2), wait=False)]
    # When the pool is asked for what has not started (a supervisor back from a pause)
    assert harness.call("take_back") == [j.id for j in queued]
    assert harness.call("take_back") == []
    touch(gate)
    assert value(harness.wait_outcome(running)) == "through"
    assert value(harness.wait_outcome(harness.run("a.value", 3))) == 3
    assert all(harness.outcome(j) is None and j.id not in harness.started for j in queued)
    harness.check()


@pytest.mark.parametrize("task", ["a.value", "sample.ok"])
def test_after_a_pause_a_queued_job_waits_for_the_loop_to_turn(make, task):
    harness = make(1)
    pool = harness.pool
    harness.call("turned")               # a supervisor drives this pool
    gate, running, queued = held_and_queued(harness, task, *([1] if task == "a.value" else []))
    # Given a loop that has not turned for longer than LOOP_FRESH (as after a SIGSTOP)
    harness.wait_for(lambda: time.monotonic() - pool._turned > LOOP_FRESH, "a stale loop",
                     tick=False)
    # When the running job ends, Then the queued one does not start
    touch(gate)
    harness.wait_outcome(running)
    gated = (lambda: pool._loop_gated) if task == "a.value" else \
        (lambda: pool._threads_gated == 1)
    harness.wait_for(gated, "the queued job to wait for a turn", tick=False)
    assert queued.id not in harness.started and harness.outcome(queued) is None
    # until the loop turns (having taken back what was no longer its own)
    harness.call("turned")
    assert value(harness.wait_outcome(queued)) in (1, "ok")
    harness.check()
