"""arq side of the comparison workloads (bodies shared through common.py).

Read at import by each worker process (`arq arq_tasks.WorkerSettings`; arq has no
multi-process option, so the driver starts two) and by the driver, both in
bench/.venv-compare. The environment sets, per run:

- BENCH_ARQ_MAX_JOBS: `max_jobs`, jobs at once per process (arq's default is 10);
- BENCH_ARQ_POLL_DELAY: `poll_delay`, seconds between two reads of the queue (a sorted set
  arq polls: it has no blocking read; arq's default is 0.5);
- BENCH_ARQ_KEEP_RESULT: `keep_result`, seconds a result is kept (arq's default 3,600; 0 keeps
  none, which the driver sets when results are ignored).

Per-job INFO logging is turned down to WARNING at startup (`quiet`). Bodies are `async def`, as arq requires; arq calls them with its context first.
common.done() is the same blocking INCR on a bare redis-py connection as for every system.
"""
import asyncio
import logging
import os

from arq.connections import RedisSettings

import common

URL = os.environ["BENCH_REDIS"]


async def noop(ctx):
    common.started()
    common.done()


async def asleep(ctx, s):
    common.started()
    await asyncio.sleep(s)
    await common.adone()     # the count must not block the loop the workload is about


async def echo(ctx, x):
    return x


async def quiet(ctx):
    """arq logs every job's start and end at INFO (two lines a job); its CLI configures that
    level. Warnings and errors stay."""
    logging.getLogger("arq.worker").setLevel(logging.WARNING)


class WorkerSettings:
    functions = [noop, asleep, echo]
    max_jobs = int(os.environ.get("BENCH_ARQ_MAX_JOBS") or 10)
    # a connection per job at most (redis-py's asyncio pool stops at 100 otherwise)
    redis_settings = RedisSettings.from_dsn(URL)
    redis_settings.max_connections = 2 * max_jobs + 50
    poll_delay = float(os.environ.get("BENCH_ARQ_POLL_DELAY") or 0.5)
    keep_result = float(os.environ.get("BENCH_ARQ_KEEP_RESULT") or 3600)
    max_tries = 1          # no retries, as Dramatiq and ArdiQ get
    handle_signals = True
    on_startup = quiet
