"""The app the integration tests run workers with (broker and prefix from the environment)."""

import os
import subprocess
import time

from engine import Engine
from engine.exceptions import Reject, SoftTimeLimitExceeded

app = Engine("tests")


class CustomError(Exception):
    pass


@app.task
def add(x, y):
    return x + y


@app.task
def echo(value):
    return value


@app.task
def fail(message):
    raise CustomError(message)


@app.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task
def catch_soft(seconds):
    return _sleep_until_soft_limit(seconds)


@app.task(soft_time_limit=0.3)
def catch_declared_soft(seconds):
    """catch_soft with its limit declared on the task: it is never in the message."""
    return _sleep_until_soft_limit(seconds)


def _sleep_until_soft_limit(seconds):
    # short sleeps: the threads pool raises the soft limit between bytecodes, which a
    # single long C call (one time.sleep) would hold off until it returns
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "caught"
    return "finished"


@app.task
def spin(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


@app.task(bind=True)
def whoami(self):
    return {"id": self.request.id, "retries": self.request.retries,
            "hostname": self.request.hostname, "pid": os.getpid()}


@app.task(bind=True, max_retries=2, default_retry_delay=0.1)
def flaky(self, key):
    client = self.app.client
    n = client.incr(key)
    if n < 3:
        raise self.retry(countdown=0.1)
    return n


@app.task
def reject(requeue=False):
    raise Reject("not for me", requeue=requeue)


@app.task(ignore_result=True)
def noop():
    return None


@app.task
def counter(key):
    return app.client.incr(key)


@app.task
def mark_and_sleep(key, seconds):
    """Sets ``key`` in Redis when it starts, so tests know it runs, then sleeps."""
    app.client.set(key, os.getpid())
    time.sleep(seconds)
    return seconds


@app.task
def leave_sleepers(seconds):
    """Starts two ``sleep`` processes that outlive the task; returns their pids. One is in a
    session of its own (a child of this process still); the other is an orphan left in this
    process's group (the shell that started it has exited)."""
    detached = subprocess.Popen(["sleep", str(seconds)], start_new_session=True)
    shell = subprocess.run(["sh", "-c", f"sleep {seconds} >/dev/null 2>&1 & echo $!"],
                           capture_output=True, text=True, check=True)
    return {"detached": detached.pid, "orphan": int(shell.stdout)}
