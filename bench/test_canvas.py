"""Canvas end to end: a chord of 1,000 no-op members and its callback (send to the
callback's result), and a chain of 100 no-op steps (send to the last step's result), on a
real ``engine run`` worker that is up before the clock starts.

``pytest bench/test_canvas.py -s``: pytest-benchmark's table holds the round times; the
printed line gives the median. ``bench/compare`` runs the same two workloads against Celery
(``--workloads chord,chain``).
"""

from __future__ import annotations

import statistics
import time
import uuid

import pytest

from engine import chain, chord
from engine.benchmark import Worker, cleanup

MEMBERS, STEPS = 1000, 100
ROUNDS = 5
CONFIGS = {"prefork -c 2": ("prefork", 2), "threads -c 8": ("threads", 8)}


@pytest.fixture(params=list(CONFIGS))
def worker_app(request, redis_server, client):
    from bench import canvas_tasks
    pool, c = CONFIGS[request.param]
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    app = canvas_tasks.app
    app.close()
    app.conf.from_cli(broker_url=redis_server.url, result_backend=redis_server.url,
                      key_prefix=prefix)
    worker = Worker(redis_server.url, prefix, pool, c, app="bench.canvas_tasks:app").start()
    try:
        deadline = time.monotonic() + 60
        while True:   # up and answering before anything is timed
            try:
                canvas_tasks.step.delay(0).get(timeout=1)
                break
            except TimeoutError:
                if not worker.alive() or time.monotonic() > deadline:
                    raise RuntimeError(worker.tail())
        yield request.param, canvas_tasks
    finally:
        worker.stop()
        worker.remove_log()
        app.close()
        cleanup(client, prefix)


def _run(benchmark, label: str, once) -> None:
    times: list[float] = []

    def timed():
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)

    benchmark.pedantic(timed, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    median = statistics.median(times[1:] or times)
    benchmark.extra_info.update(median_s=median)
    print(f"\n{label}: median {median * 1000:,.1f} ms "
          f"({', '.join(f'{t * 1000:,.0f}' for t in times)} ms)")


def test_chord_of_1000_noop_members(benchmark, worker_app):
    name, tasks = worker_app
    benchmark.group = "canvas: chord of 1,000 + callback"

    def once():
        r = chord((tasks.member.s() for _ in range(MEMBERS)), tasks.count.s()).delay()
        assert r.get(timeout=120) == MEMBERS

    _run(benchmark, f"chord {MEMBERS} {name}", once)


def test_chain_of_100_noop_steps(benchmark, worker_app):
    name, tasks = worker_app
    benchmark.group = "canvas: chain of 100"

    def once():
        r = chain(tasks.step.s(0), *(tasks.step.s() for _ in range(STEPS - 1))).delay()
        assert r.get(timeout=120) == STEPS

    _run(benchmark, f"chain {STEPS} {name}", once)
