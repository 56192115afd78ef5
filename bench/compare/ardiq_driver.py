"""ArdiQ driver: `python ardiq_driver.py --redis URL --workload noop --pool async --procs 2
-c 16 --json`. Run in bench/.venv-ardiq (ArdiQ needs Python >= 3.12; setup_ardiq.sh).

Workers: `ardiq run ardiq_tasks:app --workers PROCS -q` (ArdiQ's own supervisor, PROCS worker
processes), `-c` is ArdiQ's `concurrency` per process. `--pool async` runs the `async def`
tasks on the worker's event loop, `--pool thread` the blocking `def` ones through
`asyncio.to_thread`. Results are not stored (`result_ttl_ms=0`) except for `stored` and
`latency`, which need them.

Enqueueing, as the engine driver does it: the first min(n, 2000) tasks with one
`await task.enqueue()` per call (`enqueue_per_s`, comparable with the other one-call rates),
the rest with `app.enqueue_many` of 1,000 prepared tasks (`enqueue_bulk_per_s`; one Lua
script call a batch); half each below 4,000 tasks. Round trips are
`await (await echo.enqueue(x)).result(timeout=...)` (ArdiQ waits on a pub/sub channel).
The driver keeps one asyncio loop for all of its calls.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

SINGLE = 2000
CHUNK = 1000
RESULTS = ("stored", "latency")   # the workloads whose results the worker must store


class ArdiqDriver(common.Driver):
    system = "ardiq"
    pools = ("async", "thread")

    def env(self, args):
        env = {"BENCH_ARDIQ_CONCURRENCY": str(args.concurrency)}
        if args.workload not in RESULTS:
            env["BENCH_ARDIQ_RESULT_TTL_MS"] = "0"    # results ignored, as for every system
        return env

    def worker_commands(self, args):
        exe = os.path.join(os.path.dirname(sys.executable), "ardiq")
        argv = [exe, "run", "ardiq_tasks:app", "--workers", str(args.procs), "-q"]
        return [(argv, self.env(args))]

    def setup(self, args):
        os.environ.update(self.env(args))
        import ardiq_tasks

        self.t = ardiq_tasks
        self.suffix = "_thread" if args.pool == "thread" else ""
        self.loop = asyncio.new_event_loop()
        self.echo = getattr(ardiq_tasks, "echo" + self.suffix)

    def enqueue(self, args, count):
        return self.loop.run_until_complete(self._enqueue(args, count))

    async def _enqueue(self, args, count):
        import time

        fn = getattr(self.t, args.workload + self.suffix)
        a = common.task_args(args)
        single = min(SINGLE, max(1, count // 2))
        t0 = time.perf_counter()
        enqueue = fn.enqueue
        for _ in range(single):
            await enqueue(*a)
        t1 = time.perf_counter()
        rest = count - single
        for k in common.chunks(rest, CHUNK):
            await self.t.app.enqueue_many([fn.prepare(*a) for _ in range(k)])
        t2 = time.perf_counter()
        out = {"enqueue_mode": f"enqueue x{single}" + (f" + enqueue_many x{rest}" if rest else ""),
               "enqueue_per_s": single / (t1 - t0)}
        if rest:
            out["enqueue_bulk_per_s"] = rest / (t2 - t1)
        return out

    def roundtrip(self, x, timeout):
        return self.loop.run_until_complete(self._roundtrip(x, timeout))

    async def _roundtrip(self, x, timeout):
        job = await self.echo.enqueue(x)
        res = await job.result(timeout=timeout)
        if not res.success:
            raise RuntimeError(f"echo failed: {res.value!r}")
        return res.value

    def concurrency_label(self, args):
        return f"{args.procs}x{args.concurrency}"

    def versions(self):
        from importlib.metadata import version

        return {"version": version("ardiq")}


if __name__ == "__main__":
    sys.exit(common.run(ArdiqDriver()))
