"""Worker metrics: the Prometheus endpoint of one ``engine run`` (``--metrics-port``).

Imported only when a port is set. The supervisor's loop counts every settled outcome here
in plain Python (``WorkerMetrics.settled``: one call, no lock, no clock read); the
``WorkerCollector`` turns the figures into metric families only when scraped, on the HTTP
server's thread. Prefork children's tasks count here (their outcomes reach the supervisor);
an isolated lane's process does not. Names and meanings: docs/observability.md.
"""

from __future__ import annotations

import bisect
import logging
import time
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.registry import Collector

from engine import limits
from engine.exceptions import ConfigurationError
from engine.results import REVOKED

if TYPE_CHECKING:
    from engine.worker.lanes import Delivery
    from engine.worker.supervisor import Supervisor

log = logging.getLogger("engine.worker")

#: histogram upper bounds, seconds: 100 µs to 4 hours (+Inf is added at scrape)
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
           14400.0)
_LE = tuple(str(b) for b in BUCKETS) + ("+Inf",)


class Histogram:
    """Bucket counts (not cumulative: one slot per bound, the last for +Inf) and a sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le)
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value

    def cumulative(self) -> tuple[list[tuple[str, int]], float, int]:
        counts, total = list(self.counts), self.sum
        running, buckets = 0, []
        for le, n in zip(_LE, counts):
            running += n
            buckets.append((le, running))
        return buckets, total, running


class TaskFigures:
    """What one (task, queue) has done on this worker."""

    __slots__ = ("states", "runtime", "wait")

    def __init__(self) -> None:
        self.states: dict[str, int] = {}
        self.runtime = Histogram()
        self.wait = Histogram()


def enqueued_at(entry_id: bytes | str) -> float:
    """Unix time of a stream entry id's XADD (its millisecond part; ``settled`` inlines
    this)."""
    if isinstance(entry_id, str):
        entry_id = entry_id.encode()
    return int(entry_id[:entry_id.index(b"-")]) / 1000.0


_bisect = bisect.bisect_left


class WorkerMetrics:
    """The loop's side: ``settled`` is called on the supervisor's thread for every outcome
    (``revoked`` for a task settled without running)."""

    def __init__(self) -> None:
        self.tasks: dict[tuple[str, str], TaskFigures] = {}
        #: wall clock minus the loop's clock (``limits.now``): a start time on the loop's
        #: clock becomes unix time without a clock read per task (refreshed at each scrape)
        self.offset = time.time() - limits.now()

    def settled(self, delivery: "Delivery", state: str, runtime: float | None) -> None:
        """An outcome settled in ``state``; ``runtime`` None when the task never ran.
        Once per task on the loop: written flat, no helper calls (most of what metrics
        cost a worker is here). The wait runs from the entry id's milliseconds (Redis sets
        them at XADD; for a delayed or retried task, when it became due) to the start the
        pool reported (on the loop's clock, made unix time with ``offset``)."""
        job = delivery.job
        key = (job.task, job.queue)
        figures = self.tasks.get(key)
        if figures is None:
            figures = self.tasks[key] = TaskFigures()
        states = figures.states
        states[state] = states.get(state, 0) + 1
        if runtime is None:
            return
        histogram = figures.runtime
        histogram.counts[_bisect(BUCKETS, runtime)] += 1
        histogram.sum += runtime
        started = delivery.started
        if started is None:
            return   # its pool never said when it began: no wait to tell
        entry_id = delivery.entry_id
        try:
            # enqueued: the entry id's milliseconds, when Redis took the XADD
            wait = started + self.offset - int(entry_id[:entry_id.index(b"-")]) * 0.001
        except (ValueError, TypeError):
            return   # not a stream id (a hand-made delivery)
        if wait < 0.0:
            wait = 0.0   # the clocks of two hosts
        histogram = figures.wait
        histogram.counts[_bisect(BUCKETS, wait)] += 1
        histogram.sum += wait

    def revoked(self, delivery: "Delivery") -> None:
        self.settled(delivery, REVOKED, None)


class WorkerCollector(Collector):
    """Builds the metric families from ``WorkerMetrics`` and the supervisor's lanes at
    scrape time, on the HTTP server's thread: it only reads, and what it copies
    (``list(d.items())``, ``list(counts)``) is one C call under the GIL, so a dict never
    changes size under it, and a histogram's count is the sum of the buckets it copied."""

    def __init__(self, metrics: WorkerMetrics, supervisor: "Supervisor") -> None:
        self.metrics = metrics
        self.supervisor = supervisor

    def collect(self) -> Iterator[Any]:
        tasks = CounterMetricFamily("engine_tasks", "Tasks settled by this worker, by state",
                                    labels=["task", "queue", "state"])
        runtime = HistogramMetricFamily("engine_task_runtime_seconds",
                                        "Task run time, seconds", labels=["task", "queue"])
        wait = HistogramMetricFamily("engine_task_wait_seconds",
                                     "Enqueue (XADD) to start, seconds",
                                     labels=["task", "queue"])
        self.metrics.offset = time.time() - limits.now()   # one attribute write: atomic
        for (task, queue), figures in list(self.metrics.tasks.items()):
            for state, n in list(figures.states.items()):
                tasks.add_metric([task, queue, state], n)
            for family, histogram in ((runtime, figures.runtime), (wait, figures.wait)):
                buckets, total, _ = histogram.cumulative()
                family.add_metric([task, queue], buckets, total)
        yield tasks
        yield runtime
        yield wait
        yield from self._lanes()

    def _lanes(self) -> Iterator[Any]:
        slots = GaugeMetricFamily("engine_worker_slots", "Execution slots", labels=["lane"])
        busy = GaugeMetricFamily("engine_worker_busy_slots", "Slots running a task",
                                 labels=["lane"])
        prefetched = GaugeMetricFamily("engine_worker_prefetched",
                                       "Messages held by the lane, not started",
                                       labels=["lane"])
        supervisor = self.supervisor
        running = list(supervisor.inflight.values())
        for lane in list(supervisor.lanes):
            if not lane.streams:
                continue   # an isolated lane: its process counts its own (not served yet)
            started = sum(1 for d in running if d.lane is lane and d.started is not None)
            slots.add_metric([lane.name], lane.spec.concurrency)
            busy.add_metric([lane.name], started)
            prefetched.add_metric([lane.name], max(lane.held - started, 0))
        yield slots
        yield busy
        yield prefetched


def serve(supervisor: "Supervisor", metrics: WorkerMetrics, port: Any, address: Any) -> int:
    """Start the HTTP endpoint (a daemon thread); returns the port it listens on (``port``
    0 picks a free one). ConfigurationError when it cannot listen there."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(metrics, supervisor))
    try:
        server, _thread = start_http_server(int(port), addr=str(address), registry=registry)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot serve metrics on {address}:{port}: {exc}") from None
    bound = server.server_port
    log.info("metrics on http://%s:%d/metrics", address, bound)
    return bound
