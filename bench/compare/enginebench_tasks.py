"""Engine side of the comparison workloads (bodies shared through common.py).

The workers run `engine run -A enginebench_tasks --pool P -c N` with this directory on
PYTHONPATH and ENGINE_BROKER_URL / ENGINE_RESULT_BACKEND naming the harness's private Redis.
Task names are the contract's default, `enginebench_tasks.<function>`.
"""
import time

from engine import Engine

import common

app = Engine("enginebench_tasks")    # broker and backend from ENGINE_BROKER_URL / _RESULT_BACKEND


@app.task(ignore_result=True)
def noop():
    common.done()


@app.task(ignore_result=True)
def sleep(s):
    time.sleep(s)
    common.done()


@app.task(ignore_result=True)
def cpu(iters):
    common.burn(iters)
    common.done()


@app.task(ignore_result=True)
def payload(data):
    len(data)
    common.done()


@app.task
def echo(x):
    return x
