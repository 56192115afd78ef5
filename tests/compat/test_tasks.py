"""Cases of Celery's t/integration/test_tasks.py, ported: each keeps what Celery's asserts,
written for the engine against a real worker (``manager``, tests/compat/conftest.py).
The cases that cannot pass here are listed, with why, in tests/compat/README.md."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.exceptions import TaskRevokedError
from engine.exceptions import TimeoutError as ResultTimeout
from tests.compat.tasks import (ClassBasedAutoRetryTask, ExpectedException, add,
                                add_not_typed, fail, fail_unpickleable, now, print_unicode,
                                reject_without_requeue, retry, retry_once,
                                retry_once_headers, retry_once_priority, retry_unpickleable,
                                return_request_time_limits, sleeping,
                                task_with_declared_time_limits)
from tests.conftest import wait_for

TIMEOUT = 30   # Celery's is 10: this machine is shared


def _succeeded(result, expected):
    assert result.get(timeout=TIMEOUT) == expected
    assert result.status == "SUCCESS"
    assert result.ready() is True
    assert result.successful() is True


def _revoked(result):
    with pytest.raises(TaskRevokedError):
        result.get(timeout=TIMEOUT)
    assert result.status == "REVOKED"
    assert result.ready() is True
    assert result.failed() is False
    assert result.successful() is False


def test_class_based_task_retried(manager):
    task = ClassBasedAutoRetryTask()
    manager.app.register_task(task)
    assert task.delay().get(timeout=TIMEOUT) == 1


def test_simple_call():
    assert add(1, 1) == 2
    assert add(1, 1, z=1) == 3


def test_basic_task(manager):
    for i, result in [(i, add.delay(i, i)) for i in range(10)]:
        _succeeded(result, i + i)
    for i, result in [(i, add.delay(i, i, z=i)) for i in range(10)]:
        _succeeded(result, 3 * i)


def test_ignore_result(manager):
    result = add.apply_async((1, 2), ignore_result=True)
    assert result.get() is None          # at once: nothing will be stored
    # Celery sleeps a second for a result that is never stored; wait for the task's end
    # instead, and then look
    assert add.delay(0, 0).get(timeout=TIMEOUT) == 0
    assert result.result is None


def test_reject_without_requeue_stores_failure(manager):
    from engine.exceptions import Reject
    result = reject_without_requeue.delay()
    with pytest.raises(Reject):
        result.get(timeout=TIMEOUT)
    assert result.status == "FAILURE"
    assert result.ready() is True
    assert result.failed() is True
    assert result.successful() is False


def test_timeout(manager):
    result = sleeping.delay(10)
    with pytest.raises(ResultTimeout):
        result.get(timeout=1)


def test_expired(manager):
    # expires in a second, behind tasks that take longer: it expires waiting (Celery's
    # sleep 2 s each; on the one slot, 4 x 0.5 s ahead of it is already twice its expiry)
    for _ in range(4):
        sleeping.delay(0.5)
    _revoked(add.apply_async((1, 1), expires=1))
    for _ in range(4):
        sleeping.delay(0.5)
    _revoked(add.apply_async((1, 1), expires=dt.datetime.now(dt.timezone.utc)
                             + dt.timedelta(seconds=1)))


def test_eta(manager):
    # Celery times the wait; here the task says when it ran, and that is after its eta.
    # Celery's two cases one after the other; here both wait at once (the same asserts)
    sent = dt.datetime.now(dt.timezone.utc).timestamp()
    by_countdown = now.apply_async(countdown=3)
    eta = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)
    by_eta = now.apply_async(eta=eta)
    for result in (by_countdown, by_eta):
        assert result.status == "PENDING"
        assert result.ready() is False
    assert by_countdown.get(timeout=TIMEOUT) >= sent + 3
    assert by_eta.get(timeout=TIMEOUT) >= eta.timestamp()
    for result in (by_countdown, by_eta):
        assert result.status == "SUCCESS" and result.ready() is True


def test_fail(manager):
    result = fail.delay()
    with pytest.raises(ExpectedException):
        result.get(timeout=TIMEOUT)
    assert result.status == "FAILURE"
    assert result.ready() is True
    assert result.failed() is True
    assert result.successful() is False


def test_revoked(manager):
    # 4 s of work ahead on the one slot (Celery's is 8 s): the revoke reaches the worker first
    for _ in range(4):
        sleeping.delay(1)
    result = add.apply_async((1, 1))
    result.revoke()
    _revoked(result)


def test_wrong_arguments(manager):
    with pytest.raises(TypeError):
        add(5)
    with pytest.raises(TypeError):
        add(5, 5, wrong_arg=5)
    with pytest.raises(TypeError):
        add.delay(5)
    with pytest.raises(TypeError):
        add.delay(5, wrong_arg=5)
    # typing=False: not checked at the send, and the run fails
    for result in (add_not_typed.delay(5), add_not_typed.delay(5, wrong_arg=5)):
        with pytest.raises(TypeError):
            result.get(timeout=TIMEOUT)
        assert result.status == "FAILURE"


def _first_state_after_pending(result) -> str:
    return _first_states_after_pending([result])[0]


def _first_states_after_pending(results) -> list[str]:
    """Each result's first state other than PENDING, all watched at once."""
    first: dict[int, str] = {}

    def all_seen():
        for i, result in enumerate(results):
            if i not in first and (status := result.status) != "PENDING":
                first[i] = status
        return len(first) == len(results)

    wait_for(all_seen, message="the tasks to leave PENDING")
    return [first[i] for i in range(len(results))]


