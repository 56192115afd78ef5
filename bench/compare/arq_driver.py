"""arq driver: `python arq_driver.py --redis URL --workload noop --procs 2 -c 100 --json`,
in bench/.venv-compare.

Workers: PROCS processes of `arq arq_tasks.WorkerSettings` (arq has no multi-process option;
each is started and stopped as its own group), `-c` is arq's `max_jobs` per process,
`poll_delay` POLL_DELAY (arq polls its queue, a sorted set; its default is 0.5 s) and
`keep_result` 0 where results are ignored. Enqueue: `await pool.enqueue_job(name, ...)`, one
call a task (common.enqueue_async). Round trips: `await (await pool.enqueue_job("echo",
x)).result(timeout=..., poll_delay=POLL_DELAY)`: arq's job results are polled too. The driver
keeps one asyncio loop for all of its calls.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

POLL_DELAY = 0.001


class ArqDriver(common.Driver):
    system = "arq"
    pools = ("async",)

    def env(self, args):
        return {"BENCH_ARQ_MAX_JOBS": str(args.concurrency),
                "BENCH_ARQ_POLL_DELAY": str(POLL_DELAY),
                "BENCH_ARQ_KEEP_RESULT": "3600" if args.workload == "latency" else "0"}

    def worker_commands(self, args):
        exe = os.path.join(os.path.dirname(sys.executable), "arq")
        argv = [exe, "arq_tasks.WorkerSettings"]
        return [(argv, self.env(args)) for _ in range(args.procs)]

    def setup(self, args):
        os.environ.update(self.env(args))
        import arq_tasks
        from arq import create_pool

        self.t = arq_tasks
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(arq_tasks.WorkerSettings
                                                             .redis_settings))

    def enqueue(self, args, count):
        a = common.task_args(args)
        name = args.workload
        pool = self.pool
        return self.loop.run_until_complete(
            common.enqueue_async(lambda: pool.enqueue_job(name, *a), count))

    def roundtrip(self, x, timeout):
        return self.loop.run_until_complete(self._roundtrip(x, timeout))

    async def _roundtrip(self, x, timeout):
        job = await self.pool.enqueue_job("echo", x)
        return await job.result(timeout=timeout, poll_delay=POLL_DELAY)

    def concurrency_label(self, args):
        return f"{args.procs}x{args.concurrency}"

    def versions(self):
        from importlib.metadata import version

        return {"version": version("arq")}


if __name__ == "__main__":
    sys.exit(common.run(ArqDriver()))
