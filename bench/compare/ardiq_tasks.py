"""ArdiQ side of the comparison workloads (bodies shared through common.py).

Read at import by the worker (`ardiq run ardiq_tasks:app`) and by the driver, both in
bench/.venv-ardiq. The worker's settings come from the environment the driver gives it:

- BENCH_ARDIQ_CONCURRENCY: `concurrency`, tasks running at once per worker process (ArdiQ's
  default is 16);
- BENCH_ARDIQ_PREFETCH: `prefetch`, unset for ArdiQ's default (2 x concurrency);
- BENCH_ARDIQ_RESULT_TTL_MS: `result_ttl_ms`, unset for ArdiQ's default (300,000); the driver
  sets 0 ("don't store results") for the throughput workloads whose results every other
  system ignores. ArdiQ has no per-task switch for that: the setting is the worker's.

Every task comes twice: `async def NAME` (the body runs on the worker's event loop, the way
ArdiQ's docs write tasks) and `def NAME_thread` (a blocking function, which ArdiQ runs with
`asyncio.to_thread`). The bodies are the same blocking code either way: common.done() is one
INCR on a bare redis-py connection for every system.
"""
import asyncio
import os
import time

from ardiq import Ardiq

import common

URL = os.environ["BENCH_REDIS"]


def _settings():
    s = {"concurrency": int(os.environ.get("BENCH_ARDIQ_CONCURRENCY") or 16)}
    if os.environ.get("BENCH_ARDIQ_PREFETCH"):
        s["prefetch"] = int(os.environ["BENCH_ARDIQ_PREFETCH"])
    if os.environ.get("BENCH_ARDIQ_RESULT_TTL_MS"):
        s["result_ttl_ms"] = int(os.environ["BENCH_ARDIQ_RESULT_TTL_MS"])
    return s


# redis_url always given: ArdiQ's default is redis://localhost:6379, never the harness's Redis
SETTINGS = _settings()
app = Ardiq(redis_url=URL, queue_name="bench", **SETTINGS)
# the core ignores keyword arguments it does not know: check that every setting took
for _k, _v in SETTINGS.items():
    if getattr(app, _k) != _v:
        raise RuntimeError(f"ArdiQ did not take {_k}={_v!r} (has {getattr(app, _k)!r})")
task = app.task(max_retries=0)


@task
async def noop():
    common.started()
    common.done()


@task
async def stored():
    common.started()
    common.done()


@task
async def sleep(s):
    common.started()
    await asyncio.sleep(s)   # the asynchronous sleep: the async pool's analogue of gevent's
    common.done()


@task
async def cpu(iters):
    common.started()
    common.burn(iters)
    common.done()


@task
async def payload(data):
    common.started()
    len(data)
    common.done()


@task
async def echo(x):
    return x


@task
def noop_thread():
    common.started()
    common.done()


@task
def stored_thread():
    common.started()
    common.done()


@task
def sleep_thread(s):
    common.started()
    time.sleep(s)
    common.done()


@task
def cpu_thread(iters):
    common.started()
    common.burn(iters)
    common.done()


@task
def payload_thread(data):
    common.started()
    len(data)
    common.done()


@task
def echo_thread(x):
    return x
