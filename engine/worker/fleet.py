"""``engine run --processes N``: one small parent over N supervisors, so that one command
uses a machine with many cores (one supervisor's loop is one core's work).

The parent starts N ``engine run`` processes (the same options, without ``--processes``),
named ``<name>-1`` .. ``<name>-N``; it watches them (a supervisor that dies is started again,
after a doubling wait, under its name, so it takes back its unacknowledged messages at once),
forwards shutdown signals and exits when they all have. It never touches Redis or a pool.

Why fork+exec of ``python -m engine run`` rather than multiprocessing: each supervisor is
then exactly the process a plain ``engine run`` is (its own interpreter, no threads, locks or
Redis connections inherited from the parent, gevent patching decided on its own command
line), and the parent stays a loop of ``Popen`` objects, as ``engine.worker.isolation`` does
for lane processes.
"""

from __future__ import annotations

import logging
import queue
import signal
import subprocess
import sys
import time
from typing import Sequence

from engine.worker import ossignals

log = logging.getLogger("engine.worker")

#: seconds before the first restart of a supervisor that died; doubled at each death in a
#: row, up to RESTART_BACKOFF_MAX
RESTART_BACKOFF = 1.0
RESTART_BACKOFF_MAX = 30.0
#: seconds a supervisor must have run for its next death to count as the first in a row
STABLE_AFTER = 60.0
#: longest the parent's loop waits for a signal before it looks at its children again
POLL = 0.2


def member_names(base: str, n: int) -> list[str]:
    """The supervisors' names: ``base-1`` .. ``base-N`` (``-d 'base-*'`` reaches them all)."""
    return [f"{base}-{i}" for i in range(1, n + 1)]


class Member:
    """One supervisor slot of the fleet: its name, its command, its current process."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.deaths = 0                    # in a row (reset once it ran STABLE_AFTER)
        self.restart_at: float | None = None
        self.restarts = 0
        self.code: int | None = None       # the last exit code once it is over for good

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Fleet:
    """The parent's loop. ``commands[i]`` is the argument list (after ``python -m engine``)
    of supervisor ``names[i]``; each must carry ``--fleet-of <this pid>`` so that it dies
    with this process (``ossignals.lane_child_setup``)."""

    def __init__(self, names: Sequence[str], commands: Sequence[list[str]]) -> None:
        self.members = [Member(name, list(argv)) for name, argv in zip(names, commands)]
        self._intents: "queue.SimpleQueue[str]" = queue.SimpleQueue()
        self.shutdowns = 0                 # shutdown signals received (2nd: cold)
        self.usage_error = False

    # -- life cycle --------------------------------------------------------------------
    def run(self) -> int:
        """Start every supervisor, watch them until all ended; the exit code (EXIT_USAGE if
        one refused to start, EXIT_ERROR if any ended otherwise than cleanly)."""
        ossignals.install(self._intents.put)   # put is reentrant: safe in a handler
        log.info("starting %d supervisors: %s", len(self.members),
                 ", ".join(m.name for m in self.members))
        for member in self.members:
            self._start(member)
        while not self._over():
            try:
                intent = self._intents.get(timeout=POLL)
            except queue.Empty:
                intent = None
            if intent is not None:
                self.handle(intent)
            self._reap()
            self._restart_due()
        ossignals.restore_defaults()
        codes = {m.name: m.code for m in self.members}
        failed = {name: code for name, code in codes.items() if code}
        if failed:
            log.error("supervisors that did not stop cleanly: %s", ", ".join(
                f"{name} ({_how(code)})" for name, code in failed.items()))
        log.info("all %d supervisors stopped", len(self.members))
        if self.usage_error:
            return ossignals.EXIT_USAGE
        return ossignals.EXIT_ERROR if failed else ossignals.EXIT_OK

    def handle(self, intent: str) -> None:
        """A signal's intent: shutdown is forwarded as SIGTERM to every live supervisor
        (each reads a second one as cold, as a lone ``engine run`` does), a cold one
        (SIGQUIT) as SIGQUIT; info as SIGUSR1."""
        if intent in (ossignals.SHUTDOWN, ossignals.COLD):
            self.shutdowns += 1 if intent == ossignals.SHUTDOWN else 2
            log.info("%s shutdown of %d supervisors", "warm" if self.shutdowns == 1 else "cold",
                     sum(m.alive for m in self.members))
            for member in self.members:
                member.restart_at = None      # nothing starts again once we stop
            self._signal_all(signal.SIGTERM if intent == ossignals.SHUTDOWN else signal.SIGQUIT)
        elif intent == ossignals.INFO:
            self._signal_all(signal.SIGUSR1)
        # CHILD: the loop reaps next anyway

    def _signal_all(self, signum: int) -> None:
        for member in self.members:
            if member.alive:
                try:
                    member.proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    # -- children ----------------------------------------------------------------------
    def _start(self, member: Member) -> None:
        member.restart_at = None
        member.code = None
        member.proc = _spawn(member.argv)
        member.started = time.monotonic()
        log.info("supervisor %s started (pid %d)", member.name, member.proc.pid)

    def _reap(self) -> None:
        for member in self.members:
            if member.proc is None or member.code is not None or member.restart_at is not None:
                continue
            code = member.proc.poll()
            if code is None:
                continue
            self._ended(member, code)

    def _ended(self, member: Member, code: int) -> None:
        """Over for good when we stop, when it stopped by itself (exit 0: a control
        shutdown) or refused to start (exit 2: its name taken, say); else started again."""
        if self.shutdowns:
            # killed by our SIGTERM before it could install its handlers: a clean stop too
            member.code = 0 if code == -signal.SIGTERM else code
            return
        if code == ossignals.EXIT_OK:
            log.info("supervisor %s stopped by itself; not restarted", member.name)
            member.code = code
            return
        if code == ossignals.EXIT_USAGE:
            log.error("supervisor %s could not start (exit 2); stopping the others", member.name)
            member.code = code
            self.usage_error = True
            self.handle(ossignals.SHUTDOWN)
            return
        now = time.monotonic()
        member.deaths = 1 if now - member.started >= STABLE_AFTER else member.deaths + 1
        delay = min(RESTART_BACKOFF * 2 ** (member.deaths - 1), RESTART_BACKOFF_MAX)
        member.restart_at = now + delay
        log.warning("supervisor %s (pid %d) died (%s); starting it again in %g s",
                    member.name, member.proc.pid, _how(code), delay)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for member in self.members:
            if member.restart_at is not None and now >= member.restart_at:
                member.restarts += 1
                self._start(member)

    def _over(self) -> bool:
        return all(m.code is not None and not m.alive for m in self.members)


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _spawn(argv: list[str]) -> subprocess.Popen:
    # A process group of its own: a terminal's Ctrl-C reaches the parent only, which
    # forwards it once (a second copy straight from the terminal would make it cold).
    # Logs go to the parent's stdout and stderr.
    return subprocess.Popen([sys.executable, "-m", "engine", *argv], stdin=subprocess.DEVNULL,
                            process_group=0, close_fds=True)


def run(names: Sequence[str], commands: Sequence[list[str]]) -> int:
    """``engine run --processes N``: the fleet's exit code."""
    return Fleet(names, commands).run()