@pytest.mark.slow
def test_retry(manager):
    # Celery's two cases one after the other; here both retry at once (the same asserts)
    failing = retry.delay()
    passing = retry.delay(return_value="bar")
    assert _first_states_after_pending([failing, passing]) == ["RETRY", "RETRY"]
    with pytest.raises(ExpectedException):
        failing.get(timeout=TIMEOUT)
    assert failing.status == "FAILURE"
    assert passing.get(timeout=TIMEOUT) == "bar"
    assert passing.status == "SUCCESS"


def test_retry_with_unpickleable_exception(manager):
    job = retry_unpickleable.delay("foo", "bar", retry_kwargs={"countdown": 10,
                                                               "max_retries": 1})
    assert _first_state_after_pending(job) == "RETRY"
    res = job.result
    assert job.status == "RETRY"
    assert "UnpickleableException" in str(res) and "foo" in str(res)
    job.revoke()


def test_fail_with_unpickleable_exception(manager):
    result = fail_unpickleable.delay("foo", "bar")
    with pytest.raises(Exception) as caught:
        result.get(timeout=TIMEOUT)
    assert "UnpickleableException" in str(caught.value) and "foo" in str(caught.value)
    assert result.status == "FAILURE"


def test_task_retried_once(manager):
    assert retry_once.delay().get(timeout=TIMEOUT) == 1


def test_task_retried_priority(manager):
    assert retry_once_priority.apply_async(priority=7).get(timeout=TIMEOUT) == 7


def test_task_retried_headers(manager):
    headers = retry_once_headers.apply_async(headers={"x-test-header": "test-value"}).get(
        timeout=TIMEOUT)
    assert headers is not None
    assert "x-test-header" in headers


def test_unicode_task(manager):
    from engine import group
    assert group(print_unicode.s() for _ in range(5))().get(timeout=TIMEOUT) == [None] * 5


def test_request_time_limits_set_via_apply_async(manager):
    data = return_request_time_limits.apply_async(time_limit=30, soft_time_limit=20).get(
        timeout=TIMEOUT)
    assert data["time_limit"] == 30
    assert data["soft_time_limit"] == 20


def test_request_time_limits_none_when_not_configured(manager):
    data = return_request_time_limits.apply_async().get(timeout=TIMEOUT)
    assert data["time_limit"] is None
    assert data["soft_time_limit"] is None


def test_request_time_limits_from_task_declaration(manager):
    data = task_with_declared_time_limits.apply_async().get(timeout=TIMEOUT)
    assert data["time_limit"] == 60
    assert data["soft_time_limit"] == 45


def test_apply_async_time_limits_override_task_declaration(manager):
    data = task_with_declared_time_limits.apply_async(time_limit=10, soft_time_limit=5).get(
        timeout=TIMEOUT)
    assert data["time_limit"] == 10
    assert data["soft_time_limit"] == 5
