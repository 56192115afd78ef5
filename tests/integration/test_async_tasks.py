"""``async def`` tasks on the pools that run plain functions: prefork, threads, solo, gevent
(each slot keeps one event loop; engine/worker/slotloop.py)."""

import pytest

from engine.exceptions import TimeLimitExceeded
from tests.apps.aio import aadd, acatch_soft, add, aflaky, aloop, asleep, astubborn, awhoami

POOLS = ["prefork", "threads", "solo", "gevent"]


@pytest.fixture
def aio(env):
    from tests.apps.aio import app
    app.close()
    yield app
    app.close()


@pytest.mark.parametrize("pool", POOLS)
def test_async_task_returns_its_value_and_sees_its_request(aio, run_worker, pool):
    # Given a worker on a pool of plain slots
    run_worker("--pool", pool, "-c", "2", app="tests.apps.aio")
    # When async tasks (and a plain one) are sent, several times on the same slots
    results = [aadd.delay(i, 1) for i in range(6)]
    me = awhoami.delay()
    # Then each returns its value, and self.request is the task's own
    assert [r.get(timeout=60) for r in results] == [i + 1 for i in range(6)]
    assert me.get(timeout=60)["id"] == me.id
    assert add.delay(2, 3).get(timeout=60) == 5


@pytest.mark.parametrize("pool", POOLS)
def test_a_slot_keeps_its_event_loop(aio, run_worker, pool):
    # Given a one-slot worker
    run_worker("--pool", pool, "-c", "1", app="tests.apps.aio")
    # When async tasks run one after another
    seen = [aloop.delay().get(timeout=60) for _ in range(3)]
    # Then the same loop ran them all (it is made once per slot, not per task)
    assert len({pid for pid, _ in seen}) == 1
    assert [runs for _, runs in seen] == [1, 2, 3]


@pytest.mark.parametrize("pool", POOLS)
def test_async_soft_limit_is_raised_at_the_await(aio, run_worker, pool):
    # Given a worker on a pool of plain slots
    run_worker("--pool", pool, "-c", "1", app="tests.apps.aio")
    # When an async task waiting at one long await passes its soft limit
    r = acatch_soft.apply_async((60,), soft_time_limit=0.5, time_limit=30)
    # Then SoftTimeLimitExceeded was raised at that await and the task caught it
    assert r.get(timeout=60) == "caught"


@pytest.mark.parametrize("pool", POOLS)
def test_async_hard_limit_fails_the_task_and_the_slot_goes_on(aio, run_worker, pool):
    run_worker("--pool", pool, "-c", "1", app="tests.apps.aio")
    r = asleep.apply_async((60,), time_limit=0.5)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=60)
    assert aadd.delay(2, 2).get(timeout=60) == 4


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_async_hard_limit_on_a_coroutine_swallowing_cancellation(aio, run_worker, pool, prefix):
    # Given a one-slot worker, and a coroutine that swallows every CancelledError
    run_worker("--pool", pool, "-c", "1", app="tests.apps.aio")
    r = astubborn.apply_async((f"{prefix}:stubborn", 60), time_limit=0.5)
    # When its hard limit passes, Then it is FAILURE with TimeLimitExceeded
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=60)
    # And the slot goes on (the stubborn coroutine was closed with its loop)
    assert aadd.delay(2, 2).get(timeout=60) == 4


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_async_task_retries(aio, run_worker, pool, prefix):
    run_worker("--pool", pool, "-c", "1", app="tests.apps.aio")
    assert aflaky.delay(f"{prefix}:flaky").get(timeout=60) == 3


def test_calling_an_async_task_returns_its_coroutine():
    import asyncio
    coro = aadd(2, 3)
    assert asyncio.iscoroutine(coro)
    assert asyncio.run(coro) == 5
