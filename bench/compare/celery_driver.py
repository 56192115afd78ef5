"""Celery 5 driver: `python celery_driver.py --redis URL --workload noop --n 20000
--pool prefork -c 2 --json` (run in bench/.venv-compare). Prints one JSON line."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


class CeleryDriver(common.Driver):
    system = "celery"
    pools = ("prefork", "threads", "gevent", "solo")

    def worker_commands(self, args):
        celery = os.path.join(os.path.dirname(sys.executable), "celery")
        argv = [celery, "-A", "celery_tasks", "worker", "--pool", args.pool,
                "-c", str(args.concurrency), "-l", "warning", "-Q", "bench",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]
        return [(argv, {})]

    def setup(self, args):
        import celery_tasks

        self.t = celery_tasks

    def enqueue(self, args, count):
        fn = getattr(self.t, args.workload)
        a = common.task_args(args)
        delay = fn.delay
        for _ in range(count):       # one delay() per call: Celery has no bulk enqueue
            delay(*a)
        return {"enqueue_mode": "delay"}

    def roundtrip(self, x, timeout):
        return self.t.echo.delay(x).get(timeout=timeout)

    def canvas(self, workload, n, timeout):
        from celery import chain, chord

        t = self.t
        if workload == "chord":
            r = chord([t.cmember.s() for _ in range(n)], t.ccount.s()).delay()
        else:
            r = chain(t.cstep.s(0), *[t.cstep.s() for _ in range(n - 1)]).delay()
        return r.get(timeout=timeout)

    def versions(self):
        import celery
        import kombu

        return {"version": celery.__version__, "kombu": kombu.__version__}


if __name__ == "__main__":
    sys.exit(common.run(CeleryDriver()))
