"""Engine driver, same CLI and JSON line as the rivals' drivers, run with the PROJECT venv:

    /work/main/.venv/bin/python bench/compare/engine_driver.py --redis URL --workload noop \
        --n 20000 --pool prefork -c 2 --json

Starts `python -m engine run -A enginebench_tasks --pool P -c N` with ENGINE_BROKER_URL and
ENGINE_RESULT_BACKEND set to URL. Enqueueing: the first min(n, 2000) tasks one `delay()` per
call (`enqueue_per_s`, comparable with the rivals' one-call rates), the rest with `delay_many`
in chunks of 1,000 (`enqueue_bulk_per_s`); half each below 4,000 tasks. Never imports Celery, Dramatiq or Huey.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# The repository's own engine/ and pools/ come first: the working tree is what is measured
# (and an editable install made before engine/__init__.py existed maps `engine` to a
# namespace package).
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, ROOT]

import common  # noqa: E402

SINGLE = 2000
CHUNK = 1000


class EngineDriver(common.Driver):
    system = "engine"
    pools = ("prefork", "threads", "gevent", "solo", "asyncio")

    def worker_commands(self, args):
        """``--procs`` supervisors of ``-c`` slots each (one unless asked: prefork has its
        children; two asyncio supervisors use both cores as the peers' two processes do)."""
        argv = [sys.executable, "-m", "engine", "run", "-A", "enginebench_tasks",
                "--pool", args.pool, "-c", str(args.concurrency), "-l", "warning"]
        return [(argv, self.env(args)) for _ in range(args.procs)]

    def concurrency_label(self, args):
        return f"{args.procs}x{args.concurrency}" if args.procs > 1 else args.concurrency

    @staticmethod
    def env(args):
        return {"ENGINE_BROKER_URL": args.redis, "ENGINE_RESULT_BACKEND": args.redis,
                "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def setup(self, args):
        os.environ.update(self.env(args))
        import enginebench_tasks

        self.t = enginebench_tasks
        # --pool asyncio runs the async def twins (coroutines on its loop)
        self.suffix = "_async" if args.pool == "asyncio" else ""
        self.echo = getattr(enginebench_tasks, "echo" + self.suffix)
        # Pre-enqueued backlog: make sure the consumer group reads the stream from its start
        # even if a worker would create it at `$` (contract: stream engine:q:{default},
        # group `engine`). Harmless when the engine creates it itself.
        import redis

        r = redis.Redis.from_url(args.redis)
        try:
            r.xgroup_create("engine:q:{default}", "engine", id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def enqueue(self, args, count):
        import time

        name = args.workload
        if name == "noop":
            name += self.suffix
        fn = getattr(self.t, name)
        a = common.task_args(args)
        single = min(SINGLE, max(1, count // 2))
        t0 = time.perf_counter()
        delay = fn.delay
        for _ in range(single):
            delay(*a)
        t1 = time.perf_counter()
        rest = count - single
        for k in common.chunks(rest, CHUNK):
            fn.delay_many([a] * k)
        t2 = time.perf_counter()
        out = {"enqueue_mode": f"delay x{single}" + (f" + delay_many x{rest}" if rest else ""),
               "enqueue_per_s": single / (t1 - t0)}
        if rest:
            out["enqueue_bulk_per_s"] = rest / (t2 - t1)
        return out

    def roundtrip(self, x, timeout):
        return self.echo.delay(x).get(timeout=timeout)

    def canvas(self, workload, n, timeout):
        from engine import chain, chord

        t = self.t
        if workload == "chord":
            r = chord([t.cmember.s() for _ in range(n)], t.ccount.s()).delay()
        else:
            r = chain(t.cstep.s(0), *[t.cstep.s() for _ in range(n - 1)]).delay()
        return r.get(timeout=timeout)

    def versions(self):
        try:
            from importlib.metadata import version

            return {"version": version("engine-tasks")}
        except Exception:
            return {}


def main():
    drv = EngineDriver()
    code = common.run(drv)
    return code


if __name__ == "__main__":
    sys.exit(main())
