"""Tasks of bench/lanes_mixed.py: 20 ms of CPU, and 50 ms of waiting (I/O)."""

import time

from engine import Engine

app = Engine("lanesbench")


@app.task
def crunch(cpu_seconds=0.02):
    """Burn ``cpu_seconds`` of this thread's CPU time (not wall time: fair on a busy box)."""
    end = time.thread_time() + cpu_seconds
    n = 0
    while time.thread_time() < end:
        n += 1
    return n


@app.task
def fetch(seconds=0.05):
    """Wait like an HTTP call would (a patched sleep under gevent)."""
    time.sleep(seconds)
    return seconds
