"""What events cost: no-op throughput of one worker with events on and off.

    .venv/bin/python bench/events_cost.py [-n 20000] [--pool threads] [-c 4] [--rounds 3]

Starts a private redis-server, and per round and mode: enqueues N no-op tasks, starts
``engine run`` (with or without ``--no-events``), and times from the first message taken
to the queue drained. It also reports CPU time per task of the worker and of redis-server
over the same stretch, which a busy machine disturbs far less than wall-clock rates.
Modes alternate so that drift hits both alike. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.testing import Worker, engine_env, private_redis, temp_log  # noqa: E402


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def one_round(url: str, *, events: bool, n: int, pool: str, concurrency: int,
              server: psutil.Process) -> tuple[float, float, float]:
    """-> (tasks per second, worker CPU us per task, redis CPU us per task)"""
    prefix = f"ev{uuid.uuid4().hex[:8]}"
    env = engine_env({"ENGINE_BROKER_URL": url, "ENGINE_KEY_PREFIX": prefix}, root=ROOT)
    os.environ.update(ENGINE_BROKER_URL=url, ENGINE_KEY_PREFIX=prefix)
    from tests.apps.basic import app
    app.close()
    app.tasks["tests.apps.basic.noop"].delay_many([() for _ in range(n)])
    broker = app.broker
    stream = broker.keys.queue("default")
    args = ["-A", "tests.apps.basic", "--pool", pool, "-c", str(concurrency), "-l", "warning",
            "-n", prefix]
    if not events:
        args.append("--no-events")
    log_path = temp_log("engine-events-cost-")
    engine_run = Worker(args, env=env, log_path=log_path, cwd=ROOT)
    try:
        def remaining() -> int:
            d = broker.depth("default")
            return d["waiting"] + d["unacked"]
        worker = psutil.Process(engine_run.pid)
        while remaining() >= n:
            time.sleep(0.002)
        start = time.perf_counter()
        worker_cpu, server_cpu = _cpu(worker), _cpu(server)
        while remaining() > 0:
            time.sleep(0.002)
        elapsed = time.perf_counter() - start
        worker_cpu, server_cpu = _cpu(worker) - worker_cpu, _cpu(server) - server_cpu
        return n / elapsed, worker_cpu / n * 1e6, server_cpu / n * 1e6
    finally:
        engine_run.close(grace=60)
        engine_run.remove_log()
        app.client.delete(stream, broker.keys.events)
        app.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--pool", default="threads")
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with private_redis(prefix="engine-events-cost-", aof=False) as server:
        url = server.url
        runs: dict[str, list[tuple[float, float, float]]] = {"on": [], "off": []}
        for _ in range(args.rounds):
            for mode in ("on", "off"):
                runs[mode].append(one_round(url, events=mode == "on", n=args.n,
                                            pool=args.pool, concurrency=args.concurrency,
                                            server=psutil.Process(server.proc.pid)))

        def median(mode: str, i: int) -> float:
            return statistics.median(run[i] for run in runs[mode])
        on, off = median("on", 0), median("off", 0)
        cpu_on, cpu_off = median("on", 1), median("off", 1)
        redis_on, redis_off = median("on", 2), median("off", 2)
        print(json.dumps({
            "pool": args.pool, "concurrency": args.concurrency, "tasks": args.n,
            "rounds": args.rounds,
            "rate_on": [round(r[0]) for r in runs["on"]],
            "rate_off": [round(r[0]) for r in runs["off"]],
            "median_rate_on": round(on), "median_rate_off": round(off),
            "rate_cost_percent": round((off - on) / off * 100, 1),
            "worker_cpu_us_per_task_on": round(cpu_on, 1),
            "worker_cpu_us_per_task_off": round(cpu_off, 1),
            "worker_cpu_cost_percent": round((cpu_on - cpu_off) / cpu_off * 100, 1),
            "redis_cpu_us_per_task_on": round(redis_on, 1),
            "redis_cpu_us_per_task_off": round(redis_off, 1),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
