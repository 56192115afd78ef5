"""Coroutine jobs on the asyncio pool, through the conformance harness (which plays the
supervisor) with a runner that also has ``execute_async``; plain jobs are the suite's."""

import asyncio
import logging
import time

import msgpack
import pytest

from engine.exceptions import SoftTimeLimitExceeded
from pools.asyncio import AsyncioPool
from pools.base import SUCCESS, Outcome
from pools.testing import SampleRunner, touch, value

ASYNC = {}


def async_task(name):
    def register(fn):
        ASYNC[name] = fn
        return fn
    return register


class AsyncRunner(SampleRunner):
    """SampleRunner plus coroutine jobs for the names in ASYNC."""

    def execute_async(self, job):
        fn = ASYNC.get(job.task)
        return None if fn is None else _execute(fn, job)


async def _execute(fn, job):
    try:
        return Outcome(job.id, SUCCESS, msgpack.packb(await fn(*job.args, **job.kwargs)))
    except Exception as exc:
        return Outcome.from_exception(job.id, exc)


_barrier = {"count": 0, "event": None}


@async_task("a.value")
async def a_value(x):
    await asyncio.sleep(0)
    return x


@async_task("a.now")
async def a_now(x):
    return x      # no await: it ends in the loop turn it first runs in


@async_task("a.barrier")
async def a_barrier(n):
    if _barrier["event"] is None:
        _barrier["event"] = asyncio.Event()
    _barrier["count"] += 1
    if _barrier["count"] >= n:
        _barrier["event"].set()
    await asyncio.wait_for(_barrier["event"].wait(), 60)
    return True


@async_task("a.catch_soft")
async def a_catch_soft(marker):
    touch(marker)
    try:
        await asyncio.sleep(60)
    except SoftTimeLimitExceeded:
        return "caught"
    return "finished"


@async_task("a.swallow")
async def a_swallow(marker):
    touch(marker)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            await asyncio.sleep(0.05)
        except (asyncio.CancelledError, SoftTimeLimitExceeded):
            pass
    return "outlived"


@async_task("a.block")
async def a_block(seconds):
    time.sleep(seconds)      # holds the loop
    return "unblocked"


@pytest.fixture
def make(harnesses):
    return lambda concurrency: harnesses(AsyncioPool, concurrency, runner=AsyncRunner())


def test_coroutine_jobs_and_plain_jobs_return_their_values(make):
    harness = make(4)
    jobs = [harness.run("a.value", i) for i in range(10)] + [harness.run("sample.echo", 7)]
    harness.wait_for(lambda: all(harness.outcome(j) for j in jobs), "11 outcomes")
    assert [value(harness.outcome(j)) for j in jobs[:10]] == list(range(10))
    assert value(harness.outcome(jobs[10]))["args"] == [7]
    harness.check()


def test_five_hundred_coroutines_run_at_once_on_one_loop(make):
    _barrier.update(count=0, event=None)
    harness = make(500)
    # each waits until all 500 have arrived: none returns unless all run at once
    jobs = [harness.run("a.barrier", 500) for _ in range(500)]
    harness.wait_for(lambda: all(harness.outcome(j) for j in jobs), "500 outcomes")
    assert all(value(harness.outcome(j)) is True for j in jobs)
    harness.check()


def test_soft_limit_is_raised_at_the_coroutines_await(make):
    harness = make(2)
    marker = harness.path("soft")
    job = harness.run("a.catch_soft", marker)
    harness.wait_file(marker)
    harness.call("interrupt", job.id)
    assert value(harness.wait_outcome(job)) == "caught"
    harness.check()


def test_hard_limit_on_a_coroutine_swallowing_cancellation(make):
    harness = make(1)
    marker = harness.path("swallow")
    # Given a coroutine that swallows every CancelledError, with a hard limit
    job = harness.run("a.swallow", marker, hard=0.5)
    # When the limit passes, Then it is FAILURE with TimeLimitExceeded
    outcome = harness.wait_outcome(job)
    assert outcome.exc_type == "engine.exceptions.TimeLimitExceeded"
    # and, as it would not end, it is abandoned (counted) while the slot runs the next job
    nxt = harness.run("a.value", 42)
    assert value(harness.wait_outcome(nxt)) == 42
    harness.wait_for(lambda: harness.call("info")["abandoned"] == 1, "the abandonment")
    assert harness.call("info")["killed"] == 1
    harness.check()


def test_a_coroutine_blocking_the_loop_is_reported_by_name(make, caplog):
    harness = make(2)
    with caplog.at_level(logging.WARNING, logger="pools.asyncio"):
        job = harness.run("a.block", 1.5)
        assert value(harness.wait_outcome(job)) == "unblocked"
        harness.wait_for(lambda: harness.call("info")["loop_blocked"] >= 1, "the report")
    lines = [r.getMessage() for r in caplog.records if "blocked the asyncio loop" in r.getMessage()]
    # one line for the one stall (a busy machine may add others, not naming this job)
    assert sum(job.id in line for line in lines) == 1, lines
    harness.check()


def _shut(path, since):
    """True while the file ``path`` does not exist (for 60 s at most from ``since``)."""
    import os
    return not os.path.exists(path) and time.monotonic() < since + 60


@async_task("a.hold_loop")
async def a_hold_loop(marker, release):
    """Holds the loop (a blocking wait, on purpose) until the file ``release`` exists."""
    touch(marker)
    since = time.monotonic()
    while _shut(release, since):
        time.sleep(0.01)
    return "released"


