"""Where a worker's time goes on a bare no-op: CPU per task of each supervisor thread and of
the pool children, user and system, and context switches per task.

    .venv/bin/python bench/where_time_goes.py [-n 250000] [--pool prefork] [-c 2]
                                              [--no-events] [--seconds 6] [--json]

Starts a private redis-server (no persistence), enqueues N ``engine.bench_tasks.noop``,
starts ``engine run`` on them, lets it warm up (children forked, a second of draining),
then reads psutil's per-thread and per-child CPU times over ``--seconds`` of the drain and
divides by the tasks done meanwhile (so start-up and the tail are left out). N must leave
the queue non-empty at the end of the window: the figures are per task of a busy worker.
Not collected by pytest; the figures of docs/performance.md "Where the time goes" come
from here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.testing import Worker, engine_env, private_redis, temp_log  # noqa: E402


def _thread_names(proc: psutil.Process) -> dict[int, str]:
    names = {}
    for thread in proc.threads():
        try:
            names[thread.id] = Path(f"/proc/{proc.pid}/task/{thread.id}/comm").read_text().strip()
        except OSError:
            names[thread.id] = str(thread.id)
    return names


def _switches(procs: list[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        switches = proc.num_ctx_switches()
        total += switches.voluntary + switches.involuntary
    return total


def measure(url: str, *, n: int, pool: str, concurrency: int, events: bool,
            seconds: float) -> dict:
    prefix = f"wt{uuid.uuid4().hex[:8]}"
    env = engine_env({"ENGINE_BROKER_URL": url, "ENGINE_RESULT_BACKEND": url,
                      "ENGINE_KEY_PREFIX": prefix}, root=ROOT)
    os.environ.update(ENGINE_BROKER_URL=url, ENGINE_RESULT_BACKEND=url,
                      ENGINE_KEY_PREFIX=prefix)
    from engine.bench_tasks import app, noop
    app.close()
    app.conf.from_cli(broker_url=url, result_backend=url, key_prefix=prefix)
    app.broker.ensure_groups(["default"])
    for start in range(0, n, 1000):
        noop.delay_many([()] * min(1000, n - start))
    broker = app.broker
    args = ["-A", "engine.bench_tasks:app", "--pool", pool, "-c", str(concurrency),
            "-l", "warning", "-n", f"{prefix}@%h"] + ([] if events else ["--no-events"])
    log_path = temp_log("engine-where-time-goes-")
    worker = Worker(args, env=env, log_path=log_path, cwd=ROOT)
    try:
        supervisor = psutil.Process(worker.pid)

        def waiting() -> int:
            return broker.depth("default")["waiting"]
        deadline = time.monotonic() + 60
        while waiting() > n - 5000 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)   # warm: the children forked and busy, the buffers full
        children = supervisor.children(recursive=True)
        names = _thread_names(supervisor)
        before = waiting()
        threads0 = {t.id: (t.user_time, t.system_time) for t in supervisor.threads()}
        sup0, kids0 = supervisor.cpu_times(), [c.cpu_times() for c in children]
        switches0 = (_switches([supervisor]), _switches(children))
        t0 = time.perf_counter()
        time.sleep(seconds)
        elapsed = time.perf_counter() - t0
        done = before - waiting()
        threads1 = {t.id: (t.user_time, t.system_time) for t in supervisor.threads()}
        sup1, kids1 = supervisor.cpu_times(), [c.cpu_times() for c in children]
        switches1 = (_switches([supervisor]), _switches(children))
        if waiting() == 0:
            raise SystemExit("the queue ran dry inside the window: give a larger -n")

        def per_task(seconds_spent: float) -> float:
            return round(seconds_spent / done * 1e6, 1)
        thread_us = {}
        for tid, (user, system) in threads1.items():
            user0, system0 = threads0.get(tid, (0.0, 0.0))
            spent = (user - user0) + (system - system0)
            if spent > 0.005:
                # Python does not name its threads for the OS: the others by thread id
                label = "main" if tid == supervisor.pid else f"{names.get(tid, '?')}-{tid}"
                thread_us[label] = per_task(spent)
        return {
            "pool": pool, "concurrency": concurrency, "events": events, "tasks": done,
            "tasks_per_s": round(done / elapsed),
            "supervisor_us": per_task((sup1.user - sup0.user) + (sup1.system - sup0.system)),
            "supervisor_user_system_us": [per_task(sup1.user - sup0.user),
                                          per_task(sup1.system - sup0.system)],
            "threads_us": thread_us,
            "children_us": per_task(sum((b.user - a.user) + (b.system - a.system)
                                        for a, b in zip(kids0, kids1))),
            "children_user_system_us": [
                per_task(sum(b.user - a.user for a, b in zip(kids0, kids1))),
                per_task(sum(b.system - a.system for a, b in zip(kids0, kids1)))],
            "switches_per_task": {"supervisor": round((switches1[0] - switches0[0]) / done, 3),
                                  "children": round((switches1[1] - switches0[1]) / done, 3)},
        }
    finally:
        worker.close(grace=30)
        worker.remove_log()
        app.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=250000)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("-c", "--concurrency", type=int, default=2)
    parser.add_argument("--no-events", action="store_true")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with private_redis(prefix="engine-wtg-", aof=False) as server:
        out = measure(server.url, n=args.n, pool=args.pool, concurrency=args.concurrency,
                      events=not args.no_events, seconds=args.seconds)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['pool']} -c {out['concurrency']}, events {'on' if out['events'] else 'off'}: "
          f"{out['tasks_per_s']:,} tasks/s over {out['tasks']:,} tasks")
    print("  (the threads besides main are the writer, the fetch thread of each lane, the "
          "heartbeat and the control thread)")
    print(f"  supervisor {out['supervisor_us']} µs/task (user {out['supervisor_user_system_us'][0]}"
          f", system {out['supervisor_user_system_us'][1]})")
    for name, us in sorted(out["threads_us"].items(), key=lambda kv: -kv[1]):
        print(f"    thread {name:<16} {us} µs/task")
    print(f"  children   {out['children_us']} µs/task (user {out['children_user_system_us'][0]}"
          f", system {out['children_user_system_us'][1]})")
    print(f"  context switches per task: supervisor {out['switches_per_task']['supervisor']}, "
          f"children {out['switches_per_task']['children']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
