"""Every ``signal.signal`` call of the engine, and the exit codes.

A table maps each signal to an intent. Handlers only put the intent on a wake-up queue that
the supervisor loop reads (as gunicorn's arbiter does); the loop hands each intent to one
named method. Exceptions: the solo pool's SIGALRM (it must raise inside the task) and the
child-side policy in ``child_setup``, which every forked child calls first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from typing import Callable

#: exit codes of ``engine run``
EXIT_OK = 0            # warm or cold shutdown that finished as asked
EXIT_ERROR = 1         # the worker could not start or crashed
EXIT_USAGE = 2         # bad command line, app, pool or class path

SHUTDOWN, COLD, CHILD, INFO = "shutdown", "cold", "child", "info"

#: signal -> intent; a second SHUTDOWN while one is in progress is read as cold, and
#: SIGQUIT is a cold shutdown at once (as Celery's worker reads it)
INTENTS = {
    signal.SIGTERM: SHUTDOWN,
    signal.SIGINT: SHUTDOWN,
    signal.SIGQUIT: COLD,
    signal.SIGCHLD: CHILD,
    signal.SIGUSR1: INFO,
}

_PR_SET_PDEATHSIG = 1


def install(wake: Callable[[str], None]) -> None:
    """Route every signal of INTENTS to ``wake(intent)``. Call from the main thread."""
    def handler(signum, frame):
        wake(INTENTS[signum])
    for signum in INTENTS:
        signal.signal(signum, handler)


@contextlib.contextmanager
def masked():
    """Block the signals of INTENTS in the calling thread while the block runs.

    The supervisor wraps every call that may start a thread (pool start, kill, grow,
    its own helper threads): new threads inherit the mask, so these signals always reach
    the main thread, which can then break out of a blocking wait (a warm shutdown joining
    pool threads) when a second signal asks for a cold one.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, list(INTENTS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def restore_defaults() -> None:
    for signum in INTENTS:
        signal.signal(signum, signal.SIG_DFL)


def install_alarm(fire: Callable[[], None]) -> None:
    """SIGALRM calls ``fire`` in the main thread; ``fire`` may raise into the running code."""
    signal.signal(signal.SIGALRM, lambda signum, frame: fire())


def install_interrupt(raise_soft: Callable[[], None], signum: int = signal.SIGUSR1) -> None:
    """In a pool child: ``signum`` raises the soft limit exception inside the running task."""
    signal.signal(signum, lambda s, f: raise_soft())


def child_setup(parent_pid: int) -> None:
    """First thing in every forked child: leave INT to the supervisor, die with the parent.

    On Linux the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG). If the parent
    already died between fork and here, exit at once. Elsewhere pools keep a pipe watchdog.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in INTENTS:
        if signum != signal.SIGINT:
            signal.signal(signum, signal.SIG_DFL)
    # a child forked while the supervisor masked signals (see ``masked``) inherits the mask
    signal.pthread_sigmask(signal.SIG_UNBLOCK, list(INTENTS))
    set_parent_death_signal()
    if os.getppid() != parent_pid:
        os._exit(EXIT_ERROR)


def lane_child_setup(parent_pid: int) -> None:
    """First thing in an isolated lane's ``engine run`` (``engine.worker.isolation``), and in
    each supervisor of ``engine run --processes N`` (``engine.worker.fleet``): take the
    signals the supervisor may have had blocked when it started us (the mask survives exec)
    and die with it (SIGKILL: its messages come back to the next process of that name)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, list(INTENTS))
    set_parent_death_signal()
    if os.getppid() != parent_pid:
        os._exit(EXIT_ERROR)


def set_parent_death_signal(signum: int = signal.SIGKILL) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
