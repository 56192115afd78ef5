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
LOG_LEVELS = ("debug", "info", "warning", "error")


def _command_index(argv: list[str]) -> int:
    """Where the command word is: after the global options (``engine -A proj run``)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-A", "--app"):
            i += 2
        elif arg.startswith("--app=") or (arg.startswith("-A") and len(arg) > 2):
            i += 1
        else:
            return i
    return i


def _wants_gevent(argv: list[str]) -> bool:
    start = _command_index(argv)
    argv = argv[start:]
    if not argv or argv[0] != "run":
        return False
    for i, arg in enumerate(argv):
        if arg in ("--pool", "-P") and i + 1 < len(argv) and argv[i + 1] == "gevent":
            return True
        if arg in ("--pool=gevent", "-Pgevent"):
            return True
    return False


def _above(kind: type, floor: float, what: str) -> Callable[[str], float]:
    """An argparse type: ``kind(text)`` at least ``floor`` (int) or above it (float)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < floor or (kind is float and value == floor):
            bound = f"at least {floor}" if kind is int else f"above {floor:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    return parse


_positive_int = _above(int, 1, "a whole number")
_seconds = _above(float, 0.0, "seconds")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:   # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from engine.control import CONTROL_VERBS, INSPECT_VERBS   # msgpack only: gevent-safe
    parser = _Parser(prog=PROG, description="A task engine: producers send tasks through "
                     "Redis; workers run them in interchangeable pools.")
    from engine import __version__
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    # before the command too, as Celery users type it (``engine -A proj run``); a separate
    # dest: a subparser's default would overwrite the value otherwise
    parser.add_argument("-A", "--app", dest="global_app", metavar="APP",
                        help="module or module:attribute of the Engine app, for any command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def app_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("-A", "--app", default=None,
                       help="module or module:attribute of the Engine app (default: the "
                       "global -A, then $ENGINE_APP)")

    def loglevel_arg(p: argparse.ArgumentParser, default: str) -> None:
        p.add_argument("-l", "--loglevel", default=default, type=str.lower, choices=LOG_LEVELS,
                       metavar="LEVEL", help=f"{', '.join(LOG_LEVELS)}, in any case "
                       f"(default {default}; debug also shows tracebacks of a failed app import)")

    run = sub.add_parser("run", help="start a worker")
    app_arg(run)
    run.add_argument("-P", "--pool", help="prefork, gevent, threads, solo, asyncio, custom "
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
    run.add_argument("--processes", type=_positive_int, metavar="N",
                     help="start N supervisors, each with its own pool (-c slots each), named "
                     "NAME-1 .. NAME-N (-d 'NAME-*' reaches them all), watched and stopped "
                     "together by this process (default: worker_processes, 1: no parent)")
    # internal: this worker is supervisor of the fleet of PID (engine.worker.fleet)
    run.add_argument("--fleet-of", type=int, help=argparse.SUPPRESS)
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
    loglevel_arg(run, "info")
    run.add_argument("--metrics-port", type=_port, help="serve Prometheus metrics of this "
                     "worker on this port (0: any free port; default: worker_metrics_port)")
    run.add_argument("--log-format", choices=["text", "json"],
                     help="text, or json: one JSON object a line (default: worker_log_format)")
    from engine import celeryflags   # standard library only: gevent-safe
    celeryflags.add(run)

    beat = sub.add_parser("beat", help="run the periodic task scheduler")
    app_arg(beat)
    loglevel_arg(beat, "info")

    events = sub.add_parser("events", help="live terminal monitor of workers, queues and tasks")
    app_arg(events)
    loglevel_arg(events, "warning")   # quiet: info lines only with -l info/debug
    events.add_argument("--dump", action="store_true", help="print one JSON event a line")
    events.add_argument("--since", default="$", help="with --dump: stream id to start from (0: all)")

    def reply_args(p: argparse.ArgumentParser) -> None:
        """Whom to ask and how long to wait: inspect and control alike."""
        p.add_argument("-d", "--destination", help="comma-separated worker names or "
                       "patterns, e.g. 'w@myhost-*' for the supervisors of one --processes N "
                       "(default all)")
        p.add_argument("-t", "--timeout", type=_seconds, default=1.0,
                       help="seconds to wait for replies")
        p.add_argument("--json", action="store_true", help="print JSON")

    inspect = sub.add_parser("inspect", help="ask running workers")
    app_arg(inspect)
    loglevel_arg(inspect, "warning")   # quiet: info lines only with -l info/debug
    inspect.add_argument("verb", choices=INSPECT_VERBS)
    reply_args(inspect)

    ctl = sub.add_parser("control", help="steer running workers")
    app_arg(ctl)
    loglevel_arg(ctl, "warning")   # quiet: info lines only with -l info/debug
    ctl.add_argument("verb", choices=CONTROL_VERBS, type=lambda verb: verb.replace("_", "-"),
                     help="(pool_grow and pool_shrink, Celery's spelling, work too)")
    ctl.add_argument("argument", nargs="?", help="task id for revoke, N for pool-grow/shrink, "
                     "task name for rate-limit, queue for pause/resume")
    ctl.add_argument("value", nargs="?",
                     help="for rate-limit: N/s, N/m, N/h or N (per second; 0: none)")
    ctl.add_argument("--lane", help="for pool-grow/shrink: the lane (default: the first)")
    ctl.add_argument("--terminate", action="store_true", help="for revoke: end it if running")
    reply_args(ctl)

    purge = sub.add_parser("purge", help="delete waiting messages")
    app_arg(purge)
    loglevel_arg(purge, "warning")   # quiet: info lines only with -l info/debug
    purge.add_argument("-Q", "--queues", help="comma-separated queues (default: all known)")
    purge.add_argument("-f", "--force", action="store_true", help="do not ask")

    bench = sub.add_parser("bench", help="measure a worker on this machine")
    bench.add_argument("--pool", default="prefork")
    bench.add_argument("-c", "--concurrency", type=_positive_int, default=None)
    bench.add_argument("--processes", type=_positive_int, default=1, metavar="N",
                       help="run the worker as engine run --processes N (-c slots each)")
    bench.add_argument("-n", "--tasks", type=_positive_int, default=None,
                       help="tasks to run (default: noop 20000, sleep and asleep 2000, cpu 200, "
                       "payload 5000)")
    bench.add_argument("--kind", default="noop",
                       choices=["noop", "sleep", "asleep", "cpu", "payload", "noop-limited",
                                "noop-levels"],
                       help="asleep: await asyncio.sleep (an async def task); noop-limited: "
                       "under a rate limit that never binds; noop-levels: spread over "
                       "priorities 0, 4 and 9")
    bench.add_argument("--payload-bytes", type=_positive_int, default=10240)
    bench.add_argument("--broker", help="Redis URL (default: the embedded Redis)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--metrics-port", type=_port,
                       help="run the worker with --metrics-port (0: any free port)")
    bench.add_argument("--events", choices=["on", "off"], default="on",
                       help="on (default): the worker sends task events and they are read "
                       "here by the monitor's model, as engine monitor reads them; off: "
                       "--no-events, completion read from the queue's depth, no latency")
    bench.add_argument("--tracing", action="store_true",
                       help="ENGINE_TRACING=1 for the producer and the worker, spans to an "
                       "OpenTelemetry SDK provider with a no-op exporter (needs "
                       "opentelemetry-sdk); every task sent by delay()")

    exporter = sub.add_parser("exporter", help="Prometheus figures of the whole fleet, read "
                              "from Redis (queue depths, dead letters, workers online)")
    app_arg(exporter)
    exporter.add_argument("--port", type=_port, default=9809, help="0: any free port")
    exporter.add_argument("--address", default="0.0.0.0")
    exporter.add_argument("-l", "--loglevel", default="info",
                          choices=["debug", "info", "warning", "error"])
    exporter.add_argument("--log-format", choices=["text", "json"])

    broker = sub.add_parser("broker", help="the embedded Redis")
    broker.add_argument("action", choices=["start", "stop", "status"],
                        help="status: the configured broker ($ENGINE_BROKER_URL) when one is "
                        "set, else the embedded Redis")
    broker.add_argument("--json", action="store_true", help="status: print JSON")
    broker.add_argument("--queue", action="append", default=[], metavar="NAME",
                        help="status on a Redis Cluster: show this queue's slot and master "
                        "too (repeatable; known queues are always shown)")

    dash = sub.add_parser("dashboard", help="web dashboard of the fleet")
    app_arg(dash)
    dash.add_argument("--port", type=_positive_int, default=5555,
                      help="TCP port to listen on (default 5555)")
    dash.add_argument("--address", default="127.0.0.1",
                      help="address to listen on (default 127.0.0.1: this machine only; "
                      "0.0.0.0 or :: for every interface)")
    dash.add_argument("--basic-auth", default=os.environ.get("ENGINE_DASHBOARD_AUTH"),
                      help="user:password (or $ENGINE_DASHBOARD_AUTH)")
    dash.add_argument("--insecure-no-auth", action="store_true",
                      help="listen on a non-loopback address without a password anyway")
    dash.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                      help="a Host name to accept besides the bound address and loopback "
                           "names (repeatable; '*.example.com' patterns, '*' for any)")
    dash.add_argument("--url-prefix", metavar="PATH",
                      help="serve every page, asset and API under PATH, e.g. /ops/engine, "
                           "for a reverse proxy that forwards that path unchanged (default: "
                           "the dashboard_url_prefix setting, else /)")
    parser.command_parsers = sub.choices   # type: ignore[attr-defined]  # for run_fleet
    return parser


