"""Hand-off alone, no Redis: supervisor -> child -> supervisor for no-op tasks.

The prefork pool's shared-memory path against ``multiprocessing.Queue`` with the same number
of worker processes, for scale. Run: ``pytest bench/test_handoff.py -s --benchmark-only``.
Prints tasks/s and µs per task; asserts nothing about speed.
"""

from __future__ import annotations

import multiprocessing
import threading
import time

import msgpack
import pytest

from pools.base import SUCCESS, Job, Outcome
from pools.prefork import PreforkPool

TASKS = 20_000
CHILDREN = 2
_NONE = msgpack.packb(None)


class NoopRunner:
    """Decodes the wire body as the engine does, runs nothing, encodes None."""

    def load(self, body: bytes) -> Job:
        data = msgpack.unpackb(body)
        return Job(data["id"], data["task"], data["args"], data["kwargs"], body=body)

    def execute(self, job: Job) -> Outcome:
        return Outcome(job.id, SUCCESS, _NONE)


def _bodies(n: int) -> list[Job]:
    out = []
    for i in range(n):
        job_id = f"{i:032x}"
        body = msgpack.packb({"v": 1, "id": job_id, "task": "bench.noop", "args": [],
                              "kwargs": {}, "retries": 0})
        out.append(Job(job_id, "bench.noop", body=body))
    return out


def _report(name: str, seconds: float, n: int) -> None:
    print(f"\n{name}: {n} no-op tasks in {seconds:.3f}s = {n / seconds:,.0f} tasks/s, "
          f"{seconds / n * 1e6:.1f} µs/task")


class _Counter:
    def __init__(self) -> None:
        self.n = 0
        self.event = threading.Event()

    def __call__(self, outcome: Outcome) -> None:
        self.n += 1
        self.event.set()


def _drive(pool: PreforkPool, counter: _Counter, jobs: list[Job]) -> float:
    """Submit as a supervisor would (only into free slots) until every outcome is back."""
    target = counter.n + len(jobs)
    it = iter(jobs)
    pending = next(it, None)
    start = time.perf_counter()
    while counter.n < target:
        free = pool.free_slots()
        while free > 0 and pending is not None:
            pool.submit(pending)
            pending = next(it, None)
            free -= 1
        counter.event.wait(0.05)
        counter.event.clear()
    return time.perf_counter() - start


@pytest.mark.parametrize("prefetch", [2, 8])
def test_prefork_shared_memory_handoff(benchmark, prefetch):
    counter = _Counter()
    pool = PreforkPool(CHILDREN, counter, runner=NoopRunner(), prefetch=prefetch)
    pool.start()
    try:
        _drive(pool, counter, _bodies(1000))          # warm up the children
        benchmark.group = "handoff"
        benchmark.extra_info["tasks"] = TASKS
        benchmark.pedantic(_drive, setup=lambda: ((pool, counter, _bodies(TASKS)), {}),
                           rounds=3, iterations=1)
        seconds = benchmark.stats.stats.median
        _report(f"prefork shm, {CHILDREN} children, prefetch {prefetch} (median of 3)",
                seconds, TASKS)
        benchmark.extra_info["tasks_per_s"] = TASKS / seconds
    finally:
        pool.stop(10)


def _queue_worker(inq, outq) -> None:
    runner = NoopRunner()
    while True:
        body = inq.get()
        if body is None:
            return
        job = runner.load(body)
        o = runner.execute(job)
        outq.put(msgpack.packb([o.job_id, o.state, o.result]))


def _drive_queue(inq, outq, bodies: list[bytes]) -> float:
    start = time.perf_counter()
    window = CHILDREN * 8                      # bounded prefetch, as the pool's
    sent = done = 0
    while done < len(bodies):
        while sent < len(bodies) and sent - done < window:
            inq.put(bodies[sent])
            sent += 1
        msgpack.unpackb(outq.get())
        done += 1
    return time.perf_counter() - start


def test_multiprocessing_queue_handoff(benchmark):
    ctx = multiprocessing.get_context("fork")
    inq, outq = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_queue_worker, args=(inq, outq)) for _ in range(CHILDREN)]
    for p in procs:
        p.start()
    try:
        bodies = [j.body for j in _bodies(TASKS)]
        _drive_queue(inq, outq, bodies[:1000])
        benchmark.group = "handoff"
        benchmark.pedantic(_drive_queue, args=(inq, outq, bodies), rounds=3, iterations=1)
        seconds = benchmark.stats.stats.median
        _report(f"multiprocessing.Queue, {CHILDREN} processes (median of 3)", seconds, TASKS)
        benchmark.extra_info["tasks_per_s"] = TASKS / seconds
    finally:
        for _ in procs:
            inq.put(None)
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
