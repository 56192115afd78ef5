"""Huey driver: `python huey_driver.py --redis URL --workload noop --pool process -c 2 --json`
(`huey_consumer -k process -w 2`; `--pool greenlet -c 500`, `--pool thread`). Returning None,
the throughput tasks store no result. Run in bench/.venv-compare."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


class HueyDriver(common.Driver):
    system = "huey"
    pools = ("process", "greenlet", "thread")

    def worker_commands(self, args):
        if args.pool == "greenlet":
            # Huey leaves monkey-patching to the user: its docs say to patch first thing
            argv = [sys.executable, os.path.join(common.HERE, "huey_gevent_consumer.py")]
        else:
            argv = [os.path.join(os.path.dirname(sys.executable), "huey_consumer")]
        argv += ["huey_tasks.huey", "-k", args.pool, "-w", str(args.concurrency),
                "-n", "-q"]
        return [(argv, {})]

    def setup(self, args):
        import huey_tasks

        self.t = huey_tasks

    def enqueue(self, args, count):
        fn = getattr(self.t, args.workload)
        a = common.task_args(args)
        for _ in range(count):
            fn(*a)
        return {"enqueue_mode": "call"}

    def roundtrip(self, x, timeout):
        return self.t.echo(x).get(blocking=True, timeout=timeout)

    def versions(self):
        import huey

        return {"version": huey.__version__}


if __name__ == "__main__":
    sys.exit(common.run(HueyDriver()))
