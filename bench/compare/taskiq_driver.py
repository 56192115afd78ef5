"""taskiq driver: `python taskiq_driver.py --redis URL --workload noop --procs 2 -c 100 --json`,
in bench/.venv-compare.

Workers: `taskiq worker taskiq_tasks:broker --workers PROCS --max-async-tasks C
--max-prefetch C --no-parse` (taskiq's own supervisor with PROCS worker processes; `-c` is
its `--max-async-tasks` per process). Broker: taskiq-redis `RedisStreamBroker`
(taskiq_tasks.py). Enqueue: `await task.kiq()`, one call a task (common.enqueue_async).
Round trips: `await (await echo.kiq(x)).wait_result(check_interval=POLL)`: taskiq's result
backends are polled (no push), POLL = 1 ms (its default is 0.2 s). The driver keeps one asyncio
loop for all of its calls.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

POLL = 0.001


class TaskiqDriver(common.Driver):
    system = "taskiq"
    pools = ("async",)

    def env(self, args):
        return {"BENCH_TASKIQ_RESULTS": "1" if args.workload == "latency" else "0",
                "BENCH_TASKIQ_SLOTS": str(args.concurrency)}

    def worker_commands(self, args):
        exe = os.path.join(os.path.dirname(sys.executable), "taskiq")
        argv = [exe, "worker", "taskiq_tasks:broker", "--workers", str(args.procs),
                "--max-async-tasks", str(args.concurrency), "--max-prefetch",
                str(args.concurrency), "--no-parse", "--log-level", "WARNING"]
        return [(argv, self.env(args))]

    def setup(self, args):
        os.environ.update(self.env(args))
        import taskiq_tasks

        self.t = taskiq_tasks
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(taskiq_tasks.broker.startup())

    def enqueue(self, args, count):
        fn = getattr(self.t, args.workload)
        a = common.task_args(args)
        return self.loop.run_until_complete(common.enqueue_async(lambda: fn.kiq(*a), count))

    def roundtrip(self, x, timeout):
        return self.loop.run_until_complete(self._roundtrip(x, timeout))

    async def _roundtrip(self, x, timeout):
        task = await self.t.echo.kiq(x)
        res = await task.wait_result(check_interval=POLL, timeout=timeout)
        if res.is_err:
            raise RuntimeError(f"echo failed: {res.error!r}")
        return res.return_value

    def concurrency_label(self, args):
        return f"{args.procs}x{args.concurrency}"

    def versions(self):
        from importlib.metadata import version

        return {"version": version("taskiq"), "taskiq_redis": version("taskiq-redis")}


if __name__ == "__main__":
    sys.exit(common.run(TaskiqDriver()))
