"""``engine bench``: measure a worker on this machine in one command.

A run, on the embedded Redis unless ``--broker`` is given, under a key prefix of its own
(``bench-<hex>``, handed to every process through ``ENGINE_KEY_PREFIX``) so that it never sees
or touches a user's queues; every key under that prefix is deleted at the end.

1. Enqueue ``n`` tasks of ``engine.bench_tasks`` with no worker running, so the producer is
   timed alone: the first ``min(2000, n/2)`` with one ``delay()`` per call (``enqueue_per_s``),
   the rest with ``delay_many`` in chunks of 1,000 (``enqueue_bulk_per_s``).
2. Start ``engine run -A engine.bench_tasks`` as a subprocess (its own session) and let it
   drain that backlog. Completions are read from the worker's own event stream (the
   ``task-succeeded`` events it publishes anyway, in batches, each with the time it
   happened), so measuring adds nothing to the worker's work. ``tasks_per_s`` is
   n / (last completion - first message taken, its ``task-received`` event);
   ``tasks_per_s_from_start`` counts from the worker's spawn. A progress bar (rich, on
   stderr, only on a terminal) follows the events.
3. Latency: with the worker warm and idle, send up to 500 more tasks one ``delay()`` at a
   time, paced at about half the measured throughput (at most 1,000/s), and take p50/p90/p99
   of completion time minus send time (same machine, same clock).

Worker CPU (user+system seconds of the process tree from its ``worker-online`` event (every
supervisor's, with ``--processes N``) to the last completion, so start-up is left out; as a
share of one core and per task, split into the supervisors' and their pool children's) and
peak RSS (sum over the tree) come from psutil, sampled every 0.1 s. Redis CPU over the same span
comes from INFO when the server is local.

The pieces (``start_worker``, ``TreeSampler``, ``EventCollector``, ``cleanup``) are reused by
the scripts under ``bench/``; the worker process itself is an ``engine.testing.Worker``.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import sys
import time
import uuid
from typing import Any

import redis

from engine import console
from engine.benchprobes import EventCollector, TreeSampler   # noqa: F401  (bench/ imports them here)
from engine.monitor.state import FleetState
from engine.testing import Worker, engine_env, temp_log

DEFAULT_N = {"noop": 20000, "sleep": 2000, "asleep": 2000, "cpu": 200, "payload": 5000,
             "noop-limited": 20000, "noop-levels": 20000}
#: the priority levels ``--kind noop-levels`` spreads its no-ops over, in turn
LEVELS = (0, 4, 9)
SLEEP_S = 0.05
CPU_MS = 20.0
SINGLE = 2000          # delay() calls timed before switching to delay_many
CHUNK = 1000           # delay_many chunk
LATENCY_SAMPLES = 500
START_TIMEOUT = 60.0
#: seconds between two depth reads when events are off (``--events off``)
DEPTH_POLL = 0.005
STALL_TIMEOUT = 120.0  # seconds without a completion before the run is abandoned

# -- worker process ---------------------------------------------------------------------
def start_worker(url: str, prefix: str, pool: str, concurrency: int | None, *,
                 extra: list[str] | None = None, app: str = "engine.bench_tasks:app",
                 env: dict[str, str] | None = None) -> Worker:
    """``engine run -A engine.bench_tasks`` (warnings only, a name of the run's own) on
    ``url`` under ``prefix``, logging to a temp file; the caller closes it and removes the
    log."""
    args = ["-A", app, "--pool", pool, "-l", "warning", "-n", f"{prefix}-{os.getpid()}@%h"]
    if concurrency:
        args += ["-c", str(concurrency)]
    args += list(extra or [])
    # the app is named on the command line and its results go where its broker is
    worker_env = engine_env({"ENGINE_BROKER_URL": url, "ENGINE_RESULT_BACKEND": url,
                             "ENGINE_KEY_PREFIX": prefix, "PYTHONUNBUFFERED": "1"},
                            drop=("ENGINE_APP",))
    worker_env.update(env or {})
    return Worker(args, env=worker_env, log_path=temp_log("engine-bench-"))


def cleanup(client: redis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix:`` (SCAN + UNLINK); returns how many."""
    removed = 0
    batch = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += client.unlink(*batch)
            batch = []
    if batch:
        removed += client.unlink(*batch)
    return removed


def new_prefix() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


def resolve_broker(url: str | None) -> tuple[str, bool]:
    """The URL to use and whether it is the embedded Redis."""
    url = url or os.environ.get("ENGINE_BROKER_URL")
    if url:
        return url, False
    from engine import embedded
    return embedded.ensure_running(), True


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "model": model, "python": platform.python_version(),
            "platform": platform.platform(), "load_avg": [round(x, 2) for x in os.getloadavg()]}


