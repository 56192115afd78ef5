"""Mixed workload: CPU tasks on one queue, I/O tasks on another, one lane-split worker
against single-pool workers with the same number of execution processes.

    .venv/bin/python bench/lanes_mixed.py [--cpu 200] [--io 2000]

Each configuration gets a private redis-server and a fresh ``engine run``; the time runs
from the first enqueue to the last result. The lane-split worker is
``--lane cpu=prefork:2 --lane io=gevent:200`` (3 execution processes: 2 prefork children and
the gevent lane's process); the single-pool workers serve both queues with 3 processes
(prefork -c 3), or one process (gevent -c 200, threads -c 50) for reference.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.testing import Worker, engine_env, private_redis, temp_log  # noqa: E402

CONFIGS = {
    "lanes cpu=prefork:2 + io=gevent:200": ["--lane", "cpu=prefork:2", "--lane", "io=gevent:200"],
    "prefork -c 3 (cpu,io)": ["--pool", "prefork", "-c", "3", "-Q", "cpu,io"],
    "threads -c 50 (cpu,io)": ["--pool", "threads", "-c", "50", "-Q", "cpu,io"],
    "gevent -c 200 (cpu,io)": ["--pool", "gevent", "-c", "200", "-Q", "cpu,io"],
}


def run_one(label: str, worker_args: list[str], n_cpu: int, n_io: int, url: str) -> float:
    prefix = f"lb{uuid.uuid4().hex[:8]}"
    env = engine_env({"ENGINE_BROKER_URL": url, "ENGINE_KEY_PREFIX": prefix}, root=ROOT)
    os.environ.update(ENGINE_BROKER_URL=url, ENGINE_KEY_PREFIX=prefix)
    from bench.lanes_tasks import app, crunch, fetch
    app.close()
    log_path = temp_log("lanes-bench-")
    worker = Worker(["-A", "bench.lanes_tasks", "-l", "warning", "--no-events", "-n", prefix,
                     *worker_args], env=env, log_path=log_path, cwd=ROOT)
    try:
        # ready once the worker (and every lane process) answers a ping
        from engine import control
        deadline = time.monotonic() + 60
        while not control.broadcast(app, "ping", timeout=0.5):
            if not worker.alive() or time.monotonic() > deadline:
                raise SystemExit(f"{label}: worker did not start; see {log_path}")
        start = time.perf_counter()
        # interleaved, as a real mixed load arrives
        results = []
        for i in range(max(n_cpu, n_io)):
            if i < n_cpu:
                results.append(crunch.apply_async(queue="cpu"))
            if i < n_io:
                results.append(fetch.apply_async(queue="io"))
        app.gather(results, timeout=600)
        return time.perf_counter() - start
    finally:
        worker.close(grace=60)
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=200, help="CPU tasks of 20 ms")
    parser.add_argument("--io", type=int, default=2000, help="I/O tasks of 50 ms")
    parser.add_argument("--only", help="run only the configurations whose label contains this")
    args = parser.parse_args()
    with private_redis(prefix="lanes-bench-redis-", aof=False) as server:
        print(f"{args.cpu} CPU tasks (20 ms CPU each) + {args.io} I/O tasks (50 ms wait each), "
              f"{os.cpu_count()} CPUs")
        for label, worker_args in CONFIGS.items():
            if args.only and args.only not in label:
                continue
            elapsed = run_one(label, worker_args, args.cpu, args.io, server.url)
            print(f"  {label:40s} {elapsed:7.2f} s", flush=True)


if __name__ == "__main__":
    main()
