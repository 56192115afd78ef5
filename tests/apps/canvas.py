"""The app of the canvas tests: arithmetic to compose, a counter per step, callbacks that
record what they were given. ``TEST_RESULT_EXPIRES`` and ``TEST_LOST_AFTER`` set
``result_expires`` and ``worker_lost_after``."""

import os
import time

from engine import Engine

app = Engine("canvas")
app.conf.update(result_expires=int(os.environ.get("TEST_RESULT_EXPIRES", "600")),
                worker_lost_after=float(os.environ.get("TEST_LOST_AFTER", "3")))


class Boom(Exception):
    pass


def _key(name):
    return f"{app.conf.key_prefix}:t:{name}"


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def tsum(values):
    return sum(values)


@app.task
def echo(value):
    return value


@app.task
def collect(*args):
    return list(args)


@app.task
def fail(*args):
    raise Boom(f"failed with {list(args)}")


@app.task
def record(*args, name, **kwargs):
    """Pushes the arguments it was given to the list ``name`` (a keyword: a parent's result
    or a failed task's id comes first), so a test can read how and how often it ran."""
    from engine import message
    app.client.rpush(_key(name), message.dumps([list(args), kwargs]))
    return "recorded"


@app.task(ignore_result=True)
def counted(*args, name):
    """Counts its runs in Redis under ``name`` (a callback that must run once, or never)."""
    app.client.incr(_key(name))
    return args[0] if args else None


@app.task
def step(x, name, seconds=0.0):
    """One chain step: counts its runs under ``name``, marks its start, sleeps ``seconds``
    on its first run only (a run after a kill is quick), returns x + 1."""
    runs = app.client.incr(_key(f"runs:{name}"))
    app.client.set(_key(f"started:{name}"), os.getpid())
    if seconds and runs == 1:
        time.sleep(seconds)
    return x + 1


@app.task
def noop(*args):
    return None


@app.task
def late(value, seconds):
    """Returns ``value`` after ``seconds``: members that finish out of order."""
    time.sleep(seconds)
    return value


@app.task(bind=True)
def hop(self, trail):
    """Appends the queue and the process it ran in: where the steps of a chain ran."""
    return [*trail, [self.request.queue, os.getpid()]]
