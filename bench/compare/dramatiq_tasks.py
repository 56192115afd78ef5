"""Dramatiq side of the comparison workloads (bodies shared through common.py)."""
import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

import common

URL = os.environ["BENCH_REDIS"]

# explicit pools: redis-py 8 caps a pool at 100 connections, too few for 500 greenlets
broker = RedisBroker(connection_pool=common.pool(URL))
broker.add_middleware(Results(backend=RedisBackend(connection_pool=common.pool(URL))))
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0, queue_name="bench")
def noop():
    common.started()
    common.done()


@dramatiq.actor(max_retries=0, queue_name="bench")
def sleep(s):
    common.started()
    time.sleep(s)
    common.done()


@dramatiq.actor(max_retries=0, queue_name="bench")
def cpu(iters):
    common.started()
    common.burn(iters)
    common.done()


@dramatiq.actor(max_retries=0, queue_name="bench")
def payload(data):
    common.started()
    len(data)
    common.done()


@dramatiq.actor(max_retries=0, queue_name="bench", store_results=True)
def echo(x):
    return x
