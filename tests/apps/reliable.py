"""The app of the reliability, retry, revoke and chaos tests.

Broker and prefix come from the environment as in ``basic``; ``TEST_LOST_AFTER`` and
``TEST_MAX_DELIVERIES`` set ``worker_lost_after`` and ``task_max_deliveries``, small so
that a lost worker is noticed within seconds; ``TEST_CONNECTION_RETRIES`` sets
``broker_connection_retries`` (the default when unset), small so that an outage test's
worker gives up on its clients' retries within a second or two instead of a minute.
"""

import os
import socket
import time

from redis.exceptions import OutOfMemoryError

from engine import Engine

app = Engine("reliable")
app.conf.update(worker_lost_after=float(os.environ.get("TEST_LOST_AFTER", "3")),
                task_max_deliveries=int(os.environ.get("TEST_MAX_DELIVERIES", "10")))
if os.environ.get("TEST_CONNECTION_RETRIES"):
    app.conf.update(broker_connection_retries=int(os.environ["TEST_CONNECTION_RETRIES"]))


def _runs_key(key):
    return f"{app.conf.key_prefix}:runs:{key}"


@app.task(bind=True)
def logged_sleep(self, key, seconds):
    """Appends ``[pid, hostname, time]`` to a list when it starts, then sleeps."""
    app.client.rpush(_runs_key(key), f"{os.getpid()} {self.request.hostname} {time.time()}")
    time.sleep(seconds)
    return key


@app.task
def poison():
    """Ends the process that runs it, every time."""
    os._exit(3)


@app.task(bind=True, max_retries=2)
def always_retry(self, key):
    app.client.incr(_runs_key(key))
    raise self.retry(countdown=0.2, exc=ValueError(f"attempt {self.request.retries}"))


@app.task(bind=True)
def retry_limit_override(self, key):
    app.client.incr(_runs_key(key))
    raise self.retry(countdown=0.1, max_retries=1)


@app.task(bind=True, max_retries=5)
def succeed_on_third(self, key):
    n = app.client.incr(_runs_key(key))
    if n < 3:
        raise self.retry(countdown=0.1)
    return {"runs": n, "retries": self.request.retries}


@app.task(autoretry_for=(KeyError,), retry_backoff=0.05, retry_backoff_max=0.2, max_retries=3)
def autoretried(key):
    app.client.incr(_runs_key(key))
    raise KeyError(key)


@app.task(bind=True, max_retries=10, expires=1.0)
def retry_past_expiry(self, key):
    app.client.incr(_runs_key(key))
    raise self.retry(countdown=1.5)


@app.task(idempotent=True)
def charge(key):
    """An effect that must happen once per task id: counts how often the body ran."""
    return app.client.incr(_runs_key(key))


@app.task
def bump(field):
    """The chaos test's task: one counter per task index."""
    app.client.hincrby(f"{app.conf.key_prefix}:chaos", field, 1)
    time.sleep(0.02)   # long enough for the chaos to hit tasks while they run
    return field


@app.task
def host():
    return socket.gethostname()


@app.task(bind=True)
def retry_once_later(self, key):
    """The first run asks to run again in an hour; the retry returns."""
    app.client.incr(_runs_key(key))
    if self.request.retries == 0:
        raise self.retry(countdown=3600)
    return "again"


@app.task(bind=True, max_retries=3)
def retry_at(self, key, when):
    """The first run asks to run again at a datetime, Celery's spelling: ``when`` is
    "naive" (UTC, as Celery reads a naive eta) or "aware" (another time zone)."""
    import datetime as dt
    app.client.incr(_runs_key(key))
    if self.request.retries == 0:
        soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=0.3)
        if when == "naive":
            eta = soon.replace(tzinfo=None)
        else:
            eta = soon.astimezone(dt.timezone(dt.timedelta(hours=-7)))
        raise self.retry(eta=eta)
    return "again"


@app.task(bind=True)
def hostile_retry(self, kind):
    """Asks to retry with an eta or countdown that cannot be a time."""
    choices = {"nan-eta": {"eta": float("nan")}, "inf-countdown": {"countdown": float("inf")},
               "huge-countdown": {"countdown": 1e300}, "text-eta": {"eta": "tomorrow"},
               "text-countdown": {"countdown": "soon"}, "list-eta": {"eta": [1]}}
    raise self.retry(**choices[kind])


@app.task
def nap(seconds, index):
    """Sleeps and returns ``index``; writes nothing to Redis itself (the memory tests)."""
    time.sleep(seconds)
    return index


@app.task(autoretry_for=(OutOfMemoryError,), retry_backoff=0.1,
          retry_backoff_max=0.5, retry_jitter=False, max_retries=None)
def bump_patient(field):
    """``bump`` that retries when its own write is refused (Redis out of memory)."""
    app.client.hincrby(f"{app.conf.key_prefix}:chaos", field, 1)
    time.sleep(0.01)
    return field
