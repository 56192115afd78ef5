"""Time limits and child life cycle through real workers, in every pool."""

import os
import signal
import time

import psutil
import pytest

from engine.exceptions import TimeLimitExceeded
from tests.apps.basic import (add, catch_declared_soft, catch_soft, mark_and_sleep, sleep,
                              spin, whoami)
from tests.conftest import wait_for

LIMITED_POOLS = ["prefork", "threads", "gevent", "solo"]


@pytest.mark.parametrize("pool", LIMITED_POOLS)
def test_soft_limit_is_raised_inside_the_task_which_may_catch_it(app, run_worker, pool):
    # Given a worker in any pool
    run_worker("--pool", pool, "-c", "2")
    # When a task passes its soft limit
    r = catch_soft.apply_async(args=(30,), soft_time_limit=0.5, time_limit=20)
    # Then SoftTimeLimitExceeded was raised inside it, and it returned normally
    assert r.get(timeout=60) == "caught"


@pytest.mark.parametrize("source", ["task", "lane", "worker"])
def test_prefork_soft_limit_from_outside_the_message_is_raised_inside_the_task(
        app, run_worker, source):
    # Given a prefork worker, and a soft limit that the message does not carry: declared on
    # the task, set on the lane, or given to the worker (the supervisor resolves those and
    # the child never sees them in the body)
    if source == "lane":
        run_worker("--lane", "default=prefork:1,soft=0.3")
    elif source == "worker":
        run_worker("--pool", "prefork", "-c", "1", "--soft-time-limit", "0.3")
    else:
        run_worker("--pool", "prefork", "-c", "1")
    task = catch_declared_soft if source == "task" else catch_soft
    # When the task runs past it (it would return "finished" after 30 s)
    r = task.delay(30)
    # Then SoftTimeLimitExceeded was raised inside it, and it returned normally
    assert r.get(timeout=60) == "caught"


@pytest.mark.parametrize("pool", LIMITED_POOLS)
def test_hard_limit_ends_a_sleeping_task_and_the_worker_goes_on(app, run_worker, pool):
    run_worker("--pool", pool, "-c", "1")
    r = sleep.apply_async(args=(60,), time_limit=0.5)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=60)
    assert r.state == "FAILURE"
    assert add.delay(2, 2).get(timeout=60) == 4


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_hard_limit_ends_a_pure_python_loop(app, run_worker, pool):
    run_worker("--pool", pool, "-c", "1", "--time-limit", "1")
    r = spin.delay(120)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=60)
    assert add.delay(1, 2).get(timeout=60) == 3


def test_prefork_hard_limit_ends_a_blocking_call_on_a_fresh_child(app, run_worker):
    # Given a one-child prefork worker, and the pid of its child
    run_worker("--pool", "prefork", "-c", "1")
    first = whoami.delay().get(timeout=60)["pid"]
    # When a task blocks in C (select on nothing) past its hard limit
    r = app.send_task("tests.apps.basic.sleep", args=(3600,), time_limit=0.5)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=60)
    # Then the next task runs on a fresh child
    assert whoami.delay().get(timeout=60)["pid"] != first


def test_prefork_max_tasks_per_child_recycles(app, run_worker):
    run_worker("--pool", "prefork", "-c", "1", "--max-tasks-per-child", "3")
    pids = [whoami.delay().get(timeout=60)["pid"] for _ in range(7)]
    assert len(set(pids)) >= 3
    assert pids[0] == pids[1] == pids[2] and pids[3] != pids[2]


def test_prefork_max_memory_per_child_recycles(app, run_worker):
    # a limit any Python child is above: every child is replaced after one task
    run_worker("--pool", "prefork", "-c", "1", "--max-memory-per-child", "1000")
    pids = [whoami.delay().get(timeout=60)["pid"] for _ in range(3)]
    assert len(set(pids)) == 3


def test_prefork_child_killed_from_outside_task_runs_again(app, run_worker, prefix):
    # Given a prefork worker running a task
    worker = run_worker("--pool", "prefork", "-c", "1")
    key = f"{prefix}:started"
    r = mark_and_sleep.delay(key, 2)
    child_pid = int(wait_for(lambda: app.client.get(key)))
    # When its child is SIGKILLed
    app.client.delete(key)
    os.kill(child_pid, signal.SIGKILL)
    # Then the task is delivered again (at least once) on a new child and succeeds
    assert r.get(timeout=60) == 2
    assert int(app.client.get(key)) != child_pid
    assert "lost its process" in worker.log


def test_no_orphans_after_sigkill_of_the_supervisor(app, run_worker):
    # Given a prefork worker with children busy on long tasks
    worker = run_worker("--pool", "prefork", "-c", "2")
    for _ in range(2):
        sleep.delay(60)
    children = wait_for(lambda: len(worker.children()) >= 2 and worker.children())
    # When the supervisor is SIGKILLed
    worker.proc.kill()
    worker.proc.wait()
    # Then every child exits too
    def all_gone():
        return not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    wait_for(all_gone, 30, message="children to exit after the supervisor died")


@pytest.mark.parametrize("pool", ["prefork", "gevent"])
def test_round_trip_in_process_pools(app, run_worker, pool):
    run_worker("--pool", pool, "-c", "4")
    results = add.delay_many([(i, 1) for i in range(100)])
    assert app.gather(results, timeout=60) == [i + 1 for i in range(100)]
