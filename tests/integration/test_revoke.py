"""revoke() and revoke(terminate=True), shared through Redis so every worker knows, even
one started later. Solo cannot terminate a running task (it runs on the supervisor's own
thread): the revocation is logged and the task finishes."""

from __future__ import annotations

import time

import pytest

from engine import message

from tests.apps.reliable import logged_sleep, retry_once_later
from tests.conftest import wait_for
from tests.integration.reliability_helpers import APP, count, rapp, runs  # noqa: F401


@pytest.mark.parametrize("pool", ["prefork", "threads", "gevent"])
def test_terminate_ends_a_running_task(rapp, run_worker, pool):
    # Given a worker running a long task
    worker = run_worker("--pool", pool, "-c", "2", app=APP)
    r = logged_sleep.delay("victim", 120)
    wait_for(lambda: runs(rapp, "victim"), message="the task to start")
    # When it is revoked with terminate=True
    r.revoke(terminate=True)
    # Then it ends as REVOKED, acked, without running again, and the worker goes on
    wait_for(lambda: r.state == "REVOKED", message="the task to be revoked")
    # and the log says it was ended while running, not that it never ran
    wait_for(lambda: f"[{r.id}] terminated: ended while running" in worker.log,
             message="the terminated line in the log")
    assert f"[{r.id}] terminated: not run" not in worker.log
    assert logged_sleep.delay("next", 0).get(timeout=60) == "next"
    wait_for(lambda: rapp.broker.depth("default")["unacked"] == 0, message="all acked")
    assert len(runs(rapp, "victim")) == 1
    assert worker.proc.poll() is None


def test_terminate_in_solo_is_refused_and_the_task_finishes(rapp, run_worker):
    worker = run_worker("--pool", "solo", app=APP)
    r = logged_sleep.delay("solo", 2)
    wait_for(lambda: runs(rapp, "solo"), message="the task to start")
    r.revoke(terminate=True)
    assert r.get(timeout=60) == "solo"
    wait_for(lambda: "cannot end" in worker.log, message="the refusal in the log")


def pool_queued(rapp, worker: str) -> int:
    """How many jobs ``worker``'s pool holds queued behind its running ones."""
    stats = rapp.control.inspect(destination=[worker], timeout=2).stats() or {}
    return stats.get(worker, {"lanes": [{"pool_info": {}}]})["lanes"][0][
        "pool_info"].get("queued", 0)


@pytest.mark.parametrize("pool", ["prefork", "threads", "asyncio"])
def test_a_revoked_task_queued_in_the_pool_never_runs(rapp, run_worker, pool):
    # Given a one-slot worker running a long task, and a second task queued in its pool
    # behind it (the pool holds its prefetch, past the lane's buffer)
    run_worker("--pool", pool, "-c", "1", "-n", "holder", app=APP)
    first = logged_sleep.delay("first", 3)
    wait_for(lambda: runs(rapp, "first"), message="the first task to start")
    queued = logged_sleep.delay("queued", 0)
    wait_for(lambda: pool_queued(rapp, "holder") == 1,
             message="the second task in the pool's queue")
    # When it is revoked, without terminate
    queued.revoke()
    # Then it is REVOKED and acked at once, and never runs; the running one ends as it would
    wait_for(lambda: queued.state == "REVOKED", message="the queued task to be revoked")
    assert first.get(timeout=60) == "first"
    wait_for(lambda: rapp.broker.depth("default")["unacked"] == 0, message="all acked")
    assert runs(rapp, "queued") == []
    assert pool_queued(rapp, "holder") == 0


@pytest.mark.parametrize("pool", ["prefork", "threads", "asyncio"])
def test_a_task_that_expires_queued_in_the_pool_never_runs(rapp, run_worker, pool):
    # Given a one-slot worker running a long task, and a task with an expiry queued behind it
    run_worker("--pool", pool, "-c", "1", "-n", "holder", app=APP)
    first = logged_sleep.delay("first", 4)
    wait_for(lambda: runs(rapp, "first"), message="the first task to start")
    queued = logged_sleep.apply_async(("queued", 0), expires=2)
    wait_for(lambda: pool_queued(rapp, "holder") == 1,
             message="the second task in the pool's queue")
    # When it expires there, Then it is REVOKED at the next loop turn and never runs
    wait_for(lambda: queued.state == "REVOKED", message="the queued task to expire")
    assert first.get(timeout=60) == "first"
    wait_for(lambda: rapp.broker.depth("default")["unacked"] == 0, message="all acked")
    assert runs(rapp, "queued") == []


