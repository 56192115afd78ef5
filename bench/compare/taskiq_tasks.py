"""taskiq side of the comparison workloads (bodies shared through common.py).

Read at import by the workers (`taskiq worker taskiq_tasks:broker --workers 2 ...`) and by
the driver, both in bench/.venv-compare. The broker is taskiq-redis's `RedisStreamBroker`
(XREADGROUP on a consumer group, XACK after the task: at-least-once, as the engine's
stream), `xread_count` 1,000 (its default is 100) and the consumer group made at id 0, so a
backlog enqueued before the workers start is read from its start. With
BENCH_TASKIQ_RESULTS=1 (the `latency` workload) results go to taskiq-redis's
`RedisAsyncResultBackend`; otherwise taskiq's default, which keeps none.

Bodies are `async def`, the way taskiq's docs write tasks; common.done() is the same
blocking INCR on a bare redis-py connection as for every system.
"""
import asyncio
import os

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

import common

URL = os.environ["BENCH_REDIS"]
XREAD_COUNT = int(os.environ.get("BENCH_TASKIQ_XREAD_COUNT") or 1000)

# each ack borrows a pool connection: sized for the slots (redis-py 8's asyncio pool stops at 100)
SLOTS = int(os.environ.get("BENCH_TASKIQ_SLOTS") or 100)
broker = RedisStreamBroker(URL, queue_name="bench", consumer_id="0", xread_count=XREAD_COUNT,
                           max_connection_pool_size=2 * SLOTS + 50)
if os.environ.get("BENCH_TASKIQ_RESULTS") == "1":
    broker = broker.with_result_backend(RedisAsyncResultBackend(URL, result_ex_time=600))


@broker.task(task_name="noop")
async def noop():
    common.started()
    common.done()


@broker.task(task_name="asleep")
async def asleep(s):
    common.started()
    await asyncio.sleep(s)
    await common.adone()     # the count must not block the loop the workload is about


@broker.task(task_name="echo")
async def echo(x):
    return x
