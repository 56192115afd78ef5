"""The prefork pool's records of its children and of the jobs it holds, and the process
helpers around them (signal, wait, describe an exit, the import-in-child set-up).

``pools.prefork`` (the pool) keeps these records; nothing here talks to a child.
"""

from __future__ import annotations

import importlib
import os
import signal
from dataclasses import dataclass
from typing import Callable, Iterable

from pools.prefork import child as _child
from pools.prefork import shm


@dataclass(slots=True)
class Held:
    """A submitted job the pool still owes an Outcome for (the values of ``_jobs``)."""

    job_id: str
    slot: int                     # its work slot, reserved from submit until the outcome
    child: int = -1               # index of the child running it; -1 while it is on offer
    start_reported: bool = False  # on_start was called: once, even if a kill made it rerun


class Child:
    __slots__ = ("index", "pid", "outbox", "killed", "retiring", "status")

    def __init__(self, index: int, pid: int, outbox: shm.Outbox) -> None:
        self.index, self.pid, self.outbox = index, pid, outbox
        self.killed = False       # we sent SIGKILL: what it held is not its fault
        self.retiring = False     # shrink: exits when idle, not replaced
        self.status = -1          # the wait status once reaped


def holding(kids: Iterable[Child], seq: int, slot: int, *,
            besides: Child | None = None) -> Child | None:
    """The child whose status says it holds job ``seq`` (claiming or owning its ``slot``, or
    running it), ``besides`` left out; None when none does."""
    for kid in kids:
        if kid is besides:
            continue
        ob = kid.outbox
        phase = ob.phase
        if (phase in (shm.CLAIMING, shm.OWNS) and ob.slot == slot) or \
                (phase == shm.RUNNING and ob.seq == seq):
            return kid
    return None


def import_setup(path: str, load_app: Callable[[str], object] | None) -> Callable[[], None]:
    """What a child runs first with import_in_child: load the app (or import its module)."""
    if load_app is None:
        try:
            from engine.app import load_app   # type: ignore[attr-defined]
        except ImportError:
            load_app = None

    def setup() -> None:
        if load_app is not None:
            load_app(path)
        else:
            importlib.import_module(path.split(":")[0])
    return setup


def signal_pid(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def waitpid(pid: int, *, block: bool) -> int | None:
    """The wait status once ``pid`` has exited (-1 if someone else reaped it), else None."""
    try:
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return -1
    return status if done else None


def describe_exit(kid: Child) -> str:
    if kid.outbox.reason == _child.CRASHED:
        return "crashed in the pool loop"
    if kid.status < 0:
        return "reaped elsewhere"
    if os.WIFSIGNALED(kid.status):
        sig = os.WTERMSIG(kid.status)
        try:
            return f"signal {signal.Signals(sig).name}"
        except ValueError:
            return f"signal {sig}"
    return f"exit code {os.WEXITSTATUS(kid.status)}"
