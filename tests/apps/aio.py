"""The app of the async tests: ``async def`` tasks (and two plain ones) for every pool."""

import asyncio
import time

from engine import Engine
from engine.exceptions import SoftTimeLimitExceeded

app = Engine("aio")


@app.task
async def aadd(x, y):
    await asyncio.sleep(0.01)
    return x + y


@app.task
def add(x, y):
    return x + y


@app.task
def ssleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(bind=True)
async def awhoami(self):
    await asyncio.sleep(0)
    return {"id": self.request.id, "retries": self.request.retries}


@app.task
async def asleep(seconds):
    await asyncio.sleep(seconds)
    return seconds


@app.task
async def acatch_soft(seconds):
    """Waits at one long await: the soft limit must be raised there."""
    try:
        await asyncio.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "caught"
    return "finished"


@app.task
async def astubborn(key, seconds):
    """Swallows every cancellation and soft limit: only abandonment ends it."""
    app.client.set(key, "started")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            await asyncio.sleep(0.05)
        except (asyncio.CancelledError, SoftTimeLimitExceeded):
            app.client.incr(f"{key}:swallowed")
    return "outlived"


@app.task
async def ablock(seconds):
    """Blocks the event loop (a sync sleep inside a coroutine)."""
    time.sleep(seconds)
    return "unblocked"


@app.task
async def amark_and_sleep(key, seconds):
    app.client.set(key, "started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        app.client.set(f"{key}:cancelled", "1")
        raise
    return seconds


@app.task(bind=True, max_retries=2, default_retry_delay=0.1)
async def aflaky(self, key):
    n = app.client.incr(key)
    if n < 3:
        raise self.retry(countdown=0.1)
    return n


@app.task
async def aloop():
    """How many tasks the running event loop has run, this one included (and in which
    process): a slot that keeps its loop counts up."""
    import os
    loop = asyncio.get_running_loop()
    loop.engine_test_runs = getattr(loop, "engine_test_runs", 0) + 1
    return [os.getpid(), loop.engine_test_runs]
