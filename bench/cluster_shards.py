"""Throughput with three queues on 1, 2 or 3 shards of a Redis Cluster, against one Redis.

    .venv/bin/python -m bench.cluster_shards [--tasks 6000] [--rounds 2] [--pool prefork -c 2]

Starts a single redis-server and a 3-master cluster (no replicas) from the project's
redis-server on loopback ports in a temp dir. Each run queues ``--tasks`` ``noop`` tasks
spread evenly over three queues (names picked so they fall on 1, 2 or 3 masters), then
starts one worker serving the three and times the drain from its ready line until every
stream is empty (acked entries are deleted). Redis CPU per task is the user+system seconds
of every redis-server process over the drain (psutil), divided by the tasks. The
configurations are interleaved round by round (the machine is shared: compare ratios).
"""

from __future__ import annotations

import argparse
import os
import statistics
import uuid
import tempfile
import time
from pathlib import Path

import psutil

from engine import embedded
from engine.benchmark import cleanup, new_prefix, start_worker
from engine.cluster import slot_of
from engine.message import encode_message
from engine.testing import free_port, wait_for
from tests.integration.production_servers import ClusterTopology, ServerProcess, plain_args

RANGES = ((0, 5460), (5461, 10922), (10923, 16383))


def names_on(shards: int) -> list[str]:
    """Three queue names on ``shards`` masters (the first ones of each range)."""
    wanted = [RANGES[i % shards] for i in range(3)]
    picked: list[str] = []
    n = 0
    for low, high in wanted:
        while True:
            n += 1
            name = f"q{n}"
            if low <= slot_of(f"{{{name}}}") <= high and name not in picked:
                picked.append(name)
                break
    return picked


def drain(url: str, queues: list[str], tasks: int, pool: str, concurrency: int,
          pids: list[int]) -> tuple[float, list[float]]:
    """Seconds to drain ``tasks`` over ``queues``, and each redis-server's CPU seconds per
    task."""
    from engine.bench_tasks import app
    prefix = new_prefix()
    os.environ["ENGINE_BROKER_URL"] = url
    os.environ["ENGINE_KEY_PREFIX"] = prefix
    app.close()   # connections remade on this URL and prefix
    app.broker.ensure_groups(queues)
    items = [(queues[i % 3], encode_message(uuid.uuid4().hex, "engine.bench_tasks.noop",
                                            [], {}), None) for i in range(tasks)]
    app.broker.enqueue_many(items)
    procs = [psutil.Process(pid) for pid in pids]
    worker = start_worker(url, prefix, pool, concurrency, extra=["-Q", ",".join(queues), "-l", "info"])
    try:
        worker.wait_ready(120)
        cpu0 = [sum(p.cpu_times()[:2]) for p in procs]
        began = time.monotonic()
        streams = [app.broker.keys.queue(q) for q in queues]
        wait_for(lambda: sum(app.client.xlen(s) for s in streams) == 0, 600, interval=0.01,
                 message="the backlog to drain")
        took = time.monotonic() - began
        cpu = [sum(p.cpu_times()[:2]) - c for p, c in zip(procs, cpu0)]
    finally:
        worker.close()
        worker.remove_log()
    cleanup(app.client, prefix)
    app.close()
    return took, [c / tasks for c in cpu]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("-c", "--concurrency", type=int, default=2)
    args = parser.parse_args()
    binary = embedded.redis_server_binary()
    root = Path(tempfile.mkdtemp(prefix="engine-cluster-bench-"))
    port = free_port()
    single = ServerProcess(binary, root / "single", port, plain_args(port)).start()
    cluster = ClusterTopology(binary, root / "cluster", replicas=0).start()
    try:
        cluster_pids = [n.proc.pid for n in cluster.nodes]
        configs = [("one Redis", f"redis://127.0.0.1:{port}/0", names_on(3), [single.proc.pid])]
        configs += [(f"cluster, {k} shard(s)", cluster.url, names_on(k), cluster_pids)
                    for k in (1, 2, 3)]
        found: dict[str, list[tuple[float, list[float]]]] = {name: [] for name, *_ in configs}
        for _ in range(args.rounds):
            for name, url, queues, pids in configs:
                found[name].append(drain(url, queues, args.tasks, args.pool,
                                         args.concurrency, pids))
        base = statistics.median(args.tasks / t for t, _ in found["one Redis"])
        print(f"{args.tasks} noop tasks over 3 queues, {args.pool} -c {args.concurrency}, "
              f"median of {args.rounds} interleaved rounds")
        print(f"{'configuration':22} {'tasks/s':>8} {'vs one':>7}  redis CPU µs/task "
              f"(all, then per server)")
        for name, *_ in configs:
            rate = statistics.median(args.tasks / t for t, _ in found[name])
            per = [statistics.median(c[i] for _, c in found[name]) * 1e6
                   for i in range(len(found[name][0][1]))]
            print(f"{name:22} {rate:8.0f} {rate / base:7.2f}  {sum(per):5.1f}  "
                  + " / ".join(f"{c:.1f}" for c in per))
    finally:
        cluster.stop()
        single.stop()


if __name__ == "__main__":
    main()
