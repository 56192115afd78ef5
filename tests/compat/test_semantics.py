"""Celery's semantics where ours used to differ (issue 16), each against a real worker or
the real send path. Also covered elsewhere: ``get()`` of an ignore_result send returns None
at once (tests/integration/test_task_extras.py), expiry checked when a task is handed to
its pool (test_tasks.py::test_expired), soft_time_limit above time_limit refused
(tests/unit/test_task_classes.py)."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from tests.compat.tasks import fail_with_args, reject_without_requeue, wait_for_other
from tests.conftest import wait_for

TIMEOUT = 30


def test_reject_without_requeue_stores_failure_and_dead_letters(manager):
    from engine.exceptions import Reject
    app = manager.app
    result = reject_without_requeue.delay()
    with pytest.raises(Reject, match="rejected"):
        result.get(timeout=TIMEOUT)
    assert result.state == "FAILURE"
    [(_, fields)] = wait_for(lambda: app.client.xrange(app.broker.keys.dlq("celery")),
                             message="the dead letter")
    assert b"rejected" in fields[b"reason"]


def test_result_get_inside_a_task_is_refused_unless_asked_for(manager):
    with pytest.raises(RuntimeError, match="never call result.get"):
        wait_for_other.delay(1, 2).get(timeout=TIMEOUT)
    # with a second slot the inner task can run while the outer one waits
    assert manager.app.control.pool_grow(1, reply=True, timeout=5)
    assert wait_for_other.delay(1, 2, allow=True).get(timeout=TIMEOUT) == 3


def test_get_outside_a_task_and_in_an_eager_call_is_fine(celery_app):
    from tests.compat.tasks import add
    assert add.apply((1, 2)).get() == 3          # eager: no worker slot held


def test_exception_arguments_are_kept(manager):
    with pytest.raises(ValueError) as caught:
        fail_with_args.delay().get(timeout=TIMEOUT)
    assert caught.value.args == ("bad", 42)


def test_a_naive_eta_is_utc_whatever_the_local_zone(celery_app, monkeypatch):
    from engine.message import absolute_time
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        naive = dt.datetime(2030, 1, 1, 12, 0, 0)
        assert absolute_time(naive) == naive.replace(tzinfo=dt.timezone.utc).timestamp()
        # and through a send: the delayed set's score is the UTC reading
        from tests.compat.tasks import add
        add.apply_async((1, 1), eta=naive)
        app = celery_app
        score = app.client.zscore(app.broker.keys.delayed("celery"),
                                  app.client.zrange(app.broker.keys.delayed("celery"), 0, 0)[0])
        assert score == naive.replace(tzinfo=dt.timezone.utc).timestamp()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_nested_functions_are_named_module_function(celery_app):
    def make():
        @celery_app.task
        def inner_compat_task():
            return 1
        return inner_compat_task
    assert make().name == f"{__name__}.inner_compat_task"
    assert "<locals>" not in make().name


def test_reject_takes_requeue_positionally_as_celery_does():
    from engine.exceptions import Reject
    assert Reject("again", True).requeue is True

