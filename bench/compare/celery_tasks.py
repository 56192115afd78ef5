"""Celery side of the comparison workloads (bodies shared through common.py)."""
import os

from celery import Celery

import common

URL = os.environ["BENCH_REDIS"]

app = Celery("celery_tasks", broker=URL, backend=URL)
app.conf.update(
    task_ignore_result=True,          # throughput workloads: results ignored
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    task_default_queue="bench",
)


@app.task(ignore_result=True)
def noop():
    common.started()
    common.done()


@app.task(ignore_result=False)
def stored():
    """The no-op with its result (None) stored by the worker."""
    common.started()
    common.done()


@app.task(ignore_result=True)
def sleep(s):
    common.started()
    import time

    time.sleep(s)
    common.done()


@app.task(ignore_result=True)
def cpu(iters):
    common.started()
    common.burn(iters)
    common.done()


@app.task(ignore_result=True)
def payload(data):
    common.started()
    len(data)
    common.done()


@app.task(ignore_result=False)
def echo(x):
    return x


# -- canvas workloads (chord, chain): results stored, as a chord needs them (its Redis
# backend counts the members' results) and as the chain's handle does
@app.task(ignore_result=False)
def cmember():
    return None


@app.task(ignore_result=False)
def ccount(results):
    return len(results)


@app.task(ignore_result=False)
def cstep(x):
    return x + 1
