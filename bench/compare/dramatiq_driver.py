"""Dramatiq driver: `python dramatiq_driver.py --redis URL --workload noop --pool threads
--procs 2 -c 8 --json` (processes x threads per process; `--pool gevent` uses
dramatiq-gevent with -c greenlets per process). Run in bench/.venv-compare."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


class DramatiqDriver(common.Driver):
    system = "dramatiq"
    pools = ("threads", "gevent")

    def worker_commands(self, args):
        exe = "dramatiq-gevent" if args.pool == "gevent" else "dramatiq"
        exe = os.path.join(os.path.dirname(sys.executable), exe)
        argv = [exe, "dramatiq_tasks", "--processes", str(args.procs),
                "--threads", str(args.concurrency), "-Q", "bench"]
        return [(argv, {})]

    def setup(self, args):
        import dramatiq_tasks

        self.t = dramatiq_tasks

    def enqueue(self, args, count):
        send = getattr(self.t, args.workload).send
        a = common.task_args(args)
        for _ in range(count):
            send(*a)
        return {"enqueue_mode": "send"}

    def roundtrip(self, x, timeout):
        msg = self.t.echo.send(x)
        return msg.get_result(block=True, timeout=int(timeout * 1000))

    def concurrency_label(self, args):
        return f"{args.procs}x{args.concurrency}"

    def versions(self):
        import dramatiq

        return {"version": dramatiq.__version__}


if __name__ == "__main__":
    sys.exit(common.run(DramatiqDriver()))
