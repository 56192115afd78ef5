"""Shared pieces of the comparison drivers (stdlib + redis + psutil only).

Imported by every driver (Celery, Dramatiq, Huey in the compare venv; the engine driver in the
project venv) and by every bench tasks module, so that the task bodies, the completion counter,
the worker process handling and the JSON line are the same for all systems.

Completion counting (the same for every system, the engine included): each throughput task ends
with `done()`, one Redis INCR on `BENCH_KEY` (on a bare connection: see `_incr`). The task whose INCR returns 1 stores the first
completion time, the one whose INCR returns `BENCH_N` stores the last completion time and pushes
to `BENCH_KEY:fin`, which the driver waits on with BLPOP (no polling). Times come from the
workers' clocks; drivers and workers run on the same machine.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))

#: ``stored`` is the no-op with its (None) result stored by the worker, as a caller that
#: wants results would have it; every other throughput workload ignores results
#: ``asleep`` (issue 19) is ``await asyncio.sleep(SLEEP_S)`` in an ``async def`` body, for the
#: asyncio pools and the asyncio-native queues, 10,000 of them at 1,000 at once
WORKLOADS = ("noop", "stored", "latency", "sleep", "asleep", "cpu", "payload", "chord",
             "chain")
DEFAULT_N = {"noop": 20000, "stored": 20000, "latency": 500, "sleep": 2000, "asleep": 10000,
             "cpu": 200, "payload": 5000, "chord": 1000, "chain": 100}
#: canvas workloads (``chord``: n no-op members and a callback that counts their results;
#: ``chain``: n steps, each adding one): timed from the send to the final result, on a
#: worker that is up and warmed, CANVAS_ROUNDS times a run (the median is reported)
CANVAS = ("chord", "chain")
CANVAS_ROUNDS = 5
SLEEP_S = 0.05
PAYLOAD_BYTES = 10 * 1024
CPU_MS = 20.0
MAX_CONNECTIONS = 4096

# --------------------------------------------------------------------------- task side

_client = None
_client_pid = None
KEY = os.environ.get("BENCH_KEY", "bench:done")
N = int(os.environ.get("BENCH_N", "0") or 0)


def client():
    """A redis-py client for the current process (rebuilt after fork)."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        import redis

        _client = redis.Redis(connection_pool=pool(os.environ["BENCH_REDIS"]))
        _client_pid = os.getpid()
    return _client


def pool(url):
    """A redis-py pool big enough for 1,000 greenlets (redis-py 8 defaults to 100)."""
    import redis

    return redis.ConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS)


_started_pid = None


def started():
    """First task start in this process: SET NX of the start time (one round trip a process).

    With many slots (threads, greenlets) the first completion comes late, so CPU-bound
    workloads are timed from the first start (`start_to_last_s`), not the first completion."""
    global _started_pid
    if _started_pid != os.getpid():
        _started_pid = os.getpid()
        client().set(KEY + ":start", repr(time.time()), nx=True)


_idle = []
_idle_pid = None


def _incr():
    """INCR on a bare redis-py connection (packed and read by redis-py, none of the client's
    per-command machinery, which costs about 70 µs of Python per call with redis-py 8 on this
    machine): the counter is the instrument, and an instrument should weigh as little as it
    can on what it measures. The same code counts for every system. Connections come from a
    free list (safe with threads and greenlets, dropped after a fork)."""
    global _idle, _idle_pid
    if _idle_pid != os.getpid():
        _idle, _idle_pid = [], os.getpid()
    try:
        conn = _idle.pop()
    except IndexError:
        p = client().connection_pool
        conn = p.connection_class(**p.connection_kwargs)
    try:
        conn.send_packed_command(conn.pack_command("INCR", KEY), check_health=False)
        value = conn.read_response()
    except Exception:
        conn.disconnect()
        raise
    _idle.append(conn)
    return value


