"""Cases of Celery's t/integration/test_inspect.py, ported: ``app.control.inspect()``
against a real worker (``manager``), asserting what Celery's cases assert. Where Celery
compares a whole dict with ``ANY`` for the values that vary, so does this file."""

from __future__ import annotations

import datetime as dt
import re
from unittest.mock import ANY

import pytest

from tests.compat.conftest import NODENAME
from tests.compat.tasks import add, sleeping
from tests.conftest import wait_for


@pytest.fixture
def inspect(manager):
    return manager.app.control.inspect(timeout=5)


def _task(result, name, args, kwargs, *, started):
    return {"id": result.id, "name": name, "args": args, "kwargs": kwargs, "type": name,
            "hostname": ANY, "time_start": ANY if started else None,
            "acknowledged": started,
            "delivery_info": {"exchange": "", "routing_key": "celery", "priority": 0,
                              "redelivered": False},
            "worker_pid": ANY if started else None}


def test_ping(inspect):
    ret = inspect.ping()
    assert len(ret) == 1
    assert ret[NODENAME] == {"ok": "pong"}


def test_registered(inspect):
    ret = inspect.registered()
    assert len(ret) == 1
    assert len(ret[NODENAME]) > 0
    for task_name in ret[NODENAME]:
        assert isinstance(task_name, str)
    for task_info in inspect.registered("name")[NODENAME]:
        assert re.fullmatch(r"\S+ \[name=\S+\]", task_info)


def test_active(inspect):
    res = sleeping.delay(5)
    wait_for(lambda: inspect.active()[NODENAME], message="the task to be active")
    ret = inspect.active()
    assert len(ret) == 1
    assert ret[NODENAME] == [_task(res, "tests.compat.tasks.sleeping", [5], {}, started=True)]


def test_scheduled(inspect):
    exec_time = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    res = add.apply_async([1, 2], {"z": 3}, eta=exec_time)
    ret = inspect.scheduled()
    assert len(ret) == 1
    # Celery's ``priority`` here is its timer's (6); ours is the message's
    assert ret[NODENAME] == [{"eta": ANY, "priority": 0, "request": _task(
        res, "tests.compat.tasks.add", [1, 2], {"z": 3}, started=False)}]
    eta = dt.datetime.fromisoformat(ret[NODENAME][0]["eta"])
    assert abs(eta - exec_time) < dt.timedelta(milliseconds=1)
    assert ret[NODENAME][0]["eta"].endswith("+00:00")


def test_query_task(inspect):
    ret = inspect.query_task("d08b257e-a7f1-4b92-9fea-be911441cb2a")
    assert len(ret) == 1
    assert ret[NODENAME] == {}
    res = sleeping.delay(5)
    wait_for(lambda: inspect.active()[NODENAME], message="the task to be active")
    ret = inspect.query_task(res.id)
    assert len(ret) == 1
    expected = _task(res, "tests.compat.tasks.sleeping", [5], {}, started=True)
    expected["hostname"] = NODENAME
    assert ret[NODENAME] == {res.id: ["active", expected]}


def test_stats(inspect, manager):
    ret = inspect.stats()
    assert len(ret) == 1
    assert ret[NODENAME]["pool"]["max-concurrency"] == 1
    assert len(ret[NODENAME]["pool"]["processes"]) == 1
    assert ret[NODENAME]["uptime"] > 0
    # Celery's worker runs in the test's process; ours is its own
    assert ret[NODENAME]["pid"] == manager.worker.pid


def test_revoked(inspect):
    for _ in range(4):
        sleeping.delay(2)
    result = add.apply_async((1, 1))
    result.revoke()
    wait_for(lambda: result.id in inspect.revoked()[NODENAME], message="the revocation")
    ret = inspect.revoked()
    assert len(ret) == 1
    assert result.id in ret[NODENAME]


def test_active_queues(inspect):
    ret = inspect.active_queues()
    assert len(ret) == 1
    assert ret[NODENAME] == [
        {"alias": None, "auto_delete": False, "binding_arguments": None, "bindings": [],
         "consumer_arguments": None, "durable": True,
         "exchange": {"arguments": None, "auto_delete": False, "delivery_mode": None,
                      "durable": True, "name": "celery", "no_declare": False,
                      "passive": False, "type": "direct"},
         "exclusive": False, "expires": None, "max_length": None, "max_length_bytes": None,
         "max_priority": None, "message_ttl": None, "name": "celery", "no_ack": False,
         "no_declare": None, "queue_arguments": None, "routing_key": "celery"}]
