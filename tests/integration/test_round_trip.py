"""A task goes from delay() through a real Redis to a real worker process and back."""

import datetime as dt
import decimal
import uuid

import msgpack
import pytest

from engine import AsyncResult
from engine.exceptions import TaskError
from tests.apps.basic import CustomError, add, echo, fail, noop, whoami
from tests.conftest import wait_for

POOLS = ["solo", "threads"]


@pytest.mark.parametrize("pool", POOLS)
def test_round_trip(app, run_worker, pool):
    # Given a worker
    run_worker("--pool", pool, "-c", "2")
    # When tasks are sent / Then their results come back
    assert add.delay(2, 3).get(timeout=60) == 5
    r = add.apply_async(args=(4, 5))
    assert r.get(timeout=60) == 9
    assert r.state == "SUCCESS" and r.ready() and r.successful() and not r.failed()


def test_extension_types_survive_the_trip(app, run_worker):
    run_worker("--pool", "solo")
    value = {"when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
             "id": uuid.uuid4(), "price": decimal.Decimal("9.99"), "tags": {"a", "b"},
             "raw": b"\x00\x01"}
    assert echo.delay(value).get(timeout=60) == value


def test_bound_task_sees_its_request(app, run_worker):
    run_worker("--pool", "solo", "-n", "named-worker")
    r = whoami.delay()
    info = r.get(timeout=60)
    assert info["id"] == r.id and info["retries"] == 0 and info["hostname"] == "named-worker"


def test_failure_raises_the_original_type_with_traceback(app, run_worker):
    run_worker("--pool", "solo")
    r = fail.delay("boom")
    with pytest.raises(CustomError, match="boom"):
        r.get(timeout=60)
    assert r.state == "FAILURE" and r.failed()
    assert "CustomError" in r.traceback and "boom" in r.traceback
    assert isinstance(r.result, CustomError)
    assert isinstance(r.get(timeout=1, propagate=False), CustomError)


def test_failure_of_a_type_not_importable_here_is_a_task_error(app, run_worker):
    # Given a worker whose app defines a task raising an exception type we cannot import
    run_worker("--pool", "solo", app="tests.apps.private_errors")
    r = app.send_task("tests.apps.private_errors.explode", args=())
    # Then get() raises TaskError naming the remote type
    with pytest.raises(TaskError, match="PrivateError") as info:
        r.get(timeout=60)
    assert "PrivateError" in info.value.exc_type and "secret" in info.value.traceback


def test_get_times_out_with_builtin_timeout_error(app):
    r = add.delay(1, 1)   # no worker runs
    with pytest.raises(TimeoutError):
        r.get(timeout=0.2)
    assert r.state == "PENDING" and not r.ready()


def test_asyncresult_rebuilt_from_id(app, run_worker):
    run_worker("--pool", "solo")
    r = add.delay(20, 22)
    assert AsyncResult(r.id, app=app).get(timeout=60) == 42
    assert AsyncResult(r.id).get(timeout=60) == 42   # the current app


def test_ignore_result_stays_pending(app, run_worker):
    run_worker("--pool", "solo")
    r = noop.delay()
    marker = add.delay(1, 2)
    assert marker.get(timeout=60) == 3
    wait_for(lambda: app.broker.depth("default")["unacked"] == 0, message="queue drained")
    assert r.state == "PENDING"


def test_unserialisable_argument_is_refused_and_nothing_is_sent(app):
    before = app.client.xlen(app.broker.keys.queue("default"))
    with pytest.raises(TypeError, match=r"argument 0 \(object\)"):
        add.delay(object(), 1)
    with pytest.raises(TypeError, match=r"call 1: .*argument 0"):
        add.delay_many([(1, 2), (object(), 3)])
    assert app.client.xlen(app.broker.keys.queue("default")) == before


def test_delay_many_and_gather(app, run_worker):
    run_worker("--pool", "threads", "-c", "4")
    results = add.delay_many([(i, i) for i in range(200)])
    assert app.gather(results, timeout=60) == [2 * i for i in range(200)]


def test_send_task_by_name_to_a_queue(app, run_worker):
    run_worker("--pool", "solo", "-Q", "special")
    r = app.send_task("tests.apps.basic.add", args=(1, 1), queue="special")
    assert r.get(timeout=60) == 2


def test_raw_xadd_from_another_language(app, run_worker):
    # Given a message built by hand, as a producer in another language would
    run_worker("--pool", "solo")
    body = msgpack.packb({"v": 1, "id": "hand-built-1", "task": "tests.apps.basic.add",
                          "args": [40, 2], "kwargs": {}, "retries": 0})
    app.client.xadd(app.broker.keys.queue("default"), {"m": body})
    # Then a worker runs it and the result is stored under its id
    assert AsyncResult("hand-built-1", app=app).get(timeout=60) == 42


def test_countdown_waits_in_redis(app, run_worker):
    run_worker("--pool", "solo")
    r = add.apply_async(args=(1, 2), countdown=1.5)
    assert app.client.zcard(app.broker.keys.delayed("default")) == 1
    assert r.get(timeout=60) == 3
    assert app.client.zcard(app.broker.keys.delayed("default")) == 0


def test_expired_task_is_revoked_not_run(app, run_worker):
    r = add.apply_async(args=(1, 2), expires=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5))
    run_worker("--pool", "solo")
    wait_for(lambda: r.state == "REVOKED", message="expired task revoked")


def test_revoke_before_it_runs(app, run_worker):
    r = add.delay(1, 2)
    r.revoke()
    run_worker("--pool", "solo")
    wait_for(lambda: r.state == "REVOKED", message="revoked task skipped")


def test_local_call_runs_in_process():
    assert add(2, 3) == 5
