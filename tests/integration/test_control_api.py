"""``app.control`` and ``app.control.inspect()`` from Python, with Celery's reply shapes,
against real workers (threads pool)."""

from __future__ import annotations

import time

import pytest

from engine.results import REVOKED
from tests.conftest import wait_for

TASK_KEYS = {"id", "name", "args", "kwargs", "type", "hostname", "time_start",
             "acknowledged", "delivery_info", "worker_pid"}


@pytest.fixture
def alpha(run_worker, app):
    worker = run_worker("--pool", "threads", "-c", "2", "-n", "alpha")
    # ready is logged before the control subscription is surely active
    wait_for(lambda: app.control.inspect(timeout=5).ping(), message="alpha to answer")
    return worker


@pytest.fixture
def two(alpha, run_worker, app):
    beta = run_worker("--pool", "threads", "-c", "1", "-n", "beta")
    wait_for(lambda: set(app.control.inspect(timeout=5).ping() or ()) == {"alpha", "beta"},
             message="both to answer")
    return alpha, beta


def test_ping_by_inspect_and_by_control_with_destinations(two, app):
    assert app.control.inspect(timeout=5).ping() == {"alpha": {"ok": "pong"},
                                                     "beta": {"ok": "pong"}}
    assert app.control.ping(timeout=5) == [{"alpha": {"ok": "pong"}}, {"beta": {"ok": "pong"}}]
    assert app.control.ping(destination=["beta"], timeout=5) == [{"beta": {"ok": "pong"}}]
    assert app.control.inspect(["alpha"], timeout=5).ping() == {"alpha": {"ok": "pong"}}
    # one name, not a list: that worker's reply alone, as Celery does
    assert app.control.inspect("beta", timeout=5).ping() == {"ok": "pong"}


def test_no_worker_means_none(app, env):
    assert app.control.inspect(timeout=0.2).active() is None
    assert app.control.ping(timeout=0.2) == []


def test_active_and_query_task_have_celery_task_dicts(alpha, app):
    from tests.apps.basic import sleep
    result = sleep.delay(30)
    inspect = app.control.inspect(timeout=5)
    wait_for(lambda: (inspect.active() or {}).get("alpha"), message="the task to be active")
    [job] = inspect.active()["alpha"]
    assert set(job) == TASK_KEYS
    assert job["id"] == result.id
    assert job["name"] == job["type"] == "tests.apps.basic.sleep"
    assert (job["args"], job["kwargs"], job["hostname"]) == ([30], {}, "alpha")
    assert job["acknowledged"] is True
    assert job["worker_pid"] == alpha.pid     # threads: the worker's own process
    assert abs(job["time_start"] - time.time()) < 120
    assert job["delivery_info"] == {"exchange": "", "routing_key": "default", "priority": 0,
                                    "redelivered": False}
    state, same = inspect.query_task(result.id)["alpha"][result.id]
    assert state == "active" and same["id"] == result.id
    assert inspect.query_task("no-such-id") == {"alpha": {}}
    app.control.revoke(result.id, terminate=True)
    wait_for(lambda: result.state == REVOKED, message="REVOKED stored")


def test_reserved_lists_what_waits_behind_a_running_task(run_worker, app):
    from tests.apps.basic import sleep
    run_worker("--pool", "threads", "-c", "1", "-n", "solo1")
    inspect = app.control.inspect(timeout=5)
    wait_for(inspect.ping, message="solo1 to answer")
    first, second = sleep.delay(30), sleep.delay(0)
    wait_for(lambda: [j["id"] for j in (inspect.reserved() or {}).get("solo1", ())]
             == [second.id], message="the second to be reserved")
    [job] = inspect.reserved()["solo1"]
    assert set(job) == TASK_KEYS
    assert (job["time_start"], job["worker_pid"], job["acknowledged"]) == (None, None, False)
    assert [j["id"] for j in inspect.active()["solo1"]] == [first.id]
    app.control.revoke(first.id, terminate=True)
    assert second.get(timeout=30) == 0