def _redis_cpu(client: redis.Redis) -> float | None:
    try:
        info = client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    except Exception:
        return None


# -- the run ----------------------------------------------------------------------------
def task_args(kind: str, payload_bytes: int, cpu_iters: int | None) -> tuple:
    if kind in ("noop", "noop-limited", "noop-levels"):
        return ()
    simple = {"sleep": (SLEEP_S,), "asleep": (SLEEP_S,), "cpu": (cpu_iters,)}
    if kind in simple:
        return simple[kind]
    if kind == "payload":
        return ("x" * payload_bytes,)
    raise ValueError(f"unknown kind {kind!r}")


class _Progress:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                                TimeElapsedColumn(), console=Console(stderr=True), transient=True)

    def __enter__(self) -> "_Progress":
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar:
            self.bar.__exit__(*exc)

    def add(self, description: str, total: int) -> Any:
        return self.bar.add_task(description, total=total, rate="") if self.bar else None

    def update(self, task: Any, completed: int, rate: str = "") -> None:
        if self.bar and task is not None:
            self.bar.update(task, completed=completed, rate=rate)


def run(*, pool: str = "prefork", concurrency: int | None = None, n: int | None = None,
        kind: str = "noop", payload_bytes: int = 10240, broker: str | None = None,
        progress: bool = True, latency_samples: int = LATENCY_SAMPLES,
        worker_extra: list[str] | None = None, tracing: bool = False,
        processes: int = 1, events: bool = True) -> dict[str, Any]:
    """One benchmark run; returns the figures as a dict (what ``--json`` prints).
    ``tracing``: ENGINE_TRACING=1 in this process and the worker, each with an SDK tracer
    provider whose exporter drops the spans (``bench_tasks.install_tracing``), and every
    task sent with its own ``delay()`` so that each body carries a traceparent.
    ``processes``: ``engine run --processes N`` (N supervisors under one parent).
    ``events``: False runs the worker with ``--no-events``; completion is then read from
    the queue's depth (polled every DEPTH_POLL s) and no latency is measured. With events on,
    every event is read here and folded into the monitor's own model
    (``engine.monitor.state.FleetState``), as ``engine monitor`` would: events read by a
    monitor."""
    from engine import bench_tasks
    from engine import tracing as tracing_mod

    n = n or DEFAULT_N[kind]
    url, embedded = resolve_broker(broker)
    prefix = new_prefix()
    app = bench_tasks.app
    app.close()
    app.conf.from_cli(broker_url=url, result_backend=url, key_prefix=prefix)
    cpu_iters = bench_tasks.calibrate(CPU_MS) if kind == "cpu" else None
    args = task_args(kind, payload_bytes, cpu_iters)
    fn = getattr(bench_tasks, {"noop-limited": "noop_limited", "noop-levels": "noop"}.get(
        kind, kind))
    client = redis.Redis.from_url(url)
    queue = app.conf.task_default_queue
    worker: Worker | None = None
    sampler: TreeSampler | None = None
    collector: EventCollector | None = None
    out: dict[str, Any] = {
        "pool": pool, "concurrency": concurrency or app.conf.worker_concurrency, "kind": kind,
        "processes": processes, "events": events, "tasks": n, "broker": "embedded" if embedded else console.redact(url), "key_prefix": prefix}
    if kind == "payload":
        out["payload_bytes"] = payload_bytes
    if kind in ("sleep", "asleep"):
        out["sleep_s"] = SLEEP_S
    if kind == "cpu":
        out["cpu_iters"] = cpu_iters
        out["cpu_ms"] = CPU_MS
    traced_before = tracing_mod.ENABLED
    worker_env: dict[str, str] = {}
    if tracing:
        _trace_here(bench_tasks)
        tracing_mod.ENABLED = True
        worker_env = {"ENGINE_TRACING": "1", bench_tasks.TRACING_ENV: "1"}
        out["tracing"] = {}
    try:
        app.broker.ensure_groups([queue])   # group at 0: the backlog is read from its start
        # 1. enqueue, timed alone
        single = min(SINGLE, max(1, n // 2)) if n > 1 else 1
        if kind == "noop-levels":   # one call per task, each level in turn
            levels = itertools.cycle(LEVELS)
            single = n

            def delay(*call: Any) -> Any:
                return fn.apply_async(call, priority=next(levels))
        else:
            delay = fn.delay
            if tracing:
                single = n   # delay_many opens no span: every task by delay()
        t0 = time.perf_counter()
        for _ in range(single):
            delay(*args)
        t1 = time.perf_counter()
        rest = n - single
        sent = 0
        while sent < rest:
            k = min(CHUNK, rest - sent)
            fn.delay_many([args] * k)
            sent += k
        t2 = time.perf_counter()
        out["enqueue_per_s"] = round(single / (t1 - t0), 1)
        out["enqueue_bulk_per_s"] = round(rest / (t2 - t1), 1) if rest else None
        out["enqueue_mode"] = f"delay x{single}" + (f" + delay_many x{rest}" if rest else "")

        # 2. the worker drains the backlog
        collector = EventCollector(redis.Redis.from_url(url), app.broker.keys.events,
                                   monitor=FleetState() if events else None)
        collector.start()
        worker = start_worker(url, prefix, pool, concurrency, extra=list(worker_extra or [])
                              + (["--processes", str(processes)] if processes > 1 else [])
                              + ([] if events else ["--no-events"]),
                              env=worker_env)
        sampler = TreeSampler(worker.pid, fleet=processes > 1)
        sampler.start()
        redis_cpu0 = _redis_cpu(client)
        with _Progress(progress) as bar:
            task = bar.add(f"{kind} x{n} on {pool}", n)
            last_count, last_change = 0, time.monotonic()
            # each supervisor's CPU counts from its own worker-online (its start-up left
            # out); the parent's from the first, the pool children's (forked later) from 0
            baseline: dict[int, float] = {}
            online_at, onlines = None, 0
            depth = _DepthWatch(app.broker, queue, n) if not events else None
            while True:
                if depth is not None:       # no events: from the first message done
                    count = depth.count()
                    if count and online_at is None:
                        online_at = depth.first_at
                        baseline = {pid: sampler.cpu_of(pid)
                                    for pid in sampler.supervisors | {worker.pid}}
                else:
                    for pid in collector.online_pids[onlines:]:
                        if online_at is None:
                            online_at = time.time()
                            baseline[worker.pid] = sampler.cpu_of(worker.pid)
                        baseline.setdefault(pid, sampler.cpu_of(pid))
                        onlines += 1
                    count = len(collector.done)
                if count >= n:
                    break
                now = time.monotonic()
                if count != last_count:
                    last_count, last_change = count, now
                if collector.error is not None:
                    raise RuntimeError(f"reading events failed: {collector.error}")
                if not worker.alive():
                    raise RuntimeError(f"the worker exited early (code {worker.proc.returncode}):\n"
                                       + worker.tail())
                if now - last_change > (STALL_TIMEOUT if online_at is not None
                                        else max(STALL_TIMEOUT, START_TIMEOUT)):
                    raise RuntimeError(f"no task finished for {STALL_TIMEOUT:.0f} s "
                                       f"({count}/{n} done); worker log:\n" + worker.tail())
                elapsed = time.time() - worker.started_at
                bar.update(task, count, f"{count / elapsed:,.0f}/s" if elapsed > 0 else "")
                time.sleep(0.05 if depth is None else DEPTH_POLL)
            bar.update(task, n)
        drained_at = time.time()
        cpu_run, *split = sampler.cpu_since(baseline)   # start-up (imports, forks) left out
        run_from = online_at or worker.started_at
        redis_cpu1 = _redis_cpu(client)
        if depth is not None:
            first, last = depth.first_at, depth.last_at
        else:
            times = sorted(collector.done.values())
            # from the first message the worker took: with slots that finish together (a
            # CPU-bound task on greenlets) first-to-last completion would flatter the pool
            first, last = collector.first_received or times[0], times[-1]
        out["tasks_per_s"] = round(n / (last - first), 1) if last > first else None
        out["tasks_per_s_from_start"] = round(n / (last - worker.started_at), 1)
        out["duration_s"] = round(last - first, 4)
        if events:
            out["failed"] = collector.failed
        else:   # a failure is acked like a success: only what was dead-lettered shows
            out["failed"], out["dead_lettered"] = None, depth.dead
        out["worker"] = {
            "pid": worker.pid, "processes": sampler.nprocs,
            "cpu_s": round(cpu_run, 3),
            "cpu_percent": round(100.0 * cpu_run / max(drained_at - run_from, 1e-9), 1),
            "cpu_us_per_task": round(1e6 * cpu_run / n, 1),
            "supervisor_cpu_us_per_task": round(1e6 * split[0] / n, 1),
            "child_cpu_us_per_task": round(1e6 * split[1] / n, 1),
            "rss_peak_mib": round(sampler.peak / 2**20, 1),
        }
        if redis_cpu0 is not None and redis_cpu1 is not None:
            out["redis_cpu_us_per_task"] = round(1e6 * (redis_cpu1 - redis_cpu0) / n, 1)

        if events:
            out["monitor_events"] = collector.monitor_events
            # 3. latency: paced single sends on the idle, warm worker
            out["latency_ms"] = _latency(delay, args, out["tasks_per_s"]
                                         or out["tasks_per_s_from_start"],
                                         min(latency_samples, n), collector, worker)
        else:
            out["latency_ms"] = None     # it needs the completion events
        if tracing:   # proof that the worker's runs were recorded by an SDK provider
            state = bench_tasks.tracing_state.delay().get(timeout=STALL_TIMEOUT)
            if not state.get("recording"):
                raise RuntimeError(f"the worker's runs were not traced: {state}")
            from opentelemetry import trace
            trace.get_tracer_provider().force_flush()
            out["tracing"] = {"worker": state, "producer_spans": bench_tasks.exported[0]}
        out["worker"]["rss_end_mib"] = round(sampler.rss / 2**20, 1)
        out["worker"]["rss_peak_mib"] = round(max(sampler.peak, sampler.rss) / 2**20, 1)
        out["machine"] = machine()
        return out
    finally:
        tracing_mod.ENABLED = traced_before
        if sampler is not None:
            sampler.stop()
        if worker is not None:
            worker.close()
        if collector is not None:
            collector.stop()
            collector.join(2)
        try:
            cleanup(client, prefix)
        finally:
            client.close()
            app.close()
        if worker is not None:
            worker.remove_log()


def _latency(delay: Any, args: tuple, rate: float, most: int, collector: EventCollector,
             worker: Worker) -> dict[str, Any]:
    """Enqueue-to-completion times of single sends paced at twice the drain's pace (at
    most ``most`` of them, five seconds' worth), from the collector's completion events."""
    interval = max(0.001, 2.0 / rate)
    samples = max(1, min(most, int(5.0 / interval)))
    sent_at: dict[str, float] = {}
    next_at = time.perf_counter()
    for _ in range(samples):
        now = time.perf_counter()
        if next_at > now:
            time.sleep(next_at - now)
        next_at += interval
        t = time.time()
        sent_at[delay(*args).id] = t
    deadline = time.monotonic() + STALL_TIMEOUT
    while not all(i in collector.done for i in sent_at):
        if time.monotonic() > deadline or not worker.alive():
            raise RuntimeError("latency tasks did not finish; worker log:\n" + worker.tail())
        time.sleep(0.02)
    lat = sorted(1000.0 * (collector.done[i] - t) for i, t in sent_at.items())
    return {"p50": round(percentile(lat, 50), 3), "p90": round(percentile(lat, 90), 3),
            "p99": round(percentile(lat, 99), 3), "max": round(lat[-1], 3),
            "samples": len(lat), "send_interval_ms": round(1000 * interval, 3)}


class _DepthWatch:
    """Completion without events: the queue's waiting and unacknowledged messages, read
    every DEPTH_POLL s (so each end of the span is at most that late)."""

    def __init__(self, broker: Any, queue: str, n: int) -> None:
        self.broker, self.queue, self.n = broker, queue, n
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.dead = 0

    def count(self) -> int:
        depth = self.broker.depth(self.queue)
        now = time.time()
        done = self.n - depth["waiting"] - depth["unacked"]
        if done > 0 and self.first_at is None:
            self.first_at = now
        if done >= self.n:
            self.last_at = now
            self.dead = depth["dead"]
        return done


def _trace_here(bench_tasks: Any) -> None:
    """The bench process's own SDK provider (once per process)."""
    global _traced
    if _traced:
        return
    try:
        bench_tasks.install_tracing()
    except ImportError as exc:
        raise RuntimeError(f"--tracing needs the OpenTelemetry SDK (pip install "
                           f"opentelemetry-sdk): {exc}") from None
    _traced = True


_traced = False


def command(args) -> int:
    """Entry point of ``engine bench`` (see engine.cli)."""
    try:
        result = run(pool=args.pool, concurrency=args.concurrency, n=args.tasks, kind=args.kind,
                     payload_bytes=args.payload_bytes, broker=args.broker,
                     progress=not args.json, processes=args.processes,
                     worker_extra=(None if args.metrics_port is None
                                   else ["--metrics-port", str(args.metrics_port)]),
                     tracing=bool(getattr(args, "tracing", False)),
                     events=getattr(args, "events", "on") == "on")
    except RuntimeError as exc:
        print(f"engine bench: error: {exc}", file=sys.stderr)
        return 1
    except redis.ConnectionError as exc:
        print(f"engine bench: error: cannot reach Redis: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(console.format_bench(result))
    return 0
