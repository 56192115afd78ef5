"""Isolated lanes: a lane whose pool cannot share the supervisor's process runs in a child.

The child is a one-lane ``engine run`` named ``<supervisor>.<lane>`` that does all of the
lane's Redis traffic itself (fetch, results, acks, events, heartbeat), so the supervisor is
never monkey-patched and a restarted child takes back what its predecessor held (the
own-pending takeover at start). The supervisor starts, watches (exit, resident memory),
restarts and stops it here, reads its heartbeat snapshot for stats, and forwards control
commands on the child's own channel ``P:control:<child name>``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

import psutil
import redis

from engine import control, limits
from engine.exceptions import ConfigurationError, NotSupported
from engine.worker.lanes import Delivery, Lane
from engine.worker.snapshot import LaneInfo, WorkerSnapshot
from pools.base import Pool

if TYPE_CHECKING:
    from engine.worker.lanespec import LaneSpec

log = logging.getLogger("engine.worker")

#: seconds ``start`` waits for a lane process's first heartbeat before going on without it
START_TIMEOUT = 60.0
#: seconds between restarts of a lane process that keeps dying young, doubled up to the max
RESTART_BACKOFF, RESTART_BACKOFF_MAX = 1.0, 30.0
#: a lane process that ran this long before dying is restarted at once
STABLE_AFTER = 10.0
#: seconds between reads of a lane process's resident memory (max-memory) and snapshot
WATCH_INTERVAL = 1.0
#: seconds a cold stop gives the child's own cold shutdown before SIGKILL
KILL_AFTER = 3.0
#: seconds a warm stop waits beyond ``worker_shutdown_timeout`` (the child's own budget)
STOP_MARGIN = 10.0


def wants_isolation(spec: "LaneSpec", pool_cls: type[Pool]) -> bool:
    """Whether a lane runs in a child process: asked per lane (``isolate=yes|no``), else
    when the pool needs a process of its own (gevent), or when the lane has max-memory and
    its pool cannot recycle its slots (threads): then the whole process is recycled."""
    if spec.isolate is not None:
        return spec.isolate
    if pool_cls.needs_own_process:
        return True
    return bool(spec.options.max_memory_per_child) and "recycle" not in pool_cls.capabilities


def child_name(supervisor_name: str, lane_name: str) -> str:
    # commas separate names in ``-d``: a lane "io,mail" becomes "io+mail"
    return supervisor_name + "." + re.sub(r"[^\w.@-]+", "+", lane_name)


def control_channel(keys: Any, worker_name: str) -> str:
    """The pub/sub channel a lane process listens on instead of the broadcast one."""
    return f"{keys.control}:{worker_name}"


class ProcessLane(Lane):
    """A lane whose pool runs in a one-lane ``engine run`` child.

    It fetches nothing in the supervisor's process: the child fetches, runs and writes by
    itself (so its ``streams`` are empty and its buffer always is). ``start`` returns once
    the child sent its first heartbeat; ``maintain`` restarts a dead child and recycles one
    over max-memory (SIGTERM: the child gives back what it prefetched and finishes what
    runs; then a fresh child starts under the same name); ``stop_fetching`` begins the
    child's warm shutdown (every lane drains at once), ``stop`` waits for it, ``terminate``
    is the child's cold one.
    """

    def __init__(self, spec: "LaneSpec", pool_cls: type[Pool], *, app: Any,
                 supervisor_name: str) -> None:
        self.spec = spec
        self.name = spec.name
        self.queues = list(spec.queues)
        self.streams: list[str] = []     # read by the child only
        self.pool_cls = pool_cls
        self.pool_name = getattr(pool_cls, "name", spec.pool)
        self.capabilities = frozenset(pool_cls.capabilities) & {"grow", "shrink"}
        self.concurrency = spec.concurrency
        self.app = app
        keys = app.broker.keys
        self.parent_name = supervisor_name
        self.worker_name = child_name(supervisor_name, spec.name)
        self.snapshot_key = keys.worker(self.worker_name)
        self.channel = control_channel(keys, self.worker_name)
        recycles_itself = "recycle" in pool_cls.capabilities
        #: KiB of the child's tree past which the supervisor recycles the whole process
        self.max_memory = None if recycles_itself else spec.options.max_memory_per_child
        self.proc: subprocess.Popen | None = None
        self.state = "new"          # running, recycling, restarting, stopping, stopped
        self.restarts = 0           # after a crash or kill
        self.recycles = 0           # after max-memory
        self.rss = 0                # KiB, last reading
        self._term_sent = False
        self._started = 0.0
        self._restart_at: float | None = None
        self._backoff = RESTART_BACKOFF
        self._next_watch = 0.0
        self._snapshot: WorkerSnapshot | None = None
        self._ended = {"processed": 0, "failed": 0}   # totals of children that ended

    # -- the child's command line ------------------------------------------------------
    def command(self) -> list[str]:
        spec, conf, options = self.spec, self.app.conf, self.spec.options
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        argv = [sys.executable, "-m", "engine", "run", "--pool", spec.pool,
                "-c", str(self.concurrency), "-Q", ",".join(spec.queues),
                "--prefetch", str(spec.prefetch), "-n", self.worker_name,
                "--lane-of", f"{os.getpid()}:{self.parent_name}",
                "-l", level if level in ("debug", "info", "warning", "error") else "info"]
        if options.app_path:
            argv += ["-A", options.app_path]    # else $ENGINE_APP, inherited
        soft = spec.soft_time_limit or conf.task_soft_time_limit
        hard = spec.time_limit or conf.task_time_limit
        if soft:
            argv += ["--soft-time-limit", str(soft)]
        if hard:
            argv += ["--time-limit", str(hard)]
        if options.max_tasks_per_child:
            argv += ["--max-tasks-per-child", str(options.max_tasks_per_child)]
        if options.max_memory_per_child and self.max_memory is None:
            argv += ["--max-memory-per-child", str(options.max_memory_per_child)]
        if options.import_in_child:
            argv.append("--import-in-child")
        if not conf.worker_send_events:
            argv.append("--no-events")
        if conf.worker_log_format != "text":
            argv += ["--log-format", conf.worker_log_format]
        return argv

    # -- life cycle --------------------------------------------------------------------
    def _spawn(self) -> None:
        # A session of its own: a terminal's Ctrl-C reaches the supervisor only, which
        # then stops the child (a second INT straight to the child would make it cold).
        # The child sets its parent-death signal itself (signals.lane_child_setup): a
        # preexec_fn is not safe in this threaded process.
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     start_new_session=True, close_fds=True)
        self._term_sent = False
        self._started = limits.now()
        self._next_watch = self._started + WATCH_INTERVAL
        self.state = "running"
        log.info("lane %s: started %s process %s (pid %d)", self.spec.name, self.pool_name,
                 self.worker_name, self.proc.pid)

    def start(self, take_back: Callable[[Lane], None]) -> None:
        # the child takes back what its name held itself, before it fetches
        self._spawn()
        deadline = limits.now() + START_TIMEOUT
        # "ready" means every lane takes work: wait for the child's heartbeat with its lanes
        while not getattr(self._read_snapshot(), "lanes", None):
            code = self.proc.poll()
            if code is not None:
                raise ConfigurationError(f"lane {self.spec.name}: its {self.pool_name} process "
                                         f"exited with code {code} while starting")
            if limits.now() > deadline:
                log.warning("lane %s: no heartbeat from %s after %.0f s; going on",
                            self.spec.name, self.worker_name, START_TIMEOUT)
                return
            time.sleep(0.05)

    # -- what a lane holds here: nothing (the child fetches its own) -------------------
    def feed(self, admit: Callable[[Delivery], bool]) -> None:
        pass

    def settle(self) -> None:
        pass

    def resize(self) -> None:
        pass   # the lane process sizes its own prefetch

    def give_back(self) -> list[Delivery]:
        return []

    def set_levels(self, levels: dict[str, list[int]]) -> list[tuple[str, int]]:
        return []    # the child reads its own

    def maintain(self, due: bool) -> None:
        if not due or self.proc is None or self.state in ("stopping", "stopped"):
            return
        now = limits.now()
        code = self.proc.poll()
        if code is not None:
            self._on_exit(code, now)
            return
        if now < self._next_watch:
            return
        self._next_watch = now + WATCH_INTERVAL
        self._read_snapshot()
        if self.max_memory and self.state == "running":
            self.rss = tree_rss_kib(self.proc.pid)
            if self.rss > self.max_memory:
                log.warning("lane %s: process %d uses %d KiB (max-memory %d KiB): recycling "
                            "it (it finishes its tasks, then a fresh one starts)",
                            self.spec.name, self.proc.pid, self.rss, self.max_memory)
                self.state = "recycling"
                self._signal(signal.SIGTERM)

    def _on_exit(self, code: int, now: float) -> None:
        if self.state == "recycling":
            self._carry_totals()
            log.info("lane %s: drained process %d exited (%s); starting a fresh one",
                     self.spec.name, self.proc.pid, code)
            self.recycles += 1
            self._spawn()
            return
        if self._restart_at is None:
            self._carry_totals()
            young = now - self._started < STABLE_AFTER
            delay = self._backoff if young and self.restarts else 0.0
            self._backoff = min(self._backoff * 2, RESTART_BACKOFF_MAX) if young \
                else RESTART_BACKOFF
            self._restart_at = now + delay
            self.state = "restarting"
            log.warning("lane %s: process %d exited with code %s; restarting it%s (its "
                        "unfinished messages come back with the new process)",
                        self.spec.name, self.proc.pid, code,
                        f" in {delay:.0f} s" if delay else "")
        if now >= self._restart_at:
            self._restart_at = None
            self.restarts += 1
            self._spawn()

    def stop_fetching(self) -> None:
        """Start the child's warm shutdown (every lane drains at once; ``stop`` waits)."""
        self.state = "stopping"
        self._signal(signal.SIGTERM)

    def stop(self, timeout: float) -> list[str]:
        self.stop_fetching()
        if self.proc is not None:
            try:
                self.proc.wait(timeout + STOP_MARGIN)
            except subprocess.TimeoutExpired:
                log.warning("lane %s: process %d did not stop in time; killing it",
                            self.spec.name, self.proc.pid)
                self.proc.kill()
                self.proc.wait()
        self.state = "stopped"
        return []    # the child gave back what never started itself

    def terminate(self) -> None:
        """Cold: a second SIGTERM makes the child's own cold shutdown (it gives back its
        buffer and drops its heartbeat), then SIGKILL if it lingers."""
        self.state = "stopped"
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        if self._term_sent:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(KILL_AFTER)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        proc.wait()

    def _signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None and not self._term_sent:
            self._term_sent = True
            self.proc.send_signal(signum)

    # -- control -----------------------------------------------------------------------
    def grow(self, n: int) -> int:
        if "grow" not in self.capabilities:
            raise NotSupported(f"{self.pool_name} pool cannot grow")
        self.concurrency += n       # a restarted child starts at the new size
        self.forward({"cmd": "pool-grow", "n": n})
        return self.concurrency

    def shrink(self, n: int) -> int:
        if "shrink" not in self.capabilities:
            raise NotSupported(f"{self.pool_name} pool cannot shrink")
        self.concurrency = max(self.concurrency - n, 1)
        self.forward({"cmd": "pool-shrink", "n": n})
        return self.concurrency

    def forward(self, command: dict) -> None:
        """Send a control command to the child (no reply: the supervisor answers)."""
        command = {k: v for k, v in command.items() if k not in ("reply_to", "destination")}
        try:
            self.app.client.publish(self.channel, control.encode(command, self.app.signer))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("lane %s: could not forward %s: %s", self.spec.name,
                        command.get("cmd"), exc)

    # -- figures -----------------------------------------------------------------------
    def _read_snapshot(self) -> WorkerSnapshot | None:
        """The child's heartbeat snapshot, if it is this child's (a killed one's lingers)."""
        try:
            snapshot = WorkerSnapshot.from_wire(self.app.client.get(self.snapshot_key))
        except redis.RedisError:
            return None
        if snapshot is not None and self.proc is not None and snapshot.pid == self.proc.pid:
            self._snapshot = snapshot
            return snapshot
        return None

    def _lane_figures(self) -> LaneInfo | None:
        snapshot = self._snapshot
        return snapshot.lanes[0] if snapshot is not None and snapshot.lanes else None

    def _carry_totals(self) -> None:
        figures = self._lane_figures()
        if figures is not None:
            self._ended["processed"] += figures.processed
            self._ended["failed"] += figures.failed
        self._snapshot = None

    def total(self, key: str) -> int:
        """processed/failed over every process this lane had (as of the last snapshots)."""
        figures = self._lane_figures()
        return self._ended[key] + (getattr(figures, key) if figures is not None else 0)

    def info(self) -> LaneInfo:
        figures = self._lane_figures()
        snapshot = self._snapshot
        pool_info = {"pool": self.pool_name, "concurrency": self.concurrency, "isolated": True,
                     "process": self.worker_name, "pid": self.proc.pid if self.proc else None,
                     "state": self.state, "restarts": self.restarts, "recycles": self.recycles,
                     "rss": (snapshot.rss if snapshot else 0) or self.rss,
                     "max_memory": self.max_memory,
                     "active": snapshot.active if snapshot else 0,
                     "child_pool": figures.pool_info if figures else None}
        return LaneInfo(name=self.name, queues=self.queues, pool=self.spec.pool,
                        concurrency=self.concurrency,
                        buffered=figures.buffered if figures else 0,
                        processed=self.total("processed"), failed=self.total("failed"),
                        pool_info=pool_info)


def tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and its descendants, in KiB."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total // 1024
