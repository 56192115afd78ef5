"""End to end per pool and workload: a real ``engine run`` worker drains a backlog that
``setup`` enqueued (``delay_many``) under a prefix of the round's own.

``pytest bench/test_pools.py -s``. The pytest-benchmark time of a round includes the worker's
start and warm shutdown; the figure that matters is printed: tasks/s from the first message
taken to the last completion (the worker's ``task-received`` and ``task-succeeded`` events), median of the rounds,
with the worker tree's CPU per task. Workloads: ``noop``; ``sleep`` (50 ms); ``cpu`` (~20 ms
of pure Python, calibrated here).
"""

from __future__ import annotations

import statistics
import time
import uuid

import pytest
import redis

from engine import bench_tasks
from engine.benchmark import (CPU_MS, SLEEP_S, EventCollector, TreeSampler, cleanup, start_worker,
                              task_args)

POOLS = {"solo": 1, "threads": 8, "prefork": 2, "gevent": 100}
ROUNDS = 3
_CPU_ITERS = None


def cpu_iters() -> int:
    global _CPU_ITERS
    if _CPU_ITERS is None:
        _CPU_ITERS = bench_tasks.calibrate(CPU_MS)
    return _CPU_ITERS


def tasks_for(kind: str, concurrency: int) -> int:
    if kind == "noop":
        return 5000
    if kind == "sleep":          # about 1 s of sleeping at full concurrency
        return min(500, int(concurrency / SLEEP_S))
    return 50                    # cpu: 50 x 20 ms


@pytest.mark.parametrize("kind", ["noop", "sleep", "cpu"])
@pytest.mark.parametrize("pool", list(POOLS))
def test_pool(benchmark, redis_server, client, pool, kind):
    benchmark.group = f"end to end: {kind}"
    c = POOLS[pool]
    n = tasks_for(kind, c)
    args = task_args(kind, 0, cpu_iters() if kind == "cpu" else None)
    fn = getattr(bench_tasks, kind)
    app = bench_tasks.app
    rates, cpu_per_task, prefixes = [], [], []
    state: dict = {}

    def setup():
        prefix = f"bench-{uuid.uuid4().hex[:10]}"
        prefixes.append(prefix)
        app.close()
        app.conf.from_cli(broker_url=redis_server.url, result_backend=redis_server.url,
                          key_prefix=prefix)
        app.broker.ensure_groups([app.conf.task_default_queue])
        for start in range(0, n, 1000):
            fn.delay_many([args] * min(1000, n - start))
        state["prefix"] = prefix

    def drain():
        prefix = state["prefix"]
        collector = EventCollector(redis.Redis.from_url(redis_server.url), f"{prefix}:events")
        collector.start()
        worker = start_worker(redis_server.url, prefix, pool, c)
        sampler = TreeSampler(worker.pid)
        try:
            deadline = time.monotonic() + 300
            cpu0 = None
            while len(collector.done) < n:
                if cpu0 is None and collector.online.is_set():
                    cpu0 = sampler.cpu_s()
                if not worker.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"{pool}/{kind}: {len(collector.done)}/{n} done\n"
                                       + worker.tail())
                time.sleep(0.01)
            cpu = sampler.cpu_s() - (cpu0 or 0.0)
            times = sorted(collector.done.values())
            rates.append(n / (times[-1] - (collector.first_received or times[0])))
            cpu_per_task.append(cpu / n)
        finally:
            worker.close()
            worker.remove_log()
            collector.stop()
            collector.join(2)

    try:
        benchmark.pedantic(drain, setup=setup, rounds=ROUNDS, iterations=1)
    finally:
        app.close()
        for prefix in prefixes:
            cleanup(client, prefix)
    rate = statistics.median(rates)
    benchmark.extra_info.update(tasks_per_s=round(rate), tasks=n, concurrency=c)
    print(f"\n{pool:>8} -c {c:<3} {kind:<5} {n:>5} tasks: {rate:>9,.0f} tasks/s "
          f"(median of {len(rates)}: {', '.join(f'{r:,.0f}' for r in rates)}), "
          f"worker CPU {statistics.median(cpu_per_task) * 1e6:,.0f} µs/task")