def test_scheduled_lists_a_task_waiting_for_its_eta(alpha, app):
    from tests.apps.basic import add
    result = add.apply_async((1, 2), countdown=60)
    [entry] = app.control.inspect(timeout=5).scheduled()["alpha"]
    assert set(entry) == {"eta", "priority", "request"}
    assert entry["eta"].endswith("+00:00") and entry["priority"] == 0
    request = entry["request"]
    assert set(request) == TASK_KEYS
    assert (request["id"], request["name"], request["args"]) == (result.id,
                                                                "tests.apps.basic.add", [1, 2])
    assert (request["time_start"], request["acknowledged"]) == (None, False)


def test_registered_stats_queues_conf(alpha, app):
    inspect = app.control.inspect(timeout=5)
    names = inspect.registered()["alpha"]
    assert "tests.apps.basic.add" in names and names == sorted(names)
    assert "tests.apps.basic.flaky [max_retries=2]" in inspect.registered("max_retries")["alpha"]
    stats = inspect.stats()["alpha"]
    assert stats["pid"] == alpha.pid and stats["uptime"] > 0
    assert stats["pool"]["max-concurrency"] == 2
    assert stats["broker"]["transport"] == "redis"
    [queue] = inspect.active_queues()["alpha"]
    assert queue["name"] == queue["routing_key"] == "default"
    conf = inspect.conf()["alpha"]
    assert conf["key_prefix"] == app.conf.key_prefix      # set, not a default
    assert "task_acks_late" not in conf                   # a default, left out
    assert inspect.conf(with_defaults=True)["alpha"]["task_acks_late"] is True


def test_conf_never_sends_the_security_key(run_worker, app, env):
    run_worker("--pool", "threads", "-n", "keyed", extra_env={"ENGINE_SECURITY_KEY": "s3cret"})
    app.conf.security_key = "s3cret"
    try:
        inspect = app.control.inspect(timeout=5)
        wait_for(inspect.ping, message="keyed to answer")
        conf = inspect.conf(with_defaults=True)["keyed"]
        assert "security_key" not in conf and "s3cret" not in repr(conf)
    finally:
        app.conf._layers["update"].pop("security_key", None)
        app.close()


def test_revoke_and_revoked(two, app):
    ids = ["gone-1", "gone-2"]
    assert app.control.revoke(ids[0]) is None       # no reply asked: at once
    replies = app.control.revoke(ids[1], reply=True, timeout=5)
    assert replies == [{"alpha": {"ok": "tasks gone-2 flagged as revoked"}},
                       {"beta": {"ok": "tasks gone-2 flagged as revoked"}}]
    revoked = app.control.inspect(timeout=5).revoked()
    assert set(ids) <= set(revoked["alpha"]) and set(ids) <= set(revoked["beta"])


def test_rate_limit_pool_resize_and_broadcast(alpha, app):
    control = app.control
    assert control.rate_limit("tests.apps.basic.add", "10/s", reply=True, timeout=5) == [
        {"alpha": {"ok": "new rate limit set successfully"}}]
    assert control.rate_limit("tests.apps.basic.add", 0, reply=True, timeout=5) == [
        {"alpha": {"ok": "rate limit disabled successfully"}}]
    assert control.broadcast("rate_limit", arguments={"task_name": "nope", "rate_limit": "1/s"},
                             reply=True, timeout=5) == [{"alpha": {"error": "unknown task"}}]
    with pytest.raises(ValueError):
        control.rate_limit("tests.apps.basic.add", "fast")
    assert control.pool_grow(2, reply=True, timeout=5) == [{"alpha": {"ok": "pool will grow"}}]
    inspect = control.inspect(timeout=5)
    assert inspect.stats()["alpha"]["pool"]["max-concurrency"] == 4
    assert control.pool_shrink(1, reply=True, timeout=5) == [
        {"alpha": {"ok": "pool will shrink"}}]
    assert inspect.stats()["alpha"]["pool"]["max-concurrency"] == 3
    assert control.broadcast("ping", reply=True, timeout=5) == [{"alpha": {"ok": "pong"}}]
    assert control.broadcast("nonsense", reply=True, timeout=5) == [
        {"alpha": {"error": "unknown command 'nonsense'"}}]
