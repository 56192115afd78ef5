"""The jobs prefork's ring holds behind the running ones: one no child claimed yet can be
taken back (``withdraw``, ``take_back``), and once a supervisor's loop drives the pool
(``turned``) no child claims one while that loop has stopped turning (a pause)."""

from __future__ import annotations

import os
import time

from pools.prefork import child

from tests.unit.prefork_driver import Driver
from tests.unit.prefork_driver import driver  # noqa: F401 (a fixture)


def one_running_one_queued(d: Driver, *args) -> tuple[str, str, str]:
    """The one child held until the gate opens, and ``echo(*args)`` queued behind it."""
    gate = d.path("gate")
    running = d.submit("hold", d.path("running"), gate)
    d.wait_file(d.path("running"))
    d.wait(lambda: running in d.started, "the pool to know the job runs")
    return gate, running, d.submit("echo", *args)


def test_withdraw_takes_out_a_queued_job_only(driver):
    d = driver(concurrency=1)
    gate, running, queued = one_running_one_queued(d, 1)
    free = d.pool.free_slots()
    # A queued job comes out (no outcome will come); a running or unknown one does not
    assert d.pool.withdraw(queued) is True
    assert d.pool.withdraw(queued) is False
    assert d.pool.withdraw(running) is False
    assert d.pool.withdraw("no-such-job") is False
    assert d.pool.free_slots() == free + 1
    assert d.pool.info()["queued"] == 0
    open(gate, "w").close()
    assert d.value(running) in d.pids
    # the child goes on with what comes next, and the withdrawn job never ran
    assert d.value(d.submit("echo", 2)) == [2]
    assert queued not in d.outcomes and queued not in d.started
    assert d.pool.info()["killed"] == 0


def test_take_back_hands_over_the_queued_jobs_in_order(driver):
    d = driver(concurrency=1, prefetch=4)
    gate, running, first = one_running_one_queued(d, 1)
    queued = [first] + [d.submit("echo", i) for i in (2, 3)]
    # When the pool is asked for what no child claimed (a supervisor back from a pause)
    taken = d.pool.take_back()
    # Then it hands over the three queued ones, in order, and they get no outcome
    assert taken == queued
    assert d.pool.info()["queued"] == 0
    assert d.pool.take_back() == []
    open(gate, "w").close()
    assert d.value(running) in d.pids
    assert d.value(d.submit("echo", 4)) == [4]
    assert all(j not in d.outcomes and j not in d.started for j in queued)


def test_after_a_pause_a_queued_job_waits_for_the_loop_to_turn(driver):
    d = driver(concurrency=1)
    d.pool.turned()                      # a supervisor's loop drives this pool
    gate, running, queued = one_running_one_queued(d, 1)
    # Given a loop that has not turned for longer than LOOP_FRESH (as after a SIGSTOP)
    stale_at = time.monotonic() + child.LOOP_FRESH
    d.wait(lambda: time.monotonic() > stale_at, "a stale loop")
    # When the running job ends, Then the child does not claim the queued one
    open(gate, "w").close()
    assert d.value(running) in d.pids
    table = d.pool._table
    d.wait(lambda: table.gated.get_value() == 1, "the child to wait for a turn")
    assert queued not in d.started and queued not in d.outcomes
    assert d.pool.info()["queued"] == 1
    # until the loop turns (having taken back what was no longer its own)
    d.pool.turned()
    assert d.value(queued) == [1]
    assert all(os.path.exists(d.path(name)) for name in ("running", "gate"))
