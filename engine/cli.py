"""The ``engine`` command line: one parser, one function per command word.

``main`` monkey-patches the process with gevent before anything else is imported when the
command is ``run --pool gevent`` (or a lane uses gevent in-process): that is why this module
imports only the standard library at the top. Errors the user can fix (bad ``-A``, pool,
class path, URL) print one line and exit 2; nothing prints a traceback for them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Callable

PROG = "engine"


def _wants_gevent(argv: list[str]) -> bool:
    if not argv or argv[0] != "run":
        return False
    for i, arg in enumerate(argv):
        if arg in ("--pool", "-P") and i + 1 < len(argv) and argv[i + 1] == "gevent":
            return True
        if arg in ("--pool=gevent", "-Pgevent"):
            return True
    return os.environ.get("ENGINE_POOL") == "gevent"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:   # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="A task engine: producers send tasks through "
                     "Redis; workers run them in interchangeable pools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def app_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("-A", "--app", default=os.environ.get("ENGINE_APP"),
                       help="module or module:attribute of the Engine app (default $ENGINE_APP)")

    run = sub.add_parser("run", help="start a worker")
    app_arg(run)
    run.add_argument("-P", "--pool", help="prefork, gevent, threads, solo, custom "
                     "($ENGINE_CUSTOM_POOL) or package.module:Class (default: worker_pool)")
    run.add_argument("-c", "--concurrency", type=_positive_int,
                     help="execution slots (default: worker_concurrency, the CPU count)")
    run.add_argument("-Q", "--queues", help="comma-separated queues (default: task_default_queue)")
    run.add_argument("--lane", action="append", default=[], metavar="QUEUES=POOL:N[,KEY=VALUE]",
                     help="a lane: these queues on their own pool, e.g. cpu=prefork:4 or "
                     "io,mail=gevent:500 (repeatable; replaces --pool/-c/-Q). Options after "
                     "the pool: prefetch=N soft=S hard=S max-tasks=N max-memory=KIB name=NAME "
                     "isolate=yes|no, e.g. cpu=prefork:4,prefetch=2,soft=5,hard=10. A gevent "
                     "lane, or one with max-memory on a pool that cannot recycle (threads), "
                     "runs in a child process of its own")
    # internal: this worker is an isolated lane of the supervisor PID:NAME (engine.worker.isolation)
    run.add_argument("--lane-of", help=argparse.SUPPRESS)
    run.add_argument("--prefetch", type=_positive_int,
                     help="messages held per slot at most (default 64; the worker keeps about "
                     "50 ms of work per slot, at least 2)")
    run.add_argument("--soft-time-limit", type=_seconds, help="seconds before SoftTimeLimitExceeded")
    run.add_argument("--time-limit", type=_seconds, help="seconds before the task is ended")
    run.add_argument("--max-tasks-per-child", type=_positive_int, help="recycle a child after N tasks")
    run.add_argument("--max-memory-per-child", type=_positive_int, metavar="KIB",
                     help="recycle a child above this resident memory")
    run.add_argument("--import-in-child", action="store_true",
                     help="import task modules in each prefork child instead of before forking")
    run.add_argument("-B", "--beat", action="store_true", help="also run the beat scheduler")
    run.add_argument("-n", "--hostname", help="worker name (default engine-PID@HOST; %%h is the host)")
    run.add_argument("--no-events", action="store_true", help="do not publish events")
    run.add_argument("-l", "--loglevel", default="info", choices=["debug", "info", "warning", "error"])

    beat = sub.add_parser("beat", help="run the periodic task scheduler")
    app_arg(beat)
    beat.add_argument("-l", "--loglevel", default="info", choices=["debug", "info", "warning", "error"])

    events = sub.add_parser("events", help="live terminal monitor of workers, queues and tasks")
    app_arg(events)
    events.add_argument("--dump", action="store_true", help="print one JSON event a line")
    events.add_argument("--since", default="$", help="with --dump: stream id to start from (0: all)")

    inspect = sub.add_parser("inspect", help="ask running workers")
    app_arg(inspect)
    inspect.add_argument("verb", choices=["ping", "stats", "active", "registered", "queues"])
    inspect.add_argument("-d", "--destination", help="comma-separated worker names (default all)")
    inspect.add_argument("-t", "--timeout", type=_seconds, default=1.0, help="seconds to wait for replies")
    inspect.add_argument("--json", action="store_true", help="print JSON")

    ctl = sub.add_parser("control", help="steer running workers")
    app_arg(ctl)
    ctl.add_argument("verb", choices=["shutdown", "revoke", "pool-grow", "pool-shrink"])
    ctl.add_argument("argument", nargs="?", help="task id for revoke, N for pool-grow/shrink")
    ctl.add_argument("--lane", help="for pool-grow/shrink: the lane (default: the first)")
    ctl.add_argument("--terminate", action="store_true", help="for revoke: end it if running")
    ctl.add_argument("-d", "--destination", help="comma-separated worker names (default all)")
    ctl.add_argument("-t", "--timeout", type=_seconds, default=1.0, help="seconds to wait for replies")
    ctl.add_argument("--json", action="store_true", help="print JSON")

    purge = sub.add_parser("purge", help="delete waiting messages")
    app_arg(purge)
    purge.add_argument("-Q", "--queues", help="comma-separated queues (default: all known)")
    purge.add_argument("-f", "--force", action="store_true", help="do not ask")

    bench = sub.add_parser("bench", help="measure a worker on this machine")
    bench.add_argument("--pool", default="prefork")
    bench.add_argument("-c", "--concurrency", type=_positive_int, default=None)
    bench.add_argument("-n", "--tasks", type=_positive_int, default=None,
                       help="tasks to run (default: noop 20000, sleep 2000, cpu 200, payload 5000)")
    bench.add_argument("--kind", default="noop", choices=["noop", "sleep", "cpu", "payload"])
    bench.add_argument("--payload-bytes", type=_positive_int, default=10240)
    bench.add_argument("--broker", help="Redis URL (default: the embedded Redis)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")

    broker = sub.add_parser("broker", help="the embedded Redis")
    broker.add_argument("action", choices=["start", "stop", "status"])

    dash = sub.add_parser("dashboard", help="web dashboard of the fleet")
    app_arg(dash)
    dash.add_argument("--port", type=_positive_int, default=5555)
    dash.add_argument("--address", default="127.0.0.1")
    dash.add_argument("--basic-auth", default=os.environ.get("ENGINE_DASHBOARD_AUTH"),
                      help="user:password (or $ENGINE_DASHBOARD_AUTH)")
    dash.add_argument("--insecure-no-auth", action="store_true",
                      help="listen on a non-loopback address without a password anyway")
    dash.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                      help="a Host name to accept besides the bound address and loopback "
                           "names (repeatable; '*.example.com' patterns, '*' for any)")
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s")


def load(args: argparse.Namespace):
    from engine.app import load_app
    return load_app(args.app or "")


# -- commands ---------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from engine.worker.supervisor import Supervisor
    from engine.worker.lanes import LaneSpec, parse_lane
    from pools import describe, resolve
    from pools.base import PoolOptions
    parent = None
    if args.lane_of:
        from engine.worker import ossignals as signals
        parent_pid, _, parent = args.lane_of.partition(":")
        signals.lane_child_setup(int(parent_pid))
    app = load(args)
    conf = app.conf
    conf.from_cli(worker_pool=args.pool, worker_concurrency=args.concurrency,
                  worker_prefetch=args.prefetch, task_soft_time_limit=args.soft_time_limit,
                  task_time_limit=args.time_limit,
                  worker_max_tasks_per_child=args.max_tasks_per_child,
                  worker_max_memory_per_child=args.max_memory_per_child,
                  worker_send_events=False if args.no_events else None,
                  worker_import_in_child=True if args.import_in_child else None)
    options = PoolOptions(max_tasks_per_child=conf.worker_max_tasks_per_child,
                          max_memory_per_child=conf.worker_max_memory_per_child,
                          import_in_child=bool(conf.worker_import_in_child), app_path=args.app)
    lanes_text = args.lane or conf.worker_lanes or []
    if lanes_text:
        lanes = [parse_lane(text, prefetch=conf.worker_prefetch, options=options) for text in lanes_text]
    else:
        queues = [q for q in (args.queues or conf.task_default_queue).split(",") if q]
        lanes = [LaneSpec(queues=queues, pool=conf.worker_pool,
                          concurrency=int(conf.worker_concurrency),
                          prefetch=int(conf.worker_prefetch), options=options,
                          isolate=False)]   # the one-lane worker is its pool's own process
    for lane in lanes:
        describe(lane.pool)
        resolve(lane.pool)   # a bad pool or class path fails here, before any connection
    supervisor = Supervisor(app, lanes, name=args.hostname, beat=args.beat)
    supervisor.parent = parent
    code = supervisor.run()
    # Threads abandoned by a hard limit or a cold shutdown must not hold the exit: everything
    # the worker owed Redis is written by now, so leave without waiting for them.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_purge(args: argparse.Namespace) -> int:
    app = load(args)
    broker = app.broker
    queues = [q for q in (args.queues or "").split(",") if q] or broker.known_queues()
    if not queues:
        print("no queues to purge")
        return 0
    if not args.force:
        if not sys.stdin.isatty():
            print(f"{PROG} purge: refusing to delete without confirmation (use -f)", file=sys.stderr)
            return 2
        answer = input(f"Delete every waiting message of {', '.join(queues)}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    total = 0
    for queue in queues:
        n = broker.purge(queue)
        total += n
        print(f"{queue}: {n} message(s) deleted")
    print(f"purged {total} message(s)")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from engine import embedded
    if args.action == "start":
        print(embedded.ensure_running())
    elif args.action == "stop":
        print("stopped" if embedded.stop() else "not running")
    else:
        info = embedded.status()
        print(json.dumps(info, indent=2))
        return 0 if info["running"] else 3
    return 0


def _delegate(module: str, function: str = "command") -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib
        return importlib.import_module(module).__dict__[function](args)
    return run


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "purge": cmd_purge,
    "broker": cmd_broker,
    "beat": _delegate("engine.beat"),
    "events": _delegate("engine.monitor"),
    "inspect": _delegate("engine.control", "inspect_command"),
    "control": _delegate("engine.control", "control_command"),
    "bench": _delegate("engine.benchmark"),
    "dashboard": _delegate("engine.dashboard"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _wants_gevent(argv):
        from gevent import monkey
        monkey.patch_all()
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "loglevel", "info"))
    from engine.exceptions import ConfigurationError
    try:
        return COMMANDS[args.command](args) or 0
    except ConfigurationError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
