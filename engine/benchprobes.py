"""What ``engine bench`` watches while a run drains: the worker tree's CPU and memory
(``TreeSampler``, from psutil) and the run's events (``EventCollector``, from the private
prefix's event stream)."""

from __future__ import annotations

import threading
from typing import Any

import psutil
import redis


class TreeSampler(threading.Thread):
    """Peak and current RSS (sum over a process tree) and its CPU seconds, every ``interval``;
    the supervisors are the root (``fleet``: the root's children, the root being the parent
    of ``engine run --processes N``)."""

    def __init__(self, pid: int, interval: float = 0.1, *, fleet: bool = False) -> None:
        super().__init__(daemon=True, name="bench-sampler")
        self.root = pid
        self.interval = interval
        self.peak = 0
        self.rss = 0
        self.nprocs = 0
        self._cpu: dict[int, float] = {}
        self.fleet = fleet
        self._supervisors: set[int] = set()
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root)
            procs = [root] + root.children(recursive=True)
            supervisors = [p.pid for p in root.children()] if self.fleet else [root.pid]
        except psutil.Error:
            return
        with self._lock:
            self._supervisors.update(supervisors)
        total = seen = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    total += proc.memory_info().rss
                    times = proc.cpu_times()
                with self._lock:
                    self._cpu[proc.pid] = times.user + times.system
                seen += 1
            except psutil.Error:
                pass
        self.rss = total
        self.peak = max(self.peak, total)
        self.nprocs = max(self.nprocs, seen)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def cpu_s(self) -> float:
        """CPU seconds of the tree so far (samples now)."""
        self.sample()
        with self._lock:
            return sum(self._cpu.values())

    def cpu_of(self, pid: int) -> float:
        """CPU seconds of one process of the tree so far (samples now)."""
        self.sample()
        with self._lock:
            return self._cpu.get(pid, 0.0)

    def cpu_since(self, baseline: dict[int, float]) -> tuple[float, float, float]:
        """CPU seconds since ``baseline`` (pid -> CPU seconds then; 0 for a pid not in it)
        of the whole tree, of the supervisors, and of the processes under them."""
        self.sample()
        with self._lock:
            spent = {pid: v - baseline.get(pid, 0.0) for pid, v in self._cpu.items()}
        sup = sum(v for pid, v in spent.items() if pid in self._supervisors)
        parent = spent.get(self.root, 0.0) if self.fleet else 0.0
        return sum(spent.values()), sup, sum(spent.values()) - sup - parent

    @property
    def supervisors(self) -> set[int]:
        """The supervisors' pids seen so far."""
        with self._lock:
            return set(self._supervisors)

    def reset_peak(self) -> None:
        self.peak = self.rss

    def stop(self) -> None:
        self._halt.set()


class EventCollector(threading.Thread):
    """Reads the private prefix's event stream from its start: completion time of each task
    id (``task-succeeded`` / ``task-failed``) and whether a worker is online."""

    def __init__(self, client: redis.Redis, stream: str, *, monitor: Any = None) -> None:
        """``monitor``: an object with ``on_entry(fields)`` (``engine monitor``'s
        ``FleetState``) that every stream entry is also handed to, as a monitor reads
        them; it returns how many events it folded."""
        super().__init__(daemon=True, name="bench-events")
        self.monitor = monitor
        self.monitor_events = 0
        self.client = client
        self.stream = stream
        self.done: dict[str, float] = {}
        self.failed = 0
        self.first_received: float | None = None   # ts of the first task-received
        self.online = threading.Event()
        self.online_pids: list[int] = []   # of worker-online events (one per supervisor)
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from engine.events import decode, flat
        last, monitor = "0-0", self.monitor
        done = self.done
        try:
            while not self._halt.is_set():
                response = self.client.xread({self.stream: last}, count=1000, block=100)
                for _, stream_entries in response or ():
                    for entry_id, fields in stream_entries:
                        last = entry_id
                        batch = decode(fields)
                        if monitor is not None:
                            self.monitor_events += monitor.on_batch(batch)
                        if type(batch) is dict and batch.get("t"):
                            # the short lives' ends straight from their rows (the bench's
                            # own reading stays light beside the monitor's)
                            for row in batch["t"]:
                                done[row[0]] = row[7]
                            first = min(row[5] for row in batch["t"])
                            if self.first_received is None or first < self.first_received:
                                self.first_received = first
                            batch = dict(batch, t=())
                        for kind, ts, _, job_id, _, extra in flat(batch):
                            if kind == "task-succeeded":
                                done[job_id] = ts
                            elif kind == "task-failed":
                                done[job_id] = ts
                                self.failed += 1
                            elif kind == "task-received":
                                if self.first_received is None or ts < self.first_received:
                                    self.first_received = ts
                            elif kind == "worker-online":
                                self.online_pids.append((extra or {}).get("pid", 0))
                                self.online.set()
        except BaseException as exc:   # reported by the main thread
            self.error = exc

    def stop(self) -> None:
        self._halt.set()