def test_a_worker_started_after_the_revoke_skips_the_task(rapp, run_worker):
    # Given a task revoked while no worker runs
    r = logged_sleep.delay("late", 0)
    r.revoke()
    # When a worker starts later
    run_worker("--pool", "threads", app=APP)
    # Then it never runs the task
    wait_for(lambda: r.state == "REVOKED", message="the task to be revoked")
    assert runs(rapp, "late") == []


def test_a_revoke_published_while_the_worker_was_not_listening_is_honoured(rapp, run_worker):
    # Given a worker whose control connection was just cut (as at its start, before it
    # subscribed, or in a Redis hiccup)
    run_worker("--pool", "threads", app=APP)
    channel = rapp.broker.keys.control
    wait_for(lambda: rapp.client.pubsub_numsub(channel)[0][1] == 1, message="listening")
    # When a task is revoked while it does not listen: the revocation is in the fleet's
    # set, its publish reached nobody (written here as the set alone, so that no timing
    # decides whether the worker heard it), and the task is due long before the worker's
    # periodic reread of the set
    r = logged_sleep.apply_async(args=("unheard", 0), countdown=2)
    rapp.client.zadd(rapp.broker.keys.revoked, {r.id: time.time() + 600})
    rapp.client.client_kill_filter(_type="pubsub")
    # Then the worker reads the set when it listens again, and never runs the task
    wait_for(lambda: r.state == "REVOKED", message="the task to be revoked")
    assert runs(rapp, "unheard") == []


def test_an_unheard_revoke_of_a_task_queued_in_the_pool_is_honoured(rapp, run_worker):
    # Given a one-child worker running a long task, and a second task queued in its pool
    run_worker("--pool", "prefork", "-c", "1", "-n", "holder", app=APP)
    channel = rapp.broker.keys.control
    wait_for(lambda: rapp.client.pubsub_numsub(channel)[0][1] == 1, message="listening")
    first = logged_sleep.delay("first", 3)
    wait_for(lambda: runs(rapp, "first"), message="the first task to start")
    queued = logged_sleep.delay("queued", 0)
    wait_for(lambda: pool_queued(rapp, "holder") == 1,
             message="the second task in the pool's queue")
    # When it is revoked while the worker does not listen (the fleet's set alone, as above)
    rapp.client.zadd(rapp.broker.keys.revoked, {queued.id: time.time() + 600})
    rapp.client.client_kill_filter(_type="pubsub")
    # Then the worker, reading the set when it listens again, takes it back: it never runs
    wait_for(lambda: queued.state == "REVOKED", message="the queued task to be revoked")
    assert first.get(timeout=60) == "first"
    assert runs(rapp, "queued") == []


def test_every_worker_knows(rapp, run_worker):
    # Given two workers, and tasks revoked before they come up
    run_worker("--pool", "threads", "-c", "2", "-n", "one", app=APP)
    run_worker("--pool", "threads", "-c", "2", "-n", "two", app=APP)
    doomed = [logged_sleep.apply_async(args=(f"r{i}", 0), countdown=1) for i in range(10)]
    for r in doomed:
        r.revoke()
    kept = logged_sleep.apply_async(args=("kept", 0), countdown=1)
    # Then whichever worker takes them, none runs
    assert kept.get(timeout=60) == "kept"
    wait_for(lambda: all(r.state == "REVOKED" for r in doomed), message="all revoked")
    assert all(runs(rapp, f"r{i}") == [] for i in range(10))


def test_revoking_a_task_waiting_to_retry(rapp, run_worker):
    run_worker("--pool", "threads", app=APP)
    r = retry_once_later.delay("waiting")
    wait_for(lambda: r.state == "RETRY", message="the task to wait for its retry")
    r.revoke()
    # bring the retry forward (as if the hour had passed)
    delayed = rapp.broker.keys.delayed("default")
    for body in rapp.client.zrange(delayed, 0, -1):
        rapp.client.zrem(delayed, body)
        rapp.client.zadd(delayed, {message.reencode(body, eta=time.time()): 0})
    wait_for(lambda: r.state == "REVOKED", message="the retry to be revoked")
    assert count(rapp, "waiting") == 1
