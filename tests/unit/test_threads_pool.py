"""The threads pool's own queue: up to ``prefetch`` jobs a slot wait in the pool, a slot
thread goes from one to the next, a waiting job can be taken back before it runs (``kill``,
``withdraw``, ``take_back``), and after a pause none starts before the loop turns
(``turned``). The conformance suite (tests/conformance/test_threads.py) covers the rest."""

import time

import pytest

from pools.base import PoolOptions
from pools.testing import assert_time_limit, touch, value
from pools.threads import LOOP_FRESH, ThreadsPool


@pytest.fixture
def make(harnesses):
    return lambda concurrency, prefetch: harnesses(ThreadsPool, concurrency,
                                                   options=PoolOptions(prefetch=prefetch))


def one_running_one_waiting(harness, waiting):
    """A job on the one slot until its gate opens, and ``waiting`` queued behind it."""
    gate = harness.gate()
    running = harness.submit(harness.job("sample.hold", harness.path("running"), gate),
                             wait=False)
    queued = harness.submit(waiting, wait=False)
    harness.wait_started(running)
    return gate, running, queued


def test_a_slot_holds_its_prefetch_and_runs_it_in_order(make):
    harness = make(1, 3)
    assert harness.call("free_slots") == 3
    # Given three held jobs on one slot: one runs, two wait in the pool
    gate = harness.gate()
    jobs = [harness.submit(harness.job("sample.hold", harness.path(f"held{i}"), gate),
                           wait=False) for i in range(3)]
    harness.wait_started(jobs[0])
    assert harness.call("free_slots") == 0
    assert harness.call("info")["queued"] == 2
    assert set(harness.started) == {jobs[0].id}
    # When the gate opens, Then the slot runs the waiting ones, in order, without a submit
    touch(gate)
    harness.wait_for(lambda: all(harness.outcome(j) for j in jobs), "three outcomes")
    assert [value(harness.outcome(j)) for j in jobs] == ["released"] * 3
    starts = sorted(jobs, key=lambda j: harness.started[j.id])
    assert starts == jobs
    assert harness.call("free_slots") == 3
    harness.check()


def test_killing_a_waiting_job_takes_it_back_before_it_runs(make):
    harness = make(1, 2)
    gate, running, waiting = one_running_one_waiting(
        harness, harness.job("sample.hold", harness.path("waiting"), harness.gate()))
    # When the waiting one is killed (a hard limit, a revoke with terminate)
    harness.call("kill", waiting.id)
    # Then it is reported at once as killed, and it never starts
    assert_time_limit(harness.wait_outcome(waiting))
    assert harness.call("info")["queued"] == 0
    assert harness.call("free_slots") == 1
    # while the running one is untouched and ends as it would have
    touch(gate)
    assert value(harness.wait_outcome(running)) == "released"
    assert waiting.id not in harness.started
    harness.call("kill", waiting.id)     # a second kill of a job already reported: nothing
    assert len(harness.outcomes[waiting.id]) == 1
    harness.check()


def test_take_back_hands_over_the_waiting_jobs_in_order(make):
    harness = make(1, 4)
    gate = harness.gate()
    jobs = [harness.submit(harness.job("sample.hold", harness.path(f"held{i}"), gate),
                           wait=False) for i in range(4)]
    harness.wait_started(jobs[0])
    # When the pool is asked for what it has not started (a supervisor back from a pause)
    taken = harness.call("take_back")
    # Then it hands over the three waiting ones, in order, and they get no outcome
    assert taken == [j.id for j in jobs[1:]]
    assert harness.call("info")["queued"] == 0
    assert harness.call("free_slots") == 3
    touch(gate)
    assert value(harness.wait_outcome(jobs[0])) == "released"
    assert harness.call("take_back") == []
    assert all(harness.outcome(j) is None and j.id not in harness.started for j in jobs[1:])
    # and the slot goes on with what comes next
    assert value(harness.wait_outcome(harness.run("sample.ok"))) == "ok"
    harness.check()


def test_after_a_pause_a_queued_job_waits_for_the_loop_to_turn(make):
    harness = make(1, 2)
    pool = harness.pool
    harness.call("turned")               # a supervisor drives this pool
    gate, first, second = one_running_one_waiting(harness, harness.job("sample.ok"))
    # Given a loop that has not turned for longer than LOOP_FRESH (as after a SIGSTOP)
    harness.wait_for(lambda: time.monotonic() - pool._turned > LOOP_FRESH, "a stale loop",
                     tick=False)
    # When the running job ends, Then the slot thread does not start the queued one
    touch(gate)
    assert value(harness.wait_outcome(first)) == "released"
    harness.wait_for(lambda: pool._gated == 1, "the slot thread to wait for a turn",
                     tick=False)
    assert second.id not in harness.started
    # until the loop turns (having taken back what was no longer its own)
    harness.call("turned")
    assert value(harness.wait_outcome(second)) == "ok"
    harness.check()


def test_a_pool_no_loop_drives_never_waits_for_a_turn(make):
    harness = make(1, 3)
    jobs = [harness.submit(harness.job("sample.ok"), wait=False) for _ in range(3)]
    harness.wait_for(lambda: all(harness.outcome(j) for j in jobs), "three outcomes")
    assert harness.pool._turned is None
    harness.check()


def test_withdraw_takes_out_a_waiting_job_only(make):
    harness = make(1, 2)
    gate, running, waiting = one_running_one_waiting(harness, harness.job("sample.ok"))
    # A waiting job comes out (no outcome will come); a running or unknown one does not
    assert harness.call("withdraw", waiting.id) is True
    assert harness.call("withdraw", running.id) is False
    assert harness.call("withdraw", "no-such-job") is False
    assert harness.call("free_slots") == 1
    touch(gate)
    assert value(harness.wait_outcome(running)) == "released"
    assert harness.outcome(waiting) is None and waiting.id not in harness.started
    assert harness.call("info")["killed"] == 0
    harness.check()