def test_jobs_submitted_while_the_loop_is_busy_take_one_wake_up(make):
    harness = make(100)
    pool = harness.pool
    wakes = []
    begin_incoming = pool._begin_incoming

    def counting():
        wakes.append(len(pool._incoming))
        begin_incoming()

    pool._begin_incoming = counting
    marker, release = harness.path("holding"), harness.path("release")
    # Given a loop held by one job
    holder = harness.run("a.hold_loop", marker, release)
    harness.wait_file(marker)
    wakes.clear()
    # When 50 coroutine jobs are submitted meanwhile and the loop is let go
    jobs = [harness.run("a.value", i) for i in range(50)]
    touch(release)
    harness.wait_for(lambda: all(harness.outcome(j) for j in jobs + [holder]), "51 outcomes")
    # Then they all ran, with one wake-up of the loop (not one a job): the first submit sent
    # it; the holder's slot, freed first, may have begun them all before it arrived
    assert [value(harness.outcome(j)) for j in jobs] == list(range(50))
    assert len(wakes) == 1 and wakes[0] in (0, 50), wakes
    harness.check()


@async_task("a.gate")
async def a_gate(marker, gate):
    """Touches ``marker``, then waits (awaiting, the loop free) until ``gate`` exists."""
    touch(marker)
    since = time.monotonic()
    while _shut(gate, since):
        await asyncio.sleep(0.01)
    return "through"


def test_jobs_beyond_the_slots_wait_in_the_pool_and_take_the_first_slot_freed(make):
    harness = make(2)
    # Given both slots held, the pool still takes prefetch (2 a slot, running included)
    gates = [harness.path(f"gate{i}") for i in range(2)]
    holders = [harness.run("a.gate", harness.path(f"held{i}"), gates[i]) for i in range(2)]
    harness.wait_started(*holders)
    assert harness.call("free_slots") == 2
    waiting = [harness.run("a.value", i) for i in range(2)]
    assert harness.call("free_slots") == 0
    # Then the waiting jobs do not start while every slot is taken
    info = harness.call("info")
    assert (info["running"], info["queued"]) == (2, 2)
    assert not any(j.id in harness.started for j in waiting)
    # When one slot frees, Then the waiting jobs run in it, one at a time beside the holder
    touch(gates[0])
    harness.wait_for(lambda: all(harness.outcome(j) for j in waiting + holders[:1]),
                     "the first holder and both waiting jobs")
    assert [value(harness.outcome(j)) for j in waiting] == [0, 1]
    assert harness.outcome(holders[1]) is None and harness.call("info")["running"] == 1
    touch(gates[1])
    assert value(harness.wait_outcome(holders[1])) == "through"
    harness.check()


def test_a_killed_coroutines_slot_goes_to_the_job_waiting_for_it(make):
    harness = make(1)
    marker = harness.path("swallow")
    # Given a coroutine that will not end when cancelled, and a job waiting behind it
    stuck = harness.run("a.swallow", marker, hard=0.5)
    harness.wait_file(marker)
    behind = harness.run("a.value", 7)
    # When its hard limit kills it, Then the waiting job runs in its slot, while it lingers
    assert harness.wait_outcome(stuck).exc_type == "engine.exceptions.TimeLimitExceeded"
    assert value(harness.wait_outcome(behind)) == 7
    harness.check()


def test_stop_hands_back_the_jobs_waiting_for_a_slot(make, recwarn):
    harness = make(1)
    marker, gate = harness.path("held"), harness.path("gate")
    holder = harness.run("a.gate", marker, gate)
    harness.wait_file(marker)
    waiting = harness.run("a.value", 1)
    # When the pool stops while one job holds the slot and one waits (the holder lets go
    # half a second later, well after stop took back what had not begun)
    import threading
    threading.Timer(0.5, touch, (gate,)).start()
    returned = harness.call("stop", 30)
    harness.running = False
    # Then the waiting one is handed back (no outcome), the holder finished
    assert returned == [waiting.id]
    assert value(harness.wait_outcome(holder, tick=False)) == "through"
    assert harness.outcome(waiting) is None
    import gc
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]
    harness.check()


def test_a_start_is_reported_at_once_with_a_limit_and_rides_on_a_quick_end_without(make):
    harness = make(4)
    starts = []
    on_start = harness.pool.on_start
    harness.pool.on_start = lambda job_id: (starts.append(job_id), on_start(job_id))
    # Given coroutine jobs that end in their first turn, some with a limit
    plain = [harness.run("a.now", i) for i in range(8)]
    limited = [harness.run("a.now", i, hard=60) for i in range(4)]
    harness.wait_for(lambda: all(harness.outcome(j) for j in plain + limited), "12 outcomes")
    # Then a limited job's start came through on_start (its clock starts there), before
    # its end; the others' starts came with their outcomes (Outcome.began), none twice
    assert all(j.id in starts and not harness.outcome(j).began for j in limited)
    assert all(j.id not in starts and harness.outcome(j).began for j in plain)
    harness.check()


def test_a_running_job_without_a_limit_has_its_start_reported_while_it_runs(make):
    harness = make(2)
    # Given a coroutine job that awaits, and one that holds the loop (no limit on either)
    waiting = harness.run("a.gate", harness.path("held"), gate := harness.path("gate"))
    harness.wait_started(waiting)
    marker, release = harness.path("holding"), harness.path("release")
    holder = harness.run("a.hold_loop", marker, release)
    harness.wait_file(marker)
    # Then each start is reported before its end: the awaiting one by the loop's next
    # turns, the one holding the loop by the watchdog that sees it held
    harness.wait_started(holder)
    assert harness.outcome(holder) is None
    touch(release)
    touch(gate)
    assert value(harness.wait_outcome(holder)) == "released"
    assert value(harness.wait_outcome(waiting)) == "through"
    assert not harness.outcome(waiting).began and not harness.outcome(holder).began
    harness.check()