def done():
    """Count one completion; mark the first and the last (see module docstring)."""
    c = _incr()
    if c == 1 or c == N:
        r = client()
        if c == 1:
            r.set(KEY + ":first", repr(time.time()))
        if c == N:
            p = r.pipeline(transaction=False)
            p.set(KEY + ":last", repr(time.time()))
            p.rpush(KEY + ":fin", b"1")
            p.execute()


_aidle = {}     # event loop -> free (reader, writer) pairs


async def adone():
    """``done()`` for ``async def`` bodies that must not block their loop (the ``asleep``
    workload, 1,000 coroutines at once: a blocking INCR in each would make the loop run them
    one Redis round trip after the other, and that would be all the workload measured). The
    same single INCR, on a raw asyncio stream to Redis (the RESP bytes written by hand, the
    integer reply read back), from a free list per event loop, so coroutines count side by
    side; the first and the last completion are stored as ``done()`` stores them. The same
    code for every system."""
    import asyncio

    loop = asyncio.get_running_loop()
    free = _aidle.setdefault(loop, [])
    try:
        reader, writer = free.pop()
    except IndexError:
        from urllib.parse import urlparse

        u = urlparse(os.environ["BENCH_REDIS"])
        reader, writer = await asyncio.open_connection(u.hostname, u.port or 6379)
        db = (u.path or "/0").strip("/") or "0"
        if db != "0":
            writer.write(b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%s\r\n" % (len(db), db.encode()))
            await reader.readline()
    key = KEY.encode()
    writer.write(b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(key), key))
    line = await reader.readline()
    if not line.startswith(b":"):
        writer.close()
        raise RuntimeError(f"INCR answered {line!r}")
    free.append((reader, writer))
    c = int(line[1:])
    if c == 1 or c == N:
        await asyncio.to_thread(_mark, c)


def _mark(c):
    r = client()
    if c == 1:
        r.set(KEY + ":first", repr(time.time()))
    if c == N:
        p = r.pipeline(transaction=False)
        p.set(KEY + ":last", repr(time.time()))
        p.rpush(KEY + ":fin", b"1")
        p.execute()


def burn(iters):
    """Pure-Python CPU work; `iters` is calibrated so that one call takes about CPU_MS."""
    x = 0
    for i in range(iters):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x


def calibrate_cpu(target_ms=CPU_MS):
    """Iterations of burn() taking about target_ms on this machine (best of a few tries)."""
    iters = 20000
    best = None
    for _ in range(5):
        t = time.perf_counter()
        burn(iters)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return max(1000, int(iters * (target_ms / 1000.0) / best))


def payload(nbytes=PAYLOAD_BYTES):
    # a str (not bytes) so that every system's default serializer (Celery's JSON too) carries it
    return "x" * nbytes


# --------------------------------------------------------------------------- driver side


def parse_args(system, pools, argv=None):
    p = argparse.ArgumentParser(description=f"{system} benchmark driver (one JSON line)")
    p.add_argument("--redis", required=True, help="redis://host:port/db of a dedicated Redis")
    p.add_argument("--workload", required=True, choices=WORKLOADS)
    p.add_argument("--n", type=int, default=None, help="tasks (default per workload, issue 8)")
    p.add_argument("--pool", default=pools[0], choices=pools)
    p.add_argument("-c", "--concurrency", type=int, default=2)
    p.add_argument("--procs", type=int, default=1, help="worker processes (Dramatiq)")
    p.add_argument("--cpu-iters", type=int, default=None, help="burn() iterations (~20 ms)")
    p.add_argument("--payload-bytes", type=int, default=PAYLOAD_BYTES)
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many s")
    p.add_argument("--flush", action="store_true",
                   help="FLUSHDB first (the harness's private Redis); without it the db must be empty")
    p.add_argument("--samples", action="store_true", help="include raw latencies in the JSON")
    p.add_argument("--pidfile", default=None, help="write worker process-group ids here")
    p.add_argument("--json", action="store_true", help="print one JSON line (always on)")
    p.add_argument("--log-dir", default=None, help="keep worker logs here")
    a = p.parse_args(argv)
    if a.n is None:
        a.n = DEFAULT_N[a.workload]
    if a.workload == "cpu" and a.cpu_iters is None:
        a.cpu_iters = calibrate_cpu()
    return a


