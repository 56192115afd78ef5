"""Our own tasks for the cases ported from Celery's t/integration (test_tasks.py,
test_inspect.py): the same names and behaviour as Celery's t/integration/tasks.py, written
for the engine. ``shared_task``, as there: the app is ``tests.compat.celeryapp``."""

from __future__ import annotations

import time

from engine import Task, get_task_logger, shared_task
from engine.exceptions import Reject

log = get_task_logger(__name__)


class ExpectedException(Exception):
    """The failure the cases expect; equal when the arguments are."""

    def __eq__(self, other):
        return isinstance(other, ExpectedException) and self.args == other.args

    def __hash__(self):
        return hash(self.args)


class UnpickleableException(Exception):
    """Cannot be rebuilt from its arguments alone: ``bar`` is required and not in args."""

    def __init__(self, foo, bar=None):
        if bar is None:
            raise TypeError("bar must be provided")
        super().__init__(foo)
        self.bar = bar


@shared_task
def add(x, y, z=None):
    return x + y + z if z else x + y


@shared_task(typing=False)
def add_not_typed(x, y):
    return x + y


@shared_task(ignore_result=True)
def add_ignore_result(x, y):
    return x + y


@shared_task
def sleeping(i, **_):
    time.sleep(i)


@shared_task
def now():
    """When it ran (unix seconds): for the eta case, instead of a stopwatch."""
    return time.time()


@shared_task
def fail(*args):
    raise ExpectedException("Task expected to fail", *args)


@shared_task
def fail_unpickleable(foo, bar):
    raise UnpickleableException(foo, bar)


@shared_task
def print_unicode(log_message="håå®ƒ valmuefrø", print_message="hiöäüß"):
    log.warning(log_message)
    print(print_message)


@shared_task
def reject_without_requeue():
    raise Reject("rejected", requeue=False)


@shared_task(bind=True, default_retry_delay=1)
def retry(self, return_value=None):
    """Retries (every second here; Celery's waits 5) until ``return_value`` is returned on
    the fourth run, or fails with ExpectedException past max_retries."""
    if return_value:
        attempt = getattr(self, "attempt", 0)
        if attempt >= 3:
            del self.attempt
            return return_value
        self.attempt = attempt + 1
    raise self.retry(exc=ExpectedException(), countdown=1)


@shared_task(bind=True, default_retry_delay=1)
def retry_unpickleable(self, foo, bar, *, retry_kwargs):
    raise self.retry(exc=UnpickleableException(foo, bar), **retry_kwargs)


@shared_task(bind=True, max_retries=1)
def retry_once(self, *args, max_retries=1, countdown=0.1):
    if self.request.retries:
        return self.request.retries
    raise self.retry(countdown=countdown, max_retries=max_retries)


@shared_task(bind=True, max_retries=1)
def retry_once_priority(self, *args, max_retries=1, countdown=0.1):
    if self.request.retries:
        return self.request.delivery_info["priority"]
    raise self.retry(countdown=countdown, max_retries=max_retries)


@shared_task(bind=True, max_retries=1)
def retry_once_headers(self, *args, max_retries=1, countdown=0.1):
    if self.request.retries:
        return self.request.headers
    raise self.retry(countdown=countdown, max_retries=max_retries)


@shared_task(bind=True)
def return_request_time_limits(self):
    return {"time_limit": self.request.time_limit,
            "soft_time_limit": self.request.soft_time_limit}


@shared_task(bind=True, time_limit=60, soft_time_limit=45)
def task_with_declared_time_limits(self):
    return {"time_limit": self.request.time_limit,
            "soft_time_limit": self.request.soft_time_limit}


class ClassBasedAutoRetryTask(Task):
    name = "auto_retry_class_task"
    autoretry_for = (ValueError,)
    retry_backoff = True

    def run(self):
        if self.request.retries:
            return self.request.retries
        raise ValueError()


@shared_task
def wait_for_other(x, y, allow=False):
    """Waits inside a task for another task's result: refused unless ``allow``."""
    return add.delay(x, y).get(timeout=30, disable_sync_subtasks=not allow)


@shared_task
def fail_with_args():
    raise ValueError("bad", 42)
