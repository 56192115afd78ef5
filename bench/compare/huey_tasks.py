"""Huey side of the comparison workloads (bodies shared through common.py)."""
import os
import time

from huey import RedisHuey

import common

URL = os.environ["BENCH_REDIS"]

# notify_result: result waits use BLPOP instead of Huey's default sleep-and-poll
# (explicit pool: redis-py 8 caps a pool at 100 connections, too few for 500 greenlets)
huey = RedisHuey("bench", connection_pool=common.pool(URL), notify_result=True)


@huey.task()
def noop():
    common.started()
    common.done()


@huey.task()
def sleep(s):
    common.started()
    time.sleep(s)
    common.done()


@huey.task()
def cpu(iters):
    common.started()
    common.burn(iters)
    common.done()


@huey.task()
def payload(data):
    common.started()
    len(data)
    common.done()


@huey.task()
def echo(x):
    return x
