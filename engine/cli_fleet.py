"""The command line of ``engine run --processes N``: this process becomes the parent of N
supervisors (``engine.worker.fleet`` starts, watches and stops them), each started with the
command line this one was given, rebuilt from what argparse parsed."""

from __future__ import annotations

import argparse
import os


def run_fleet(args: argparse.Namespace, processes: int, conf,
              run_parser: argparse.ArgumentParser) -> int:
    """``--processes N``: this process becomes the parent of N supervisors
    (``engine.worker.fleet``), each started with this command line but its own name, only
    the first with ``-B``, and with ``--metrics-port P`` on P, P+1, ... (0: any free port)."""
    from engine.worker import fleet
    from engine.worker.presence import default_name
    import socket
    names = fleet.member_names((args.hostname or default_name()).replace(
        "%h", socket.gethostname()), processes)
    common = argv_of(run_parser, args, skip=("processes", "hostname", "beat", "metrics_port",
                                              "fleet_of", "lane_of"))
    commands = []
    for i, name in enumerate(names):
        argv = ["run", *common, "-n", name, "--fleet-of", str(os.getpid())]
        if args.beat and i == 0:
            argv.append("--beat")
        port = conf.worker_metrics_port
        if port is not None:
            argv += ["--metrics-port", str(port + i if port else 0)]
        commands.append(argv)
    return fleet.run(names, commands)


def argv_of(parser: argparse.ArgumentParser, args: argparse.Namespace, *,
             skip: tuple[str, ...] = ()) -> list[str]:
    """The options of ``parser`` that parse to ``args`` (those left at their default out):
    what was typed, whichever spelling or abbreviation was used."""
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in skip or action.dest == "help":
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default:
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:
            argv.append(flag)
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv
