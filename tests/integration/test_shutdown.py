"""Warm and cold shutdown with real signals."""

import signal

import pytest

from tests.apps.basic import add, mark_and_sleep, sleep
from tests.conftest import wait_for, wait_started


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_warm_shutdown_finishes_running_and_gives_back_prefetched(app, run_worker, pool):
    # Given a one-slot worker running a task, with more tasks prefetched behind it
    worker = run_worker("--pool", pool, "-c", "1", "--prefetch", "8")
    running = mark_and_sleep.delay(f"{app.conf.key_prefix}:started", 1.5)
    waiting = [add.delay(i, i) for i in range(5)]
    wait_for(lambda: app.broker.depth("default")["unacked"] == 6, message="all six fetched")
    wait_for(lambda: app.client.get(f"{app.conf.key_prefix}:started"), message="the first task to start")
    # When the worker gets SIGTERM
    worker.signal(signal.SIGTERM)
    # Then it exits 0 after the running task finished
    assert worker.wait() == 0
    assert running.get(timeout=5) == 1.5
    # And the prefetched tasks are back on the queue at once, not pending on a dead worker
    depth = app.broker.depth("default")
    assert depth["unacked"] == 0 and depth["waiting"] == 5
    assert all(r.state == "PENDING" for r in waiting)
    # And another worker runs them
    run_worker("--pool", "threads", "-c", "2")
    assert app.gather(waiting, timeout=60) == [2 * i for i in range(5)]


def test_second_signal_is_a_cold_shutdown(app, run_worker):
    # Given a worker in a warm shutdown, waiting on a long task
    worker = run_worker("--pool", "threads", "-c", "1")
    long = sleep.delay(60)
    wait_started(app, long.id)
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "warm shutdown" in worker.log, message="warm shutdown started")
    # When a second signal comes
    worker.signal(signal.SIGINT)
    # Then it exits at once, without the task's result, and the task stays unacked
    assert worker.wait(30) == 0
    assert long.state == "PENDING"
    assert app.broker.depth("default")["unacked"] == 1


def test_sigquit_is_a_cold_shutdown_at_once(app, run_worker):
    # Given a worker running a long task
    worker = run_worker("--pool", "threads", "-c", "1")
    long = sleep.delay(60)
    wait_started(app, long.id)
    # When it gets SIGQUIT (as Celery's worker reads it: cold)
    worker.signal(signal.SIGQUIT)
    # Then it exits at once without a warm phase, the task unfinished and still unacked
    assert worker.wait(30) == 0
    assert "warm shutdown" not in worker.log
    assert "stopped (cold)" in worker.log
    assert long.state == "PENDING"
    assert app.broker.depth("default")["unacked"] == 1


def test_sigint_is_warm_too(app, run_worker):
    worker = run_worker("--pool", "threads", "-c", "1")
    r = sleep.delay(0.5)
    wait_started(app, r.id)
    worker.signal(signal.SIGINT)
    assert worker.wait() == 0
    assert r.get(timeout=5) == 0.5