def task_env(args, key):
    """Environment read by the bench tasks modules (the worker's and the driver's)."""
    n = args.n if args.workload != "latency" else 0
    return {"BENCH_REDIS": args.redis, "BENCH_KEY": key, "BENCH_N": str(n)}


def prepare_redis(args):
    import redis

    r = redis.Redis.from_url(args.redis)
    if args.flush:
        r.flushdb()
    elif r.dbsize():
        raise SystemExit(f"refusing to run on a non-empty Redis db ({args.redis}); "
                         "give a dedicated db or --flush")
    return r


class RssSampler(threading.Thread):
    """Peak RSS (sum over the worker process tree) and CPU seconds of that tree."""

    def __init__(self, pids, interval=0.2):
        super().__init__(daemon=True)
        self.roots = list(pids)
        self.interval = interval
        self.peak = 0
        self.cpu = {}  # pid -> last seen user+system
        self.nprocs = 0
        self._stop = threading.Event()

    def sample(self):
        import psutil

        total = 0
        seen = 0
        for root in self.roots:
            try:
                proc = psutil.Process(root)
                procs = [proc] + proc.children(recursive=True)
            except psutil.Error:
                continue
            for pr in procs:
                try:
                    with pr.oneshot():
                        total += pr.memory_info().rss
                        ct = pr.cpu_times()
                        self.cpu[pr.pid] = ct.user + ct.system
                    seen += 1
                except psutil.Error:
                    pass
        self.peak = max(self.peak, total)
        self.nprocs = max(self.nprocs, seen)

    def run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self.sample()

    @property
    def cpu_s(self):
        return sum(self.cpu.values())


class Workers:
    """Worker subprocesses, each in its own session/process group, killed by group."""

    def __init__(self, args, tag):
        self.args = args
        self.procs = []
        self.logs = []
        self.tag = tag
        self.log_dir = args.log_dir or tempfile.mkdtemp(prefix="bench-logs-")

    def start(self, argv, env_extra, cwd=HERE):
        env = dict(os.environ)
        env.update(env_extra)
        env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")  # after env_extra
        env.setdefault("PYTHONUNBUFFERED", "1")
        log_path = os.path.join(self.log_dir, f"{self.tag}-{len(self.procs)}.log")
        log = open(log_path, "wb")
        self.logs.append(log_path)
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(p)
        if self.args.pidfile:
            with open(self.args.pidfile, "a") as f:
                f.write(f"{p.pid}\n")
        return p

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def check_alive(self):
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"worker exited early with code {p.returncode}; log tail:\n"
                                   + self.tail())

    def tail(self, nbytes=3000):
        out = []
        for path in self.logs:
            try:
                with open(path, "rb") as f:
                    f.seek(0, 2)
                    f.seek(max(0, f.tell() - nbytes))
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "\n".join(out)

    def stop(self, grace=10.0):
        """SIGTERM each worker's process group, then SIGKILL what is left of it."""
        for p in self.procs:
            _killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            # the leader may be gone while children of its group remain: kill the group anyway
            _killpg(p.pid, signal.SIGKILL)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        _wait_group_gone([p.pid for p in self.procs])


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group_gone(pgids, timeout=5.0):
    try:
        import psutil
    except ImportError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = []
        for pr in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(pr.pid) in pgids and pr.status() != psutil.STATUS_ZOMBIE:
                    left.append(pr.pid)
            except (ProcessLookupError, psutil.Error, OSError):
                pass
        if not left:
            return
        for pgid in pgids:
            _killpg(pgid, signal.SIGKILL)
        time.sleep(0.1)


