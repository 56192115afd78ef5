"""The cost curve: throughput and worker RSS as the backlog grows (10^3 -> 10^6 queued no-op
tasks) and as concurrency grows.

    .venv/bin/python bench/cost_curve.py [--max-backlog 1000000] [--pool prefork -c 2]
        [--concurrency 1,2,4,8,16] [--sweep-pools prefork,threads] [--window 8]
    bench/.venv-compare/bin/python bench/cost_curve.py --plot bench/results/cost_curve.json

The first form measures (project venv) and writes ``bench/results/cost_curve.json``; the
second draws ``docs/img/cost_backlog.png`` and ``docs/img/cost_concurrency.png`` from it
(matplotlib lives only in the compare venv). Not collected by pytest.

Method. A private redis-server (temp dir, no persistence). For each backlog size B, under a
fresh key prefix: ``delay_many`` enqueues B no-op tasks (``enqueue_bulk_per_s``) with no
worker running, then ``engine run`` starts and runs for ``--window`` seconds after its first
message is taken (or until drained, and then on to the end of the window, so that every size
is sampled for as long). Throughput is the drop of the stream's length (the engine deletes
entries once acked) over the window, from the first drop on; RSS is the sum over the worker
process tree (psutil, every 0.1 s): its peak, and its value at the end of the window. The
bar: RSS at 10^6 within 10% of RSS at 10^3 (prefetch is bounded, so a deeper backlog must cost
the worker nothing). The concurrency sweep drains 20,000 tasks per point the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # the working tree's engine is what is measured
OUT = ROOT / "bench" / "results" / "cost_curve.json"
IMG = ROOT / "docs" / "img"
STALL_S = 15.0   # no progress for this long with messages left: they are reported as stuck


def one_point(url: str, *, backlog: int, pool: str, concurrency: int, window: float,
              drain: bool = False) -> dict:
    """Enqueue ``backlog`` no-ops, run a worker, measure rate and RSS."""
    import redis

    from engine import bench_tasks
    from engine.benchmark import TreeSampler, cleanup, start_worker

    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(url)
    app = bench_tasks.app
    app.close()
    app.conf.from_cli(broker_url=url, result_backend=url, key_prefix=prefix)
    stream = app.broker.keys.queue(app.conf.task_default_queue)
    worker = sampler = None
    try:
        app.broker.ensure_groups([app.conf.task_default_queue])
        t = time.perf_counter()
        for start in range(0, backlog, 1000):
            bench_tasks.noop.delay_many([()] * min(1000, backlog - start))
        enqueue_s = time.perf_counter() - t
        redis_mem = client.info("memory")["used_memory"]
        worker = start_worker(url, prefix, pool, concurrency)
        sampler = TreeSampler(worker.pid, interval=0.1)
        sampler.start()
        # wait for the first drop of XLEN: the worker has started taking messages
        deadline = time.monotonic() + 60
        while client.xlen(stream) >= backlog:
            if not worker.alive() or time.monotonic() > deadline:
                raise RuntimeError("worker did not start:\n" + worker.tail())
            time.sleep(0.005)
        t0, len0 = time.time(), client.xlen(stream)
        end = t0 + window
        t_drained = None
        stuck = 0
        last_len, last_change = len0, time.time()
        while True:
            now = time.time()
            length = client.xlen(stream)
            if length != last_len:
                last_len, last_change = length, now
            elif length and now - last_change > STALL_S:
                # messages the worker holds but never finishes: report them, do not hang
                stuck, t_drained = length, last_change
                break
            if length == 0 and t_drained is None:
                t_drained = now
            if (now >= end and not drain) or (drain and length == 0):
                break
            if not worker.alive():
                raise RuntimeError("worker died:\n" + worker.tail())
            time.sleep(0.1)
        t1 = t_drained or time.time()
        done = len0 - (stuck if t_drained else client.xlen(stream))
        sampler.sample()
        return {"backlog": backlog, "pool": pool, "concurrency": concurrency,
                "enqueue_bulk_per_s": round(backlog / enqueue_s),
                "tasks_per_s": round(done / max(t1 - t0, 1e-6)),
                "measured_tasks": done, "measured_s": round(t1 - t0, 3),
                "drained": t_drained is not None and not stuck, "stuck": stuck,
                "rss_peak_mib": round(sampler.peak / 2**20, 1),
                "rss_end_mib": round(sampler.rss / 2**20, 1),
                "processes": sampler.nprocs,
                "redis_used_memory_mib": round(redis_mem / 2**20, 1)}
    finally:
        if sampler is not None:
            sampler.stop()
        if worker is not None:
            worker.close()
            worker.remove_log()
        cleanup(client, prefix)
        client.close()
        app.close()


def measure(a) -> dict:
    from engine.benchmark import machine
    from engine.testing import private_redis

    sizes = [10 ** k for k in range(3, 7) if 10 ** k <= a.max_backlog]
    conc = [int(x) for x in a.concurrency.split(",") if x]
    pools = [p for p in a.sweep_pools.split(",") if p]
    doc = {"machine": machine(), "command": " ".join(sys.argv), "window_s": a.window,
           "backlog": [], "concurrency": []}
    with private_redis(prefix="engine-cost-", aof=False) as server:
        url = server.url
        for b in sizes:
            r = one_point(url, backlog=b, pool=a.pool, concurrency=a.c, window=a.window)
            doc["backlog"].append(r)
            print(f"backlog {b:>9,}  {r['tasks_per_s']:>8,} tasks/s  RSS peak "
                  f"{r['rss_peak_mib']:6.1f} MiB  end {r['rss_end_mib']:6.1f} MiB  "
                  f"(enqueue {r['enqueue_bulk_per_s']:,}/s, redis {r['redis_used_memory_mib']} MiB)",
                  flush=True)
        for pool in pools:
            for c in conc:
                r = one_point(url, backlog=a.sweep_tasks, pool=pool, concurrency=c,
                              window=0, drain=True)
                doc["concurrency"].append(r)
                print(f"{pool:>8} -c {c:<3} {r['tasks_per_s']:>8,} tasks/s  RSS peak "
                      f"{r['rss_peak_mib']:6.1f} MiB over {r['processes']} process(es)"
                      + (f"  STUCK: {r['stuck']} message(s) never finished" if r["stuck"]
                         else ""), flush=True)
    rows = doc["backlog"]
    if len(rows) >= 2:
        lo, hi = rows[0], rows[-1]
        doc["rss_ratio"] = round(hi["rss_peak_mib"] / lo["rss_peak_mib"], 3)
        print(f"\nRSS peak at {hi['backlog']:,} / at {lo['backlog']:,}: {doc['rss_ratio']:.3f} "
              f"(bar: within 10%, i.e. <= 1.10)")
    return doc


def plot(path: Path, outdir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(path.read_text())
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    rows = doc["backlog"]
    if rows:
        fig, ax1 = plt.subplots(figsize=(7, 4))
        xs = [r["backlog"] for r in rows]
        ax1.plot(xs, [r["tasks_per_s"] for r in rows], "o-", color="tab:blue", label="tasks/s")
        ax1.set_xscale("log")
        ax1.set_xlabel("queued no-op tasks (backlog)")
        ax1.set_ylabel("tasks/s", color="tab:blue")
        ax1.set_ylim(bottom=0)
        ax2 = ax1.twinx()
        ax2.plot(xs, [r["rss_peak_mib"] for r in rows], "s--", color="tab:red",
                 label="worker RSS peak (MiB)")
        ax2.set_ylabel("worker RSS, MiB (sum over the tree)", color="tab:red")
        ax2.set_ylim(bottom=0, top=max(r["rss_peak_mib"] for r in rows) * 1.4)
        r0 = rows[0]
        ax1.set_title(f"engine {r0['pool']} -c {r0['concurrency']}: cost as the backlog grows")
        fig.tight_layout()
        p = outdir / "cost_backlog.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    rows = doc["concurrency"]
    if rows:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for pool in sorted({r["pool"] for r in rows}):
            rs = [r for r in rows if r["pool"] == pool]
            xs = [r["concurrency"] for r in rs]
            a1.plot(xs, [r["tasks_per_s"] for r in rs], "o-", label=pool)
            a2.plot(xs, [r["rss_peak_mib"] for r in rs], "o-", label=pool)
        for ax, label in ((a1, "no-op tasks/s"), (a2, "worker RSS peak, MiB")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency (-c)")
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
            ax.legend()
        fig.suptitle("engine: cost as concurrency grows (20,000 no-op tasks per point)")
        fig.tight_layout()
        p = outdir / "cost_concurrency.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-backlog", type=int, default=10 ** 6)
    p.add_argument("--pool", default="prefork")
    p.add_argument("-c", type=int, default=2)
    p.add_argument("--window", type=float, default=8.0, help="seconds measured per backlog size")
    p.add_argument("--concurrency", default="1,2,4,8,16")
    p.add_argument("--sweep-pools", default="prefork,threads")
    p.add_argument("--sweep-tasks", type=int, default=20000)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--plot", type=Path, default=None, help="draw the PNGs from this JSON only")
    p.add_argument("--img", type=Path, default=IMG)
    a = p.parse_args(argv)
    if a.plot:
        for path in plot(a.plot, a.img):
            print(f"wrote {path}")
        return 0
    doc = measure(a)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
