"""The app of the lane tests: tasks that tell which pool and process ran them."""

import os
import threading
import time

from engine import Engine

app = Engine("lanes")

#: memory a ``bloat`` task keeps alive in its process, so max-memory recycling has a cause
_hoard: list[bytes] = []


def _patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("socket")


@app.task(bind=True)
def where(self, seconds=0.0):
    """Which worker, process, thread and patching ran this (after sleeping ``seconds``)."""
    if seconds:
        time.sleep(seconds)
    return {"hostname": self.request.hostname, "pid": os.getpid(), "ppid": os.getppid(),
            "thread": threading.current_thread().name, "gevent": _patched(),
            "queue": self.request.queue}


@app.task
def nap(seconds):
    time.sleep(seconds)
    return os.getpid()


@app.task
def burn(seconds, marker=None):
    """CPU for ``seconds`` (a pure-Python loop: blocks a gevent hub, not a prefork child);
    touches ``marker`` first, since a blocked hub sends no task-started event."""
    if marker:
        open(marker, "w").close()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


@app.task
def bloat(mib):
    """Keep ``mib`` MiB resident in this process (written, so the pages are real)."""
    _hoard.append(b"\x01" * (mib * 1024 * 1024))
    return os.getpid()


@app.task
def cpu(n):
    """About 20 ms of CPU for n=20000 on a laptop core (the benchmark's CPU task)."""
    total = 0
    for i in range(n * 10):
        total += i * i % 7
    return total