def percentiles(values):
    if not values:
        return {}
    s = sorted(values)

    def pct(q):
        k = (len(s) - 1) * q
        lo = int(k)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)

    return {"p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99),
            "mean_ms": sum(s) / len(s), "min_ms": s[0], "max_ms": s[-1]}


def task_args(args):
    """Positional arguments of one task of the workload."""
    w = args.workload
    if w in ("sleep", "asleep"):
        return (SLEEP_S,)
    if w == "cpu":
        return (args.cpu_iters,)
    if w == "payload":
        return (payload(args.payload_bytes),)
    return ()


class Driver:
    """What a system's driver supplies. Subclasses implement the four methods."""

    system = "?"
    pools = ("default",)

    def worker_commands(self, args):
        """[(argv, env_extra)]: the worker processes to start."""
        raise NotImplementedError

    def setup(self, args):
        """Import the tasks module (env already set) and return nothing."""

    def enqueue(self, args, count):
        """Enqueue `count` tasks of the workload; may return extra result fields."""
        raise NotImplementedError

    def roundtrip(self, x, timeout):
        """One delay(x).get() of the echo task; returns the value."""
        raise NotImplementedError

    def canvas(self, workload, n, timeout):
        """Send one chord of n members (or chain of n steps) and wait for its result; returns
        the value (n: the callback counts n results, the chain adds one n times)."""
        raise NotImplementedError

    def versions(self):
        return {}

    def concurrency_label(self, args):
        return args.concurrency


def run(driver, argv=None):
    args = parse_args(driver.system, driver.pools, argv)
    out = {"system": driver.system, "pool": args.pool,
           "concurrency": driver.concurrency_label(args), "workload": args.workload,
           "n": args.n}
    key = "bench:done:" + uuid.uuid4().hex[:12]
    os.environ.update(task_env(args, key))
    # the tasks modules read BENCH_* at import time
    global KEY, N
    KEY, N = key, int(os.environ["BENCH_N"])
    workers = Workers(args, f"{driver.system}-{args.workload}-{args.pool}")
    sampler = None

    def on_term(signum, frame):
        raise SystemExit(f"driver got signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    code = 0
    try:
        r = prepare_redis(args)
        driver.setup(args)
        out.update(driver.versions())
        if args.workload == "cpu":
            out["cpu_iters"] = args.cpu_iters
        if args.workload == "payload":
            out["payload_bytes"] = args.payload_bytes
        if args.workload == "latency":
            out.update(_run_latency(driver, args, workers))
        elif args.workload in CANVAS:
            out.update(_run_canvas(driver, args, workers))
        else:
            # pre-enqueued backlog: the enqueue is timed alone, with no worker competing
            t0 = time.perf_counter()
            extra = driver.enqueue(args, args.n) or {}
            dt = time.perf_counter() - t0
            out["enqueue_s"] = dt
            out["enqueue_per_s"] = args.n / dt        # a driver may report its one-call rate
            out["enqueue_total_per_s"] = args.n / dt
            out.update(extra)
            t_spawn = time.time()
            for argv_, env in driver.worker_commands(args):
                workers.start(argv_, env)
            sampler = RssSampler(workers.pids)
            sampler.start()
            deadline = time.monotonic() + args.timeout
            while True:
                got = r.blpop(key + ":fin", timeout=1)
                if got:
                    break
                workers.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {int(r.get(key) or 0)}/{args.n} tasks done "
                                       f"after {args.timeout}s")
            first = float(r.get(key + ":first"))
            last = float(r.get(key + ":last"))
            start = float(r.get(key + ":start") or first)
            span = max(last - first, 1e-9)
            out.update({
                "first_to_last_s": span,
                "tasks_per_s": args.n / span,
                "start_to_last_s": last - start,
                "tasks_per_s_busy": args.n / max(last - start, 1e-9),
                "from_start_s": last - t_spawn,
                "tasks_per_s_from_start": args.n / (last - t_spawn),
                "startup_s": first - t_spawn,
            })
            sampler.stop()
            out["worker_rss_peak_mb"] = sampler.peak / 2**20
            out["worker_cpu_s"] = sampler.cpu_s
            out["worker_procs"] = sampler.nprocs
    except BaseException as e:  # report, clean up, exit non-zero
        out["error"] = f"{type(e).__name__}: {e}"
        if workers.procs:
            out["log_tail"] = workers.tail(1500)
        code = 1
    finally:
        if sampler is not None:
            sampler.stop()
        workers.stop()
    print(json.dumps(out), flush=True)
    return code


