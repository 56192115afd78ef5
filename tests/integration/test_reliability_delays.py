"""Delays (countdown, eta, retry) wait in Redis: a worker restart loses none, and worker
memory does not grow with them."""

from __future__ import annotations

import datetime as dt
import time

import msgpack
import psutil

from engine import message
from tests.apps.reliable import logged_sleep, retry_once_later
from tests.conftest import wait_for
from tests.integration.reliability_helpers import APP, count, kill_hard, rapp, runs  # noqa: F401


def test_delayed_tasks_survive_a_worker_crash(rapp, run_worker):
    # Given a worker, and tasks due in a few seconds (countdown and eta)
    worker = run_worker("--pool", "threads", "-c", "4", app=APP)
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)
    tasks = [logged_sleep.apply_async(args=(f"d{i}", 0), countdown=3) for i in range(20)]
    tasks += [logged_sleep.apply_async(args=(f"e{i}", 0), eta=soon) for i in range(20)]
    # When the worker dies before they are due
    kill_hard(worker)
    assert rapp.broker.depth("default")["delayed"] + rapp.broker.depth("default")["waiting"] \
        + rapp.broker.depth("default")["unacked"] == 40
    # Then a new worker runs every one of them, once
    run_worker("--pool", "threads", "-c", "4", app=APP)
    rapp.gather(tasks, timeout=90)
    assert all(len(runs(rapp, f"{p}{i}")) == 1 for p in "de" for i in range(20))


def test_a_waiting_retry_survives_a_worker_crash(rapp, run_worker):
    # Given a task waiting an hour for its retry, and its worker killed
    worker = run_worker("--pool", "threads", app=APP)
    r = retry_once_later.delay("crash")
    wait_for(lambda: r.state == "RETRY", message="the retry to be scheduled")
    kill_hard(worker)
    # Then the retry waits in Redis with its time, nowhere else
    delayed = rapp.broker.keys.delayed("default")
    (body, due), = rapp.client.zrange(delayed, 0, -1, withscores=True)
    assert msgpack.unpackb(body)["retries"] == 1 and due > time.time() + 3000
    assert rapp.broker.depth("default")["unacked"] == 0
    # And when its hour has come (brought forward here), a new worker runs it
    rapp.client.zrem(delayed, body)
    rapp.client.zadd(delayed, {message.reencode(body, eta=time.time()): 0})
    run_worker("--pool", "threads", app=APP)
    assert r.get(timeout=60) == "again" and r.retries == 1
    assert count(rapp, "crash") == 2


def test_ten_thousand_delayed_tasks_do_not_grow_the_worker(rapp, run_worker):
    # Given an idle worker
    worker = run_worker("--pool", "threads", "-c", "2", "-n", "lean", app=APP)
    assert logged_sleep.delay("warm", 0).get(timeout=60) == "warm"
    before = psutil.Process(worker.pid).memory_info().rss
    # When 10,000 tasks are sent for an hour from now
    bodies = (rapp._body(logged_sleep.name, (f"later-{i}", 0), {}, task=logged_sleep,
                         countdown=3600) for i in range(10_000))
    rapp.broker.enqueue_many(("default", body, eta) for _, body, eta in bodies)
    # and the worker goes on with its work through several housekeeping rounds
    for i in range(5):
        assert logged_sleep.delay(f"now{i}", 0.3).get(timeout=60) == f"now{i}"
    # Then they all wait in Redis, and the worker holds none of them
    depth = rapp.broker.depth("default")
    assert depth["delayed"] == 10_000 and depth["waiting"] == 0 and depth["unacked"] == 0
    info = msgpack.unpackb(rapp.client.get(rapp.broker.keys.worker("lean")), raw=False)
    assert all(lane["buffered"] == 0 for lane in info["lanes"])
    grown = psutil.Process(worker.pid).memory_info().rss - before
    # 10,000 bodies held in Python would take several MiB; allow for allocator noise
    assert grown < 4 * 1024 * 1024, f"worker grew by {grown / 1024:.0f} KiB"
