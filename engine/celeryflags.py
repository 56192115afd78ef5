"""Celery's worker flags on ``engine run``: their nearest meaning here, or a documented
no-op, each with one log line saying what became of it.

Standard library only: ``engine.cli`` builds its parser before gevent may patch the
process. ``add`` declares the flags; ``apply`` turns them into ours after the app is loaded
(the log lines go out then, through the worker's logging), ``exclude`` takes ``-X`` queues
out of a queue list.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("engine.worker")

#: flag -> why it changes nothing here
NO_OPS = {
    "without_gossip": ("--without-gossip", "workers do not gossip; each reads the shared "
                       "state (revocations, rate limits, pauses) from Redis"),
    "without_mingle": ("--without-mingle", "a starting worker has nothing to sync with its "
                       "peers; it reads revocations from Redis"),
    "without_heartbeat": ("--without-heartbeat", "the heartbeat in Redis is how other "
                          "workers know this one is alive; it stays on"),
}


def _autoscale(text: str) -> tuple[int, int]:
    """``MAX,MIN`` or ``MAX``, as Celery takes it: MAX at least 1, MIN at least 0."""
    try:
        numbers = [int(p) for p in text.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or numbers[0] < 1 or numbers[-1] < 0:
        raise argparse.ArgumentTypeError(f"expected MAX,MIN (e.g. 10,3), got {text!r}")
    return numbers[0], numbers[1] if len(numbers) == 2 else 0


def _multiplier(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return value


def add(run: argparse.ArgumentParser) -> None:
    """Celery's worker flags, grouped under their own heading in ``engine run --help``."""
    group = run.add_argument_group("Celery's worker flags", "accepted for command lines "
                                   "written for Celery; each logs what it became here")
    group.add_argument("--autoscale", type=_autoscale, metavar="MAX,MIN",
                       help="no autoscaling here: runs MAX slots (unless -c is given); "
                       "resize a running worker with engine control pool-grow/pool-shrink")
    group.add_argument("--prefetch-multiplier", type=_multiplier, metavar="N",
                       help="read as --prefetch N (messages per slot at most); 0: our "
                       "default")
    group.add_argument("-O", dest="optimization", choices=["fair", "default"],
                       help="no-op: slots are fed as they free up, within --prefetch")
    group.add_argument("-E", "--task-events", action="store_true",
                       help="no-op: events are on unless --no-events")
    group.add_argument("--purge", "--discard", action="store_true",
                       help="delete the waiting and delayed messages of the worker's "
                       "queues before it starts")
    for dest, (flag, why) in NO_OPS.items():
        group.add_argument(flag, dest=dest, action="store_true", help=f"no-op: {why}")
    group.add_argument("-X", "--exclude-queues", metavar="QUEUES",
                       help="comma-separated queues not to consume from -Q (or the default "
                       "queue)")


def apply(args: argparse.Namespace) -> None:
    """Map the given Celery flags onto ours (on ``args``) and log one line for each."""
    if args.task_events and args.no_events:
        raise ValueError("-E and --no-events contradict each other")
    if args.autoscale is not None:
        high, low = args.autoscale
        if args.concurrency is None:
            args.concurrency = high
        log.info("--autoscale %d,%d: no autoscaling here; running %d slots (engine control "
                 "pool-grow/pool-shrink resize a running worker)", high, low, args.concurrency)
    if args.prefetch_multiplier is not None:
        if args.prefetch is None and args.prefetch_multiplier > 0:
            args.prefetch = args.prefetch_multiplier
        log.info("--prefetch-multiplier %d: read as --prefetch %s (messages per slot at most)",
                 args.prefetch_multiplier, args.prefetch or "default")
    if args.optimization:
        log.info("-O %s: no-op (slots are fed as they free up, within --prefetch)",
                 args.optimization)
    if args.task_events:
        log.info("-E: no-op (task events are on by default; --no-events turns them off)")
    for dest, (flag, why) in NO_OPS.items():
        if getattr(args, dest):
            log.info("%s: no-op (%s)", flag, why)


def exclude(queues: list[str], args: argparse.Namespace) -> list[str]:
    """``queues`` without those of ``-X``; ValueError when none is left."""
    if not args.exclude_queues:
        return queues
    excluded = {q for q in args.exclude_queues.split(",") if q}
    kept = [q for q in queues if q not in excluded]
    if not kept:
        raise ValueError(f"-X {args.exclude_queues} excludes every queue of this worker "
                         f"({', '.join(queues)})")
    log.info("-X %s: consuming %s", args.exclude_queues, ", ".join(kept))
    return kept