def _run_latency(driver, args, workers):
    for argv_, env in driver.worker_commands(args):
        workers.start(argv_, env)
    sampler = RssSampler(workers.pids)
    sampler.start()
    # wait until the worker answers, then warm every process up before timing
    deadline = time.monotonic() + min(args.timeout, 120)
    t_spawn = time.monotonic()
    while True:
        workers.check_alive()
        try:
            driver.roundtrip(0, 2.0)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
    ready_s = time.monotonic() - t_spawn
    for i in range(30):
        driver.roundtrip(i, 10.0)
    lat = []
    t_all = time.perf_counter()
    for i in range(args.n):
        t = time.perf_counter()
        v = driver.roundtrip(i, 10.0)
        lat.append((time.perf_counter() - t) * 1000.0)
        if v != i:
            raise AssertionError(f"echo returned {v!r}, expected {i}")
    total = time.perf_counter() - t_all
    sampler.stop()
    res = percentiles(lat)
    res.update({"ready_s": ready_s, "tasks_per_s": args.n / total,
                "worker_rss_peak_mb": sampler.peak / 2**20, "worker_procs": sampler.nprocs})
    if args.samples:
        res["latencies_ms"] = [round(x, 4) for x in lat]
    return res


def _run_canvas(driver, args, workers):
    for argv_, env in driver.worker_commands(args):
        workers.start(argv_, env)
    sampler = RssSampler(workers.pids)
    sampler.start()
    deadline = time.monotonic() + min(args.timeout, 120)
    while True:
        workers.check_alive()
        try:
            driver.roundtrip(0, 2.0)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
    driver.canvas(args.workload, min(args.n, 50), 60.0)     # warm-up, not timed
    times = []
    for _ in range(CANVAS_ROUNDS):
        t = time.perf_counter()
        value = driver.canvas(args.workload, args.n, args.timeout)
        times.append(time.perf_counter() - t)
        if value != args.n:
            raise AssertionError(f"{args.workload} returned {value!r}, expected {args.n}")
    sampler.stop()
    s = sorted(times)
    median = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
    return {"first_to_last_s": median, "canvas_s": times, "tasks_per_s": args.n / median,
            "worker_rss_peak_mb": sampler.peak / 2**20, "worker_cpu_s": sampler.cpu_s,
            "worker_procs": sampler.nprocs}


async def enqueue_async(one, count, single=2000, width=100):
    """Enqueue ``count`` tasks with ``await one()`` (a coroutine function sending one task):
    the first min(count, single) one after the other (``enqueue_per_s``, the one-call rate),
    half each below 2 x single; the rest ``width`` at a time with ``asyncio.gather``
    (``enqueue_bulk_per_s``: the asyncio queues without a bulk call (taskiq, SAQ, arq) send
    concurrently instead)."""
    import asyncio

    single = min(single, max(1, count // 2))
    t0 = time.perf_counter()
    for _ in range(single):
        await one()
    t1 = time.perf_counter()
    rest = count - single
    for k in chunks(rest, width):
        await asyncio.gather(*[one() for _ in range(k)])
    t2 = time.perf_counter()
    out = {"enqueue_mode": f"await x{single}" + (f" + gather({width}) x{rest}" if rest else ""),
           "enqueue_per_s": single / (t1 - t0)}
    if rest:
        out["enqueue_bulk_per_s"] = rest / (t2 - t1)
    return out


def chunks(total, size):
    while total > 0:
        k = min(size, total)
        yield k
        total -= k

