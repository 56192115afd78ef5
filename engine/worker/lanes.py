"""A lane: some queues served by one pool, with its fetch thread and its prefetch budget.

The supervisor owns every lane and is the only caller of its pool. The fetch thread only
reads from Redis (one XREADGROUP per batch) and hands the batch to the supervisor's inbox;
the credit counter bounds how many messages a lane holds (buffered + in its pool).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import redis

from engine.broker import Broker
from pools.base import Job, Pool, PoolOptions

if TYPE_CHECKING:
    from engine.task import Task

log = logging.getLogger("engine.worker")

#: seconds of queued work per execution slot a lane aims to hold (see ``Lane.resize``)
QUEUED_WORK_TARGET = 0.05
#: messages per slot a lane holds at least (one running, one waiting), prefetch allowing
MIN_PER_SLOT = 2
#: milliseconds one XREADGROUP may block; bounds how long a warm shutdown waits for fetchers
FETCH_BLOCK_MS = 500
#: seconds between reconnect attempts of a fetch thread, doubled up to the maximum
RECONNECT_BACKOFF, RECONNECT_BACKOFF_MAX = 0.1, 5.0


@dataclass
class LaneSpec:
    """What ``--pool/-c/-Q`` or one ``--lane QUEUES=POOL:CONCURRENCY`` asks for."""

    queues: list[str]
    pool: str = "prefork"
    concurrency: int = 1
    prefetch: int = 4
    soft_time_limit: float | None = None
    time_limit: float | None = None
    name: str = ""
    options: PoolOptions = field(default_factory=PoolOptions)
    #: run the pool in a child ``engine run`` of its own (engine.worker.isolation); None: decide
    #: from the pool (``needs_own_process``, or max-memory on a pool that cannot recycle)
    isolate: bool | None = None

    def __post_init__(self) -> None:
        if not self.name:
            self.name = ",".join(self.queues)


@dataclass(slots=True, eq=False)
class Delivery:
    """A fetched message on its way through a lane."""

    job: Job
    stream: str
    entry_id: bytes
    lane: "Lane"
    task: "Task"
    deliveries: int = 1
    soft: float | None = None
    hard: float | None = None
    acked: bool = False
    started: float | None = None    #: monotonic, once the pool says it began
    revoked: bool = False           #: killed by revoke(terminate=True): record REVOKED


class Lane:
    def __init__(self, spec: LaneSpec, pool: Pool, broker_keys: Any) -> None:
        self.spec = spec
        self.name = spec.name
        self.pool = pool
        self.queues = list(spec.queues)
        self.streams = [broker_keys.queue(q) for q in self.queues]
        self.capacity = max(spec.concurrency * max(spec.prefetch, 1), spec.concurrency)
        self.low_water = max(self.capacity // 2, 1)
        self.returned = 0    #: credit to give back at the end of the loop turn
        self.runtime: float | None = None   #: moving average of task run time, seconds
        self.buffer: deque[Delivery] = deque()
        self.fetching = True
        self.processed = 0
        self.failed = 0
        self._held = 0
        self._room = threading.Condition()
        self._thread: threading.Thread | None = None

    # -- the prefetch budget (fetch thread takes, supervisor gives back) ---------------
    def give(self, n: int = 1) -> None:
        with self._room:
            self._held -= n
            if self.capacity - self._held >= self.low_water:
                self._room.notify()

    def return_credit(self) -> None:
        """Give back what finished this loop turn, in one go (one lock, one notify)."""
        if self.returned:
            n, self.returned = self.returned, 0
            self.give(n)

    def note_runtime(self, runtime: float) -> None:
        """On the loop, for every outcome: feeds the moving average ``resize`` reads."""
        average = self.runtime
        self.runtime = runtime if average is None else average + (runtime - average) * 0.05

    def resize(self) -> None:
        """Hold about QUEUED_WORK_TARGET seconds of work per slot, within the prefetch limit:
        deep for short tasks (throughput), shallow for long ones, so that a worker never sits
        on messages another worker could be running."""
        limit = max(self.spec.prefetch, 1)
        per_slot = limit
        if self.runtime is not None:
            wanted = int(QUEUED_WORK_TARGET / max(self.runtime, 1e-6))
            per_slot = max(min(wanted, limit), min(MIN_PER_SLOT, limit))
        capacity = max(self.spec.concurrency * per_slot, self.spec.concurrency)
        if capacity != self.capacity:
            with self._room:
                self.capacity = capacity
                self.low_water = max(capacity // 2, 1)
                self._room.notify()

    def _wait_for_room(self, timeout: float) -> int:
        # fetch in batches: wait until half the budget is free (or nothing is held at all)
        with self._room:
            if self.capacity - self._held < self.low_water and self._held > 0:
                self._room.wait(timeout)
            return self.capacity - self._held

    def _take(self, n: int) -> None:
        with self._room:
            self._held += n

    @property
    def held(self) -> int:
        return self._held

    # -- the fetch thread --------------------------------------------------------------
    def start_fetching(self, make_broker: Callable[[], Broker], consumer: str,
                       deliver: Callable[[Any], None], stopping: threading.Event) -> None:
        self._thread = threading.Thread(
            target=self._fetch_loop, args=(make_broker, consumer, deliver, stopping),
            name=f"fetch-{self.name}", daemon=True)
        self._thread.start()

    def join_fetcher(self, timeout: float) -> None:
        with self._room:
            self._room.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _fetch_loop(self, make_broker: Callable[[], Broker], consumer: str,
                    deliver: Callable[[Any], None], stopping: threading.Event) -> None:
        broker = make_broker()
        streams = {stream: ">" for stream in self.streams}
        backoff = RECONNECT_BACKOFF
        while not stopping.is_set():
            room = self._wait_for_room(FETCH_BLOCK_MS / 1000)
            if room <= 0 or stopping.is_set():
                continue
            # XREADGROUP's COUNT is per stream; split the room so a lane never overfills
            count = max(room // len(streams), 1)
            try:
                batch = broker.fetch(consumer, streams, count=count, block_ms=FETCH_BLOCK_MS)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("lane %s: fetch failed (%s); retrying in %.1f s", self.name, exc, backoff)
                stopping.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX)
                continue
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):   # the stream was deleted under us: recreate
                    broker.ensure_groups(self.queues)
                    continue
                raise
            backoff = RECONNECT_BACKOFF
            if batch:
                self._take(sum(len(entries) for _, entries in batch))
                deliver((self, batch))
        broker.close()
        broker.client.close()


#: per-lane options after ``QUEUES=POOL:N``: key -> (LaneSpec or PoolOptions field, type)
LANE_OPTIONS = {
    "prefetch": ("prefetch", int), "soft": ("soft_time_limit", float),
    "hard": ("time_limit", float), "name": ("name", str), "isolate": ("isolate", "bool"),
    "max-tasks": ("max_tasks_per_child", int), "max-memory": ("max_memory_per_child", int),
}


def parse_lane(text: str, *, prefetch: int = 4, options: PoolOptions = PoolOptions()) -> LaneSpec:
    """``QUEUES=POOL:CONCURRENCY[,KEY=VALUE...]`` -> LaneSpec.

    E.g. ``io,mail=gevent:500`` or ``cpu=prefork:4,prefetch=2,soft=5,hard=10,max-memory=200000``.
    Keys are those of LANE_OPTIONS; they override the worker-wide flags for this lane only.
    """
    import dataclasses
    from engine.exceptions import ConfigurationError
    queues_text, sep, rest = text.partition("=")
    pool_text, *option_texts = rest.split(",")
    pool, _, concurrency_text = pool_text.rpartition(":")
    queues = [q.strip() for q in queues_text.split(",") if q.strip()]
    if not sep or not queues or not pool:
        raise ConfigurationError(f"bad lane {text!r}: expected QUEUES=POOL:CONCURRENCY, "
                                 f"e.g. cpu=prefork:4")
    try:
        concurrency = int(concurrency_text)
        if concurrency < 1:
            raise ValueError
    except ValueError:
        raise ConfigurationError(f"bad lane {text!r}: concurrency must be a whole number "
                                 f"above 0") from None
    spec_fields: dict[str, Any] = {"prefetch": prefetch}
    pool_fields: dict[str, Any] = {}
    for option in option_texts:
        key, eq, value = (part.strip() for part in option.partition("="))
        if key not in LANE_OPTIONS or not eq or not value:
            raise ConfigurationError(f"bad lane {text!r}: unknown option {option!r} (known: "
                                     f"{', '.join(f'{k}=...' for k in LANE_OPTIONS)})")
        attr, kind = LANE_OPTIONS[key]
        try:
            if kind == "bool":
                if value.lower() not in ("yes", "no", "true", "false", "1", "0"):
                    raise ValueError
                parsed: Any = value.lower() in ("yes", "true", "1")
            else:
                parsed = kind(value)
                if kind is not str and parsed <= 0:
                    raise ValueError
        except ValueError:
            wanted = "yes or no" if kind == "bool" else f"a positive {getattr(kind, '__name__', kind)}"
            raise ConfigurationError(f"bad lane {text!r}: {key} takes {wanted}, "
                                     f"got {value!r}") from None
        (pool_fields if attr in ("max_tasks_per_child", "max_memory_per_child")
         else spec_fields)[attr] = parsed
    if pool_fields:
        options = dataclasses.replace(options, **pool_fields)
    return LaneSpec(queues=queues, pool=pool, concurrency=concurrency, options=options,
                    **spec_fields)