def setup_logging(level: str, fmt: str = "text") -> None:
    from engine import logs   # standard library only: gevent-safe
    logs.configure(level, fmt)


def load(args: argparse.Namespace):
    from engine.app import load_app
    from engine.worker import hooks
    app = load_app(args.app or "")
    hooks.hand_over_logging(getattr(args, "loglevel", "info"))
    return app


# -- commands ---------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from engine.worker.supervisor import Supervisor
    from engine.worker.lanespec import LaneSpec, parse_lane
    from pools import describe, resolve
    from pools.base import PoolOptions
    parent = None
    if args.lane_of:
        from engine.worker import ossignals as signals
        parent_pid, _, parent = args.lane_of.partition(":")
        signals.lane_child_setup(int(parent_pid))
    elif args.fleet_of:   # a supervisor of ``--processes N``: a worker of its own otherwise
        from engine.worker import ossignals as signals
        signals.lane_child_setup(args.fleet_of)
    app = load(args)
    from engine import celeryflags
    from engine.exceptions import ConfigurationError
    try:
        celeryflags.apply(args)   # Celery's flags: ours, or one line saying they do nothing
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    conf = app.conf
    conf.from_cli(worker_pool=args.pool, worker_concurrency=args.concurrency,
                  worker_prefetch=args.prefetch, task_soft_time_limit=args.soft_time_limit,
                  task_time_limit=args.time_limit,
                  worker_max_tasks_per_child=args.max_tasks_per_child,
                  worker_max_memory_per_child=args.max_memory_per_child,
                  worker_send_events=False if args.no_events else None,
                  worker_import_in_child=True if args.import_in_child else None,
                  worker_log_format=args.log_format, worker_metrics_port=args.metrics_port,
                  worker_processes=args.processes)
    if conf.worker_log_format != (args.log_format or "text"):
        setup_logging(args.loglevel, conf.worker_log_format)   # the app's setting
    options = PoolOptions(max_tasks_per_child=conf.worker_max_tasks_per_child,
                          max_memory_per_child=conf.worker_max_memory_per_child,
                          import_in_child=bool(conf.worker_import_in_child), app_path=args.app)
    lanes_text = args.lane or conf.worker_lanes or []
    if lanes_text and args.exclude_queues:
        raise ConfigurationError("-X works with -Q or the default queue, not with lanes: "
                                 "leave the queue out of the lanes instead")
    if lanes_text:
        lanes = [parse_lane(text, prefetch=conf.worker_prefetch, options=options) for text in lanes_text]
    else:
        queues = [q for q in (args.queues or conf.task_default_queue).split(",") if q]
        try:
            queues = celeryflags.exclude(queues, args)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        lanes = [LaneSpec(queues=queues, pool=conf.worker_pool,
                          concurrency=int(conf.worker_concurrency),
                          prefetch=int(conf.worker_prefetch), options=options,
                          isolate=False)]   # the one-lane worker is its pool's own process
    from engine.worker import hooks
    from engine.worker.isolation import wants_isolation
    here = []   # the pools of the lanes that run in this process
    for lane in lanes:
        describe(lane.pool)
        pool_cls = resolve(lane.pool)   # a bad pool or class path fails here, before any connection
        if lane.options.max_tasks_per_child and "recycle" not in pool_cls.capabilities:
            raise ConfigurationError(
                f"the {lane.pool} pool cannot recycle its slots: --max-tasks-per-child "
                f"(worker_max_tasks_per_child) needs "
                f"-P prefork (Celery ignores it for {lane.pool}: drop it, or use prefork)")
        if not wants_isolation(lane, pool_cls):
            here.append(pool_cls)
    if args.purge and parent is None and not args.fleet_of:   # once per fleet
        queues = sorted({q for lane in lanes for q in lane.queues})
        purged = sum(app.broker.purge(q) for q in queues)
        logging.getLogger("engine.worker").info(
            "--purge: deleted %d waiting message(s) of %s", purged, ", ".join(queues))
    processes = conf.worker_processes
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        from engine.exceptions import ConfigurationError
        raise ConfigurationError(f"worker_processes must be a whole number, at least 1, "
                                 f"got {processes!r}")
    if processes > 1 and not (args.lane_of or args.fleet_of):
        from engine.cli_fleet import run_fleet
        return run_fleet(args, processes, conf, build_parser().command_parsers["run"])
    from engine.console import banner
    supervisor = Supervisor(app, lanes, name=args.hostname, beat=args.beat, parent=parent)
    hooks.worker_init(supervisor)
    runs_tasks = hooks.runs_tasks_here(here)
    if runs_tasks:
        hooks.process_init()
    code = supervisor.run(on_ready=lambda sup: logging.getLogger("engine.worker").info(
        "%s", banner(sup)))
    if runs_tasks:
        hooks.process_shutdown(code)
    hooks.worker_shutdown(supervisor)
    # Threads abandoned by a hard limit or a cold shutdown must not hold the exit: everything
    # the worker owed Redis is written by now, so leave without waiting for them.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_purge(args: argparse.Namespace) -> int:
    from engine.connection import probe
    app = load(args)
    probe(app.broker_url, transport_options=app.conf.get("broker_transport_options"))
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
        return _broker_status(args)
    return 0


