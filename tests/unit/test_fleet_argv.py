"""The command line a fleet's supervisors get: the parent's options, however spelled."""

import pytest

from engine.cli import build_parser
from engine.cli_fleet import argv_of


def run_args(argv):
    parser = build_parser()
    return parser.command_parsers["run"], parser.parse_args(["run", *argv])


@pytest.mark.parametrize("argv", [
    ["--app", "proj", "-P", "threads", "-c", "3", "-Q", "a,b", "--prefetch", "2"],
    ["--app=proj", "--lane", "cpu=prefork:2", "--lane", "io=gevent:50", "--no-events"],
    ["-A", "proj", "--soft-time-limit", "1.5", "--time-limit=3", "-l", "DEBUG",
     "--import-in-child", "--log-format", "json", "--max-tasks-per-child", "7"],
    ["-A", "proj", "--pool=solo", "--conc", "1"],          # an abbreviation argparse takes
])
def test_options_survive_the_round_trip(argv):
    # Given the parent's parsed command line
    parser, args = run_args(argv)
    # When it is written out again and parsed
    _, again = run_args(argv_of(parser, args))
    # Then the supervisor sees the same options
    assert vars(again) == vars(args)


def test_the_fleet_options_are_left_out():
    parser, args = run_args(["-A", "proj", "--processes", "4", "-n", "w@h", "-B",
                             "--metrics-port", "9000"])
    argv = argv_of(parser, args, skip=("processes", "hostname", "beat", "metrics_port"))
    assert argv == ["--app", "proj"]
