"""``engine run --pool asyncio`` with real workers: many coroutines at once, limits, the
blocking report, retries, revoke, warm and cold shutdown."""

import json
import signal
import subprocess
import sys

import pytest

from engine.exceptions import TimeLimitExceeded
from tests.apps.aio import (aadd, ablock, acatch_soft, add, aflaky, amark_and_sleep, asleep,
                            astubborn, awhoami, ssleep)
from tests.conftest import ROOT, wait_for, wait_started

APP = "tests.apps.aio"


@pytest.fixture
def aio(env):
    from tests.apps.aio import app
    app.close()
    yield app
    app.close()


def test_a_thousand_sleeping_coroutines_all_finish(aio, run_worker):
    # Given an asyncio worker of 1000 slots
    worker = run_worker("--pool", "asyncio", "-c", "1000", app=APP)
    # When 1000 tasks each await asyncio.sleep(1)
    results = asleep.delay_many([(1,)] * 1000)
    # Then every one finishes (a generous deadline: the point is completion, not speed)
    try:
        assert aio.gather(results, timeout=120) == [1] * 1000
    except TimeoutError:
        # seen once in a full run (1 of 1000): say where the missing ones are
        missing = [r.id for r in results if not r.ready()]
        inspect = aio.control.inspect(timeout=2)
        pytest.fail(f"{len(missing)} not done: {missing[:5]}; the worker holds: active "
                    f"{inspect.active()}, reserved {inspect.reserved()}, stats "
                    f"{inspect.stats()}; queue depth {aio.broker.depth('default')}; "
                    f"log:\n{worker.tail()}")


def test_async_and_plain_tasks_return_values_and_see_their_request(aio, run_worker):
    run_worker("--pool", "asyncio", "-c", "4", app=APP)
    me = awhoami.delay()
    assert aadd.delay(2, 3).get(timeout=60) == 5
    assert add.delay(2, 3).get(timeout=60) == 5       # a plain def: the sync threads
    assert me.get(timeout=60)["id"] == me.id


def test_soft_limit_is_caught_at_the_await(aio, run_worker):
    run_worker("--pool", "asyncio", "-c", "2", app=APP)
    r = acatch_soft.apply_async((60,), soft_time_limit=0.5, time_limit=30)
    assert r.get(timeout=60) == "caught"


def test_hard_limit_abandons_a_coroutine_swallowing_cancellation(aio, run_worker, prefix, env):
    # Given a one-slot asyncio worker
    worker = run_worker("--pool", "asyncio", "-c", "1", "-n", "aio1", app=APP)
    # When a coroutine that swallows every CancelledError passes its hard limit
    r = astubborn.apply_async((f"{prefix}:stubborn", 60), time_limit=0.5)
    # Then it is FAILURE with TimeLimitExceeded, and the next task runs on the slot
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=60)
    assert aadd.delay(1, 1).get(timeout=60) == 2
    # And it was cancelled, would not end, and was abandoned: in the log and in stats
    wait_for(lambda: "abandoned" in worker.log, message="the abandonment")
    assert r.id in worker.log
    assert int(aio.client.get(f"{prefix}:stubborn:swallowed") or 0) >= 1
    stats = _inspect(env, "stats")["aio1"]
    assert stats["lanes"][0]["pool_info"]["abandoned"] == 1


def test_plain_task_hard_limit_on_the_asyncio_pool(aio, run_worker):
    run_worker("--pool", "asyncio", "-c", "1", app=APP)
    r = ssleep.apply_async((60,), time_limit=0.5)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=60)
    assert add.delay(2, 2).get(timeout=60) == 4


def test_a_coroutine_blocking_the_loop_is_reported_in_the_log(aio, run_worker):
    worker = run_worker("--pool", "asyncio", "-c", "2", app=APP)
    r = ablock.delay(1.5)
    assert r.get(timeout=60) == "unblocked"
    wait_for(lambda: "blocked the asyncio loop" in worker.log, message="the report")
    lines = [x for x in worker.log.splitlines() if "blocked the asyncio loop" in x]
    assert any(r.id in line for line in lines), lines


def test_retries(aio, run_worker, prefix):
    run_worker("--pool", "asyncio", "-c", "2", app=APP)
    assert aflaky.delay(f"{prefix}:flaky").get(timeout=60) == 3


def test_revoke_with_terminate_cancels_the_coroutine(aio, run_worker, prefix):
    run_worker("--pool", "asyncio", "-c", "2", app=APP)
    key = f"{prefix}:mark"
    r = amark_and_sleep.delay(key, 60)
    wait_for(lambda: aio.client.get(key), message="the task to start")
    aio.revoke(r.id, terminate=True)
    wait_for(lambda: aio.client.get(f"{key}:cancelled"), message="the coroutine's cancellation")
    wait_for(lambda: r.state == "REVOKED", message="REVOKED")


def test_warm_shutdown_lets_running_coroutines_finish(aio, run_worker):
    worker = run_worker("--pool", "asyncio", "-c", "10", app=APP)
    running = [asleep.delay(1.0) for _ in range(5)]
    for r in running:
        wait_started(aio, r.id)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert [r.get(timeout=5) for r in running] == [1.0] * 5


def test_cold_shutdown_leaves_running_coroutines_unacked(aio, run_worker):
    worker = run_worker("--pool", "asyncio", "-c", "2", app=APP)
    long = asleep.delay(60)
    wait_started(aio, long.id)
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "warm shutdown" in worker.log, message="warm shutdown started")
    worker.signal(signal.SIGINT)
    assert worker.wait(30) == 0
    assert long.state == "PENDING"
    assert aio.broker.depth("default")["unacked"] == 1


def _inspect(env, verb):
    out = subprocess.run([sys.executable, "-m", "engine", "inspect", "-A", APP, verb, "--json",
                          "-t", "5"], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    return json.loads(out.stdout)


def test_an_asyncio_lane_beside_a_prefork_lane(aio, run_worker, env):
    # Given a worker with an asyncio lane for io and a prefork lane for cpu
    run_worker("--lane", "io=asyncio:50", "--lane", "cpu=prefork:1", "-n", "mixed", app=APP)
    lanes = _inspect(env, "stats")["mixed"]["lanes"]
    assert sorted(lane["pool_info"]["pool"] for lane in lanes) == ["asyncio", "prefork"]
    # When coroutines go to io and a plain task to cpu
    io = [aadd.apply_async((i, 1), queue="io") for i in range(20)]
    cpu = add.apply_async((2, 2), queue="cpu")
    # Then both lanes run theirs
    assert aio.gather(io, timeout=60) == [i + 1 for i in range(20)]
    assert cpu.get(timeout=60) == 4