def _broker_status(args: argparse.Namespace) -> int:
    """The configured broker when a URL is set (exit 1 if it does not answer), else the
    embedded Redis (exit 3 when it is not running); a table, or JSON with ``--json``."""
    from engine import embedded
    from engine.config import Config
    from engine.console import format_broker_status
    url = Config().broker_url
    if url:
        from engine.connection import server_info
        # BrokerUnavailable: one line and exit 1 (main)
        info = server_info(url, prefix=Config().key_prefix, queues=tuple(args.queue))
    else:
        info = dict(embedded.status(), configured=False)
    print(json.dumps(info, indent=2) if args.json else format_broker_status(info))
    return 0 if info["running"] else 3


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
    "inspect": _delegate("engine.console", "inspect_command"),
    "control": _delegate("engine.console", "control_command"),
    "bench": _delegate("engine.benchmark"),
    "dashboard": _delegate("engine.dashboard"),
    "exporter": _delegate("engine.exporter"),
}


def _unreachable(exc: Exception) -> str | None:
    """One line for a broker that cannot be reached or an address the dashboard cannot
    listen on (never a traceback); None for anything else."""
    from engine.exceptions import BrokerUnavailable, CannotListen
    if isinstance(exc, (BrokerUnavailable, CannotListen)):
        return str(exc)
    import redis
    from engine.connection import reason
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return f"lost the broker: {reason(exc)}"
    if isinstance(exc, redis.AuthenticationError):   # redis-py's text never has the password
        return f"the broker refused our credentials: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _wants_gevent(argv):
        from gevent import monkey
        monkey.patch_all()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:   # bare ``engine``: the usage, as a mistake (exit 2)
        parser.print_help(sys.stderr)
        return 2
    if hasattr(args, "app"):
        args.app = args.app or args.global_app or os.environ.get("ENGINE_APP")
    setup_logging(getattr(args, "loglevel", "info"), getattr(args, "log_format", None) or "text")
    from engine.exceptions import ConfigurationError
    try:
        return COMMANDS[args.command](args) or 0
    except ConfigurationError as exc:
        if exc.__cause__ is not None and logging.getLogger().isEnabledFor(logging.DEBUG):
            import traceback   # -l debug: how the app's import failed, in full
            traceback.print_exception(exc.__cause__)
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        line = _unreachable(exc)
        if line is None:
            raise
        print(f"{PROG} {args.command}: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
