"""SAQ driver: `python saq_driver.py --redis URL --workload noop --procs 2 -c 100 --json`,
in bench/.venv-compare.

Workers: `saq saq_tasks.settings --workers PROCS -q` (SAQ's own launcher, PROCS worker
processes); `-c` is SAQ's `concurrency` per process. Enqueue: `await queue.enqueue(name,
**kwargs)`, one call a task (common.enqueue_async), with `ttl=-1` (the job's record is
deleted when it ends: no result kept) where results are ignored, SAQ's default (600 s) for
the round trips. Round trips: `job = await queue.enqueue("echo", x=x)` then `await
job.refresh(until_complete=...)`, which waits on SAQ's pub/sub notification (`queue.apply`
would poll every 0.5 s). SAQ subscribes to the notification after reading the job once, so
one sent in between is lost: the wait is cut into WAIT (50 ms) pieces, each followed by
another read of the job, which bounds what such a miss costs. The driver keeps one asyncio loop for all of its calls.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

WAIT = 0.05


class SaqDriver(common.Driver):
    system = "saq"
    pools = ("async",)

    def env(self, args):
        return {"BENCH_SAQ_CONCURRENCY": str(args.concurrency)}

    def worker_commands(self, args):
        exe = os.path.join(os.path.dirname(sys.executable), "saq")
        argv = [exe, "saq_tasks.settings", "--workers", str(args.procs), "-q"]
        return [(argv, self.env(args))]

    def setup(self, args):
        os.environ.update(self.env(args))
        import saq_tasks

        self.t = saq_tasks
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(saq_tasks.queue.connect())

    def enqueue(self, args, count):
        q = self.t.queue
        name = args.workload
        kw = {"s": common.SLEEP_S} if name == "asleep" else {}
        return self.loop.run_until_complete(
            common.enqueue_async(lambda: q.enqueue(name, ttl=-1, retries=1, **kw), count))

    def roundtrip(self, x, timeout):
        return self.loop.run_until_complete(self._roundtrip(x, timeout))

    async def _roundtrip(self, x, timeout):
        import time

        job = await self.t.queue.enqueue("echo", x=x, retries=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                await job.refresh(until_complete=WAIT)
                break
            except asyncio.TimeoutError:
                # SAQ subscribes after reading the job: a notification sent in between is
                # missed, so the wait is cut into WAIT pieces with a read of the job between
                if time.monotonic() > deadline:
                    raise
        if job.status != "complete":
            raise RuntimeError(f"echo ended {job.status}: {job.error!r}")
        return job.result

    def concurrency_label(self, args):
        return f"{args.procs}x{args.concurrency}"

    def versions(self):
        from importlib.metadata import version

        return {"version": version("saq")}


if __name__ == "__main__":
    sys.exit(common.run(SaqDriver()))
