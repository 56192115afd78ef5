"""The prefork pool driven directly (no Redis): children, limits, lifecycle, shutdown.

The test plays the supervisor with a small Runner of its own (``prefork_driver``); it waits
by polling conditions with generous deadlines, kills only the processes it started, and
asserts no timings.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import msgpack
import psutil
import pytest

from pools.base import FAILURE, SUCCESS, PoolOptions
from pools.prefork import shm

from tests.unit.prefork_driver import POLL, WAIT, Driver, StoringRunner, _alive
from tests.unit.prefork_driver import driver  # noqa: F401 (a fixture)


# --------------------------------------------------------------------------- running

def test_many_tasks_across_children_each_reported_once(driver):
    # Given a pool of two children
    d = driver(concurrency=2)
    # When many tasks run
    ids = [d.submit("pid") for _ in range(2000)]
    # Then each has exactly one outcome, on_start came for each, and both children worked
    pids = {d.value(i) for i in ids}
    assert pids <= set(d.pool.info()["pids"])
    assert len(pids) == 2
    assert sorted(d.started) == sorted(ids)
    assert d.pool.info()["tasks_done"] == 2000


def test_idle_child_takes_work_while_the_other_is_busy(driver):
    # Given one child stuck in a long job
    d = driver(concurrency=2)
    gate = d.path("gate")
    held = d.submit("hold", d.path("held"), gate)
    d.wait_file(d.path("held"))
    # When more work arrives, Then the other child runs all of it meanwhile
    ids = [d.submit("echo", i) for i in range(50)]
    assert [d.value(i) for i in ids] == [[i] for i in range(50)]
    assert held not in d.outcomes
    open(gate, "w").close()
    d.value(held)


def test_a_lone_job_stores_its_own_result_and_a_queued_one_leaves_it_to_the_supervisor(driver):
    # Given a pool whose runner can store results from the child
    d = driver(concurrency=1, runner=StoringRunner(), prefetch=4)
    # When a job runs alone, Then its child stored the result and says so
    lone = d.outcome(d.submit("echo", 1))
    assert lone.stored and msgpack.unpackb(lone.result)[0] == "stored by"
    assert msgpack.unpackb(lone.result)[1] in d.pids
    # When jobs queue behind a running one, Then they leave the result to the supervisor
    gate = d.path("gate")
    held = d.submit("hold", d.path("held"), gate)
    d.wait_file(d.path("held"))
    queued = [d.submit("echo", i) for i in range(3)]
    open(gate, "w").close()
    assert d.outcome(held).stored
    for job_id, i in zip(queued, range(3)):
        outcome = d.outcome(job_id)
        assert not outcome.stored and msgpack.unpackb(outcome.result) == [i]


def test_messages_and_results_larger_than_shared_memory_records(driver):
    # Given a body above a work slot and a result above a quarter of an outbox
    d = driver(concurrency=1)
    big_arg = "y" * (shm.SLOT_SIZE * 3)
    # When they go through the pool
    echo = d.submit("echo", big_arg)
    big = d.submit("big", shm.OUTBOX_SIZE)
    # Then both arrive whole, and no overflow file is left behind
    assert d.value(echo) == [big_arg]
    assert d.value(big) == "x" * shm.OUTBOX_SIZE
    leftovers = [n for n in os.listdir(shm.OVERFLOW_DIR) if n.startswith("engine-")
                 and str(os.getpid()) in n]
    assert leftovers == []


def test_import_in_child_runs_the_hook(driver, tmp_path):
    # Given a module the parent never imported, and import_in_child
    name = f"prefork_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("VALUE = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        d = driver(concurrency=1, load_app=importlib.import_module,
                   options=PoolOptions(import_in_child=True, app_path=name))
        # When a task looks for it, Then the child imported it and the parent did not
        assert d.value(d.submit("modules", name)) is True
        assert name not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))


# --------------------------------------------------------------------------- limits

def test_soft_limit_is_raised_inside_the_task_which_may_catch_it(driver):
    d = driver(concurrency=2)
    marker = d.path("soft")
    job = d.submit("catch_soft", marker)
    d.wait_file(marker)
    d.pool.interrupt(job)
    assert d.value(job) == "caught"


@pytest.mark.parametrize("size", [10, shm.SLOT_SIZE * 2])          # inline, overflow file
@pytest.mark.parametrize("notify_start", [False, True])
@pytest.mark.parametrize("self_store", [False, True])
def test_a_work_slot_carries_the_body_and_its_flags(size, notify_start, self_store):
    # Given a job offered with or without each flag, inline or through an overflow file
    table, outbox = shm.WorkTable(4), shm.Outbox()
    try:
        body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        table.offer(2, 7, body, self_store=self_store, notify_start=notify_start)
        # When a child claims and reads it, Then the body is whole and the flags are its own
        slot = table.claim(outbox)
        assert slot == 2
        assert table.read(slot) == (7, body, self_store, notify_start)
        table.release(slot)
    finally:
        table.close()
        outbox.close()


def test_an_offer_wakes_only_a_sleeping_child_and_a_busy_one_claims_without_a_token():
    table, outbox = shm.WorkTable(4), shm.Outbox()
    try:
        # Given no child asleep: an offer posts no wake-up, and a child finishing its job
        # finds the offer without waiting
        table.offer(0, 1, b"a")
        assert table.items.get_value() == 0
        assert table.wait_for_offer(0.01)
        assert table.claim(outbox) == 0 and table.is_claimed(0)
        # Given a child asleep on the table: an offer wakes it, and it claims
        woke = []
        sleeper = threading.Thread(target=lambda: woke.append(table.wait_for_offer(WAIT)))
        sleeper.start()
        give_up = time.monotonic() + WAIT
        while table.sleepers.get_value() == 0:
            assert time.monotonic() < give_up, "the sleeper never counted itself in"
            time.sleep(POLL)
        table.offer(1, 2, b"b")
        sleeper.join(WAIT)
        assert woke == [True] and table.sleepers.get_value() == 0
        assert table.claim(outbox) == 1
        # And with nothing on offer, a wait times out
        assert not table.wait_for_offer(0.01) or table.claim(outbox) == -1
    finally:
        table.close()
        outbox.close()


@pytest.fixture
def polled(tmp_path):
    """One child, polled as under ``engine run``: the test reads the waker the children
    post, and nothing else takes its tokens unless the test calls ``Driver.wait``."""
    d = Driver(tmp_path, concurrency=1, polled=True)
    yield d
    d.close()


def _wait_file_quietly(path):
    # without Driver.wait, which would take the waker's tokens and poll the pool
    give_up = time.monotonic() + WAIT
    while not os.path.exists(path):
        assert time.monotonic() < give_up, f"gave up waiting for {path}"
        time.sleep(POLL)


@pytest.mark.parametrize("limit", ["soft_limit", "hard_limit"])
def test_a_job_with_a_limit_on_its_job_wakes_the_supervisor_when_it_starts(polled, limit):
    """The clock of a limit starts with ``on_start``, so the start of a job with a limit must
    wake the supervisor at once. The limit is on the Job only, as the supervisor sets the
    limits it resolved from the task, the lane or the worker; the body has none.

    No clock is read: the job blocks on a gate the test opens only afterwards, so it cannot
    end, and nothing but its start can post the waker (an idle child posts nothing). So a
    token on the waker, and ``on_start`` from the next ``poll``, while the job still runs,
    prove the start was posted by itself. Before the fix the child looked for limits in the
    body, posted nothing, and the start only came with the job's end: the wait below ran out.
    """
    d = polled
    gate = d.path("gate")
    # Given a job with a limit on its Job and none in its body, held until the gate opens
    job = d.submit("hold", d.path("held"), gate, **{limit: 30.0})
    try:
        # When it starts, Then its child wakes the supervisor while it runs
        assert d.waker.acquire(True, WAIT), "the start of a job with a limit woke nobody"
        d.pool.poll()
        assert d.started == [job]
        assert job not in d.outcomes
    finally:
        open(gate, "w").close()
    assert d.value(job) in d.pids


def test_a_job_without_limits_starts_without_waking_the_supervisor(polled):
    """The hot path stays cheap: the start of a job with no limit posts nothing (no record,
    no system call, no wake-up); the pool reads it from the child's status words. The
    child would post before it runs the task, so once the task made its marker, a post
    would already be there."""
    d = polled
    gate = d.path("gate")
    # Given a job without limits, held until the gate opens
    job = d.submit("hold", d.path("held"), gate)
    try:
        # When it is running
        _wait_file_quietly(d.path("held"))
        # Then nobody was woken
        assert not d.waker.acquire(False), "a job without limits woke the supervisor"
        # and its start is known all the same: a read of the pool reports it, once
        d.wait(lambda: job in d.started, "the start read from the child's status")
        assert d.started == [job]
        assert job not in d.outcomes
    finally:
        open(gate, "w").close()
    assert d.value(job) in d.pids


@pytest.mark.parametrize("task", ["sleep", "spin", "recv"])
def test_hard_limit_kills_then_a_fresh_child_runs_the_next_task(driver, task):
    # Given a task that will not end by itself: asleep, spinning, or blocked in recv()
    d = driver(concurrency=1)
    marker = d.path(task)
    args = (marker, 3600) if task == "sleep" else (marker,)
    job = d.submit(task, *args)
    d.wait_file(marker)
    old = set(d.pool.info()["pids"])
    # When the supervisor kills it
    d.pool.kill(job)
    # Then it is FAILURE with TimeLimitExceeded, and a new child runs the next task
    outcome = d.outcome(job)
    assert outcome.state == FAILURE
    assert outcome.exc_type.endswith("TimeLimitExceeded")
    assert d.value(d.submit("pid")) not in old
    assert d.pool.info()["killed"] == 1


def test_kill_of_a_queued_job_withdraws_it(driver):
    # Given the only child busy and a job waiting behind it
    d = driver(concurrency=1)
    gate = d.path("gate")
    held = d.submit("hold", d.path("held"), gate)
    d.wait_file(d.path("held"))
    queued = d.submit("echo", 1)
    # When the queued one is killed (revoke with terminate before it started)
    d.pool.kill(queued)
    # Then it is reported once, no child died, and the running job is untouched
    assert d.outcome(queued).exc_type.endswith("TimeLimitExceeded")
    open(gate, "w").close()
    assert d.value(held) in d.pids
    assert d.pool.info()["killed"] == 0
    assert queued not in d.started


def test_kill_and_interrupt_of_finished_jobs_are_ignored(driver):
    d = driver(concurrency=1)
    job = d.submit("echo", 1)
    d.value(job)
    d.pool.kill(job)
    d.pool.interrupt(job)
    d.pool.kill("nope")
    assert len(d.outcomes[job]) == 1
    assert d.value(d.submit("echo", 2)) == [2]


# --------------------------------------------------------------------------- child loss

@pytest.mark.parametrize("how", ["os_exit", "segfault", "sigkill"])
def test_lost_child_reports_worker_lost_and_queued_jobs_survive(driver, how):
    # Given one child, running a job that dies, and jobs queued behind it
    d = driver(concurrency=1)
    marker = d.path("dying")
    if how == "os_exit":
        job = d.submit("exit", marker)
    elif how == "segfault":
        job = d.submit("segfault")
    else:
        job = d.submit("sleep", marker, 3600)
    queued = [d.submit("echo", i) for i in range(d.pool.free_slots())]
    if how == "sigkill":                       # an outside kill, e.g. the OOM killer
        d.wait(lambda: job in d.started, "the job to start")
        os.kill(d.pool.info()["pids"][0], signal.SIGKILL)
    # Then that job is FAILURE with WorkerLostError, and a new child runs the others
    outcome = d.outcome(job)
    assert outcome.state == FAILURE
    assert outcome.exc_type.endswith("WorkerLostError")
    assert [d.value(i) for i in queued] == [[i] for i in range(len(queued))]
    assert d.pool.info()["lost"] == 1


def test_max_tasks_per_child_recycles_without_losing_tasks(driver):
    d = driver(concurrency=2, options=PoolOptions(max_tasks_per_child=3))
    ids = [d.submit("pid") for _ in range(30)]
    pids = [d.value(i) for i in ids]
    assert len(set(pids)) >= 10
    assert all(pids.count(p) <= 3 for p in set(pids))
    d.wait(lambda: d.pool.info()["recycled"] >= 9, "recycled children")


def test_max_memory_per_child_recycles_after_the_task(driver):
    # Given a limit 40 MiB above what a child uses now
    rss = psutil.Process().memory_info().rss // 1024
    d = driver(concurrency=1, options=PoolOptions(max_memory_per_child=rss + 40 * 1024))
    first = d.value(d.submit("pid"))
    # When a task grows the child by 80 MiB
    hog = d.submit("hog", 80)
    # Then the task still succeeds, and the next one runs on a new child
    assert d.value(hog) == first
    assert d.value(d.submit("pid")) != first
    assert d.pool.info()["recycled"] == 1


# --------------------------------------------------------------------------- capacity

def test_grow_and_shrink(driver):
    d = driver(concurrency=1)
    d.pool.grow(2)
    assert len(d.pool.info()["pids"]) == 3
    assert d.pool.free_slots() == 3 * d.pool.prefetch
    d.pool.shrink(5)
    d.wait(lambda: len(d.pool.info()["pids"]) == 1, "the pool to shrink to one child")
    assert d.pool.info()["concurrency"] == 1
    ids = [d.submit("echo", i) for i in range(20)]
    assert [d.value(i) for i in ids] == [[i] for i in range(20)]


def test_shrink_lets_a_busy_child_finish(driver):
    d = driver(concurrency=2)
    gate = d.path("gate")
    held = d.submit("hold", d.path("held"), gate)
    d.wait_file(d.path("held"))
    d.pool.shrink(1)
    d.wait(lambda: len(d.pool.info()["pids"]) == 1, "the idle child to leave")
    open(gate, "w").close()
    assert d.value(held) in d.pids


# --------------------------------------------------------------------------- shutdown

def test_warm_stop_returns_prefetched_jobs_and_lets_running_ones_finish(driver):
    # Given one child running a held job and jobs prefetched behind it
    d = driver(concurrency=1, prefetch=4)
    gate = d.path("gate")
    held = d.submit("hold", d.path("held"), gate)
    d.wait_file(d.path("held"))
    queued = [d.submit("echo", i) for i in range(3)]
    # When stopped warm while the held job is released a little later
    opener = threading.Timer(0.2, lambda: open(gate, "w").close())
    opener.start()
    try:
        returned = d.pool.stop(WAIT)
    finally:
        opener.cancel()
    # Then the prefetched ones come back, the running one ended with its outcome
    assert sorted(returned) == sorted(queued)
    assert d.outcome(held).state == SUCCESS
    assert all(q not in d.outcomes for q in queued)
    assert not any(_alive(pid) for pid in d.pids)


def test_terminate_is_cold_and_idempotent(driver):
    d = driver(concurrency=2)
    job = d.submit("sleep", d.path("s"), 3600)
    d.wait(lambda: job in d.started, "the job to start")
    d.pool.terminate()
    d.pool.terminate()
    assert job not in d.outcomes
    assert not any(_alive(pid) for pid in d.pids)


_SUPERVISOR = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_prefork import Driver
    import pathlib
    d = Driver(pathlib.Path({tmp!r}), concurrency=2)
    d.submit("sleep", {marker!r}, 3600)
    print(" ".join(map(str, d.pool.info()["pids"])), flush=True)
    time.sleep(3600)
""")


def test_children_exit_when_the_supervisor_is_sigkilled(tmp_path):
    # Given a supervisor process with two children, one of them busy
    script = _SUPERVISOR.format(tests=os.path.dirname(__file__), tmp=str(tmp_path),
                                marker=str(tmp_path / "m"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = []
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        # When it is killed with SIGKILL
        proc.kill()
        proc.wait(WAIT)
        # Then its children go too, without anyone reaping them for it
        give_up = time.monotonic() + WAIT
        while any(_alive(pid) for pid in pids):
            assert time.monotonic() < give_up, "children outlived their supervisor"
            time.sleep(POLL)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:             # only if the test failed: leave no orphan behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
