"""Engine side of the comparison workloads (bodies shared through common.py).

The workers run `engine run -A enginebench_tasks --pool P -c N` with this directory on
PYTHONPATH and ENGINE_BROKER_URL / ENGINE_RESULT_BACKEND naming the harness's private Redis.
Task names are the contract's default, `enginebench_tasks.<function>`.
"""
import asyncio
import time

from engine import Engine

import common

app = Engine("enginebench_tasks")    # broker and backend from ENGINE_BROKER_URL / _RESULT_BACKEND


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


@app.task
def echo(x):
    return x


# -- async def twins (issue 19), what `--pool asyncio` runs as coroutines of its loop (a plain
# def task there goes to the pool's sync threads instead)
@app.task(ignore_result=True)
async def noop_async():
    common.started()
    common.done()


@app.task
async def echo_async(x):
    return x


@app.task(ignore_result=True)
async def asleep(s):
    common.started()
    await asyncio.sleep(s)
    await common.adone()     # the count must not block the loop the workload is about


# -- canvas workloads (chord, chain): results stored, as the chord and the chain's handle
# need them (Celery's too)
@app.task
def cmember():
    return None


@app.task
def ccount(results):
    return len(results)


@app.task
def cstep(x):
    return x + 1
