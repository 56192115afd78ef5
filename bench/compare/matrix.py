"""The comparison's configurations: which drivers, which rows each workload runs, and the
``--configs`` patterns that pick among them (bench/compare/run.py runs them)."""
from __future__ import annotations

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
