"""SAQ side of the comparison workloads (bodies shared through common.py).

Read at import by the workers (`saq saq_tasks.settings --workers 2 -q`) and by the driver,
both in bench/.venv-compare. BENCH_SAQ_CONCURRENCY is SAQ's `concurrency` (jobs at once per
worker process; its default is 10). SAQ calls a function with its context first, then the
job's keyword arguments. Bodies are `async def`, as SAQ requires; common.done() is the same
blocking INCR on a bare redis-py connection as for every system.
"""
import asyncio
import os

from redis.asyncio import Redis
from saq.queue.redis import RedisQueue

import common

URL = os.environ["BENCH_REDIS"]
CONCURRENCY = int(os.environ.get("BENCH_SAQ_CONCURRENCY") or 10)

# Every slot waits on the queue with a BLMOVE that holds a connection; redis-py 8's asyncio
# pool stops at 100, which at 500 slots left no connection to finish a job with (the run
# stalled). The pool is sized for the slots.
queue = RedisQueue(Redis.from_url(URL, max_connections=2 * CONCURRENCY + 50), name="bench")


async def noop(ctx):
    common.started()
    common.done()


async def asleep(ctx, s):
    common.started()
    await asyncio.sleep(s)
    await common.adone()     # the count must not block the loop the workload is about


async def echo(ctx, x):
    return x


settings = {
    "queue": queue,
    "functions": [noop, asleep, echo],
    "concurrency": CONCURRENCY,
}
