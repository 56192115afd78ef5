"""The redis-py ceiling and floor, against the same Redis as the task systems.

``noop`` (the ceiling): a bare redis-py pipeline pushing (XADD) and popping (XREADGROUP +
XACK, in batches) small msgpack task messages shaped like the engine's. Nothing runs a task:
this is what the wire and the Redis server allow one client on this machine, so that a task
system's no-op throughput can be printed as a share of it.

``latency`` (the floor, ``--pool bare``): the least a sequential round trip can take through
one Redis on this machine. One forked process, a bare redis-py loop, blocks in XREADGROUP,
decodes each message and stores its echo in a one-element list (RPUSH, as one result
record); the caller sends with XADD and waits with BLMOVE, as ``delay().get()`` does.
No supervisor, no pool, no hop between threads or processes on the worker side: what a task
system adds to a round trip is its latency above this one.

    python ceiling_driver.py --redis URL --n 20000 [--batch 1000] --json
    python ceiling_driver.py --redis URL --workload latency --n 500 [--samples] --json
"""
import argparse
import json
import os
import signal
import sys
import time
import uuid

from common import percentiles


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis", required=True)
    p.add_argument("--workload", default="noop", choices=["noop", "latency"])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--flush", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--pool", default="pipeline")
    p.add_argument("-c", "--concurrency", type=int, default=1)
    p.add_argument("--pidfile", default=None)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--samples", action="store_true")
    a, _ = p.parse_known_args(argv)
    if a.workload == "latency":
        return floor(a)
    out = {"system": "redis-py", "pool": "pipeline", "concurrency": 1, "workload": "noop",
           "n": a.n, "batch": a.batch}
    try:
        import msgpack
        import redis

        r, stream, group = _fresh_stream(a, "ceiling")
        pack, unpack = msgpack.packb, msgpack.unpackb
        t0 = time.perf_counter()
        left = a.n
        while left:
            k = min(a.batch, left)
            pipe = r.pipeline(transaction=False)
            for _ in range(k):
                body = pack({"v": 1, "id": uuid.uuid4().hex, "task": "enginebench_tasks.noop",
                             "args": [], "kwargs": {}, "retries": 0, "ignore_result": True})
                pipe.xadd(stream, {"m": body})
            pipe.execute()
            left -= k
        t1 = time.perf_counter()
        got = 0
        ids = []
        while got < a.n:
            pipe = r.pipeline(transaction=False)
            if ids:
                pipe.xack(stream, group, *ids)
            pipe.xreadgroup(group, "c1", {stream: ">"}, count=a.batch)
            res = pipe.execute()[-1]
            ids = []
            for _name, entries in res or ():
                for mid, fields in entries:
                    unpack(fields[b"m"])
                    ids.append(mid)
            got += len(ids)
            if not res:
                raise RuntimeError(f"stream ran dry after {got} messages")
        if ids:
            r.xack(stream, group, *ids)
        t2 = time.perf_counter()
        r.delete(stream)
        out.update({"push_per_s": a.n / (t1 - t0), "pop_per_s": a.n / (t2 - t1),
                    "tasks_per_s": a.n / (t2 - t0), "first_to_last_s": t2 - t0,
                    "enqueue_per_s": a.n / (t1 - t0),
                    "version": f"redis-py {redis.__version__}"})
        code = 0
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        code = 1
    print(json.dumps(out), flush=True)
    return code


def _fresh_stream(a, prefix):
    """A client of ``--redis`` (its database flushed with ``--flush``) and an empty stream
    with its consumer group: (client, stream, group)."""
    import redis

    r = redis.Redis.from_url(a.redis)
    if a.flush:
        r.flushdb()
    stream, group = f"{prefix}:q:{{default}}", "engine"
    r.delete(stream)
    r.xgroup_create(stream, group, id="0", mkstream=True)
    return r, stream, group


#: sequential round trips before the timed ones (as common's latency workload)
WARM_UP = 30


def floor(a):
    """The latency floor: sequential XADD + BLMOVE round trips through one bare consumer."""
    out = {"system": "redis-py", "pool": "bare", "concurrency": 1, "workload": "latency",
           "n": a.n}
    consumer = None
    try:
        import msgpack
        import redis

        r, stream, group = _fresh_stream(a, "floor")
        consumer = os.fork()
        if consumer == 0:
            _consume(a.redis, stream, group)
        # the consumer is in this driver's process group, which the harness ends if need be
        pack, unpack = msgpack.packb, msgpack.unpackb
        lat = []
        for i in range(WARM_UP + a.n):
            task_id = uuid.uuid4().hex
            body = pack({"v": 1, "id": task_id, "task": "enginebench_tasks.echo",
                         "args": [i], "kwargs": {}, "retries": 0})
            key = f"floor:result:{task_id}"
            t = time.perf_counter()
            r.xadd(stream, {"m": body})
            raw = r.blmove(key, key, 10, "LEFT", "RIGHT")
            elapsed = (time.perf_counter() - t) * 1000.0
            if raw is None or unpack(raw) != i:
                raise AssertionError(f"round trip {i} returned {raw!r}")
            r.delete(key)
            if i >= WARM_UP:
                lat.append(elapsed)
        out.update(percentiles(lat))
        out["version"] = f"redis-py {redis.__version__}"
        if a.samples:
            out["latencies_ms"] = [round(x, 4) for x in lat]
        code = 0
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        code = 1
    finally:
        if consumer:
            os.kill(consumer, signal.SIGKILL)
            os.waitpid(consumer, 0)
    print(json.dumps(out), flush=True)
    return code


def _consume(url, stream, group):
    """The floor's consumer (a forked child): read, decode, store the echo, ack; forever."""
    try:
        import msgpack
        import redis

        r = redis.Redis.from_url(url)
        while True:
            for _name, entries in r.xreadgroup(group, "floor", {stream: ">"}, count=100,
                                               block=500) or ():
                for entry_id, fields in entries:
                    body = msgpack.unpackb(fields[b"m"])
                    r.rpush(f"floor:result:{body['id']}", msgpack.packb(body["args"][0]))
                    r.xack(stream, group, entry_id)
    finally:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
