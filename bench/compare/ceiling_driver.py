"""The redis-py ceiling: a bare redis-py pipeline pushing (XADD) and popping (XREADGROUP + XACK,
in batches) small msgpack task messages shaped like the engine's, against the same Redis.
Nothing runs a task: this is what the wire and the Redis server allow one client on this
machine, so that a task system's no-op throughput can be printed as a share of it.

    python ceiling_driver.py --redis URL --n 20000 [--batch 1000] --json
"""
import argparse
import json
import sys
import time
import uuid


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis", required=True)
    p.add_argument("--workload", default="noop", choices=["noop"])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--flush", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--pool", default="pipeline")
    p.add_argument("-c", "--concurrency", type=int, default=1)
    p.add_argument("--pidfile", default=None)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--procs", type=int, default=1)
    a, _ = p.parse_known_args(argv)
    out = {"system": "redis-py", "pool": "pipeline", "concurrency": 1, "workload": "noop",
           "n": a.n, "batch": a.batch}
    try:
        import msgpack
        import redis

        r = redis.Redis.from_url(a.redis)
        if a.flush:
            r.flushdb()
        stream, group = "ceiling:q:{default}", "engine"
        r.delete(stream)
        r.xgroup_create(stream, group, id="0", mkstream=True)
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


if __name__ == "__main__":
    sys.exit(main())
