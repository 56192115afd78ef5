"""``engine exporter``: fleet-wide Prometheus gauges read from Redis at each scrape.

One process for the whole fleet, holding no state and writing nothing: queue depth (the
group's lag), unacked, delayed, dead letters, the oldest undelivered entry's age, workers
online (docs/observability.md). ``read`` makes 3 pipelined round trips per scrape, whatever
the number of queues Q, and sends at most 4 + 5 Q + 3 L commands, L the priority streams
above 0 in use (see ``read``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.broker import GROUP, Keys
from engine.cluster import is_cluster
from engine.wire import text

log = logging.getLogger("engine.exporter")

def commands_bound(queues: int, levels: int = 0) -> int:
    """Redis commands one scrape sends at most for ``queues`` queues and ``levels``
    priority streams above 0 among them (``P:priorities``)."""
    return 4 + 5 * queues + 3 * levels


@dataclass(slots=True)
class QueueFigures:
    name: str
    #: entries not yet delivered, per priority level (0: the queue's own stream)
    depths: dict[int, int] = field(default_factory=dict)
    unacked: int = 0
    delayed: int = 0
    dead: int = 0
    oldest_age: float = 0.0

    @property
    def depth(self) -> int:
        return sum(self.depths.values())


@dataclass(slots=True)
class FleetFigures:
    queues: list[QueueFigures]
    workers_online: int


def _entry_ms(entry_id: Any) -> int:
    value = text(entry_id)
    return int(value[:value.index("-")])


def read(client: redis.Redis, keys: Keys, *, lost_after: float) -> FleetFigures:
    """Every queue's figures and the live worker count, in three pipelined round trips:
    (1) SMEMBERS of the queue set and of the priority set, TIME; (2) ZCOUNT of heartbeats
    newer than TIME - ``lost_after``, per queue XINFO GROUPS, XLEN, ZCARD (delayed), XLEN
    (dead letters), and per priority stream above 0 XINFO GROUPS, XLEN; (3) per stream with
    entries undelivered, one XRANGE from after the group's last delivered id, COUNT 1, for
    the oldest. Depth is the group's lag, or XLEN minus pending where Redis has no lag
    (exact: acked entries are deleted)."""
    if is_cluster(client):
        # a cluster pipeline refuses TIME (redis-py): three calls (the clock of some master)
        names_raw, levels_raw = client.smembers(keys.queues), client.smembers(keys.priorities)
        seconds, micros = client.time()
    else:
        pipe = client.pipeline(transaction=False)
        pipe.smembers(keys.queues)
        pipe.smembers(keys.priorities)
        pipe.time()
        names_raw, levels_raw, (seconds, micros) = pipe.execute()
    now = seconds + micros / 1e6   # Redis's clock: entry ids and heartbeats are on it
    names = sorted(text(n) for n in names_raw)
    known = set(names)
    levels: dict[str, list[int]] = {}
    for item in levels_raw:
        queue, _, level = text(item).rpartition(":")
        if queue in known and level.isdigit() and 1 <= int(level) <= 9:
            levels.setdefault(queue, []).append(int(level))
    streams = [(name, level) for name in names
               for level in [0] + sorted(levels.get(name, ()), reverse=True)]
    pipe = client.pipeline(transaction=False)
    pipe.zcount(keys.workers, now - lost_after, "+inf")
    for name, level in streams:
        stream = keys.queue(name, level)
        pipe.xinfo_groups(stream)
        pipe.xlen(stream)
        if level == 0:
            pipe.zcard(keys.delayed(name))
            pipe.xlen(keys.dlq(name))
    replies = iter(pipe.execute(raise_on_error=False))
    online = next(replies)
    online = online if isinstance(online, int) else 0
    queues: dict[str, QueueFigures] = {}
    waiting: list[tuple[QueueFigures, str, str]] = []
    for name, level in streams:
        groups, length = next(replies), _int(next(replies))
        figures = queues.get(name)
        if figures is None:
            figures = queues[name] = QueueFigures(name, delayed=_int(next(replies)),
                                                  dead=_int(next(replies)))
        depth, start = length, "-"
        for group in groups if isinstance(groups, list) else ():
            if text(group["name"]) != GROUP:
                continue
            pending = int(group.get("pending") or 0)
            figures.unacked += pending
            lag = group.get("lag")
            depth = int(lag) if lag is not None else max(length - pending, 0)
            last = text(group.get("last-delivered-id") or "0-0")
            start = "(" + last if last != "0-0" else "-"
        figures.depths[level] = depth
        if depth > 0:
            waiting.append((figures, keys.queue(name, level), start))
    if waiting:
        pipe = client.pipeline(transaction=False)
        for _, stream, start in waiting:
            pipe.xrange(stream, min=start, max="+", count=1)
        for (figures, _, _), entries in zip(waiting, pipe.execute(raise_on_error=False)):
            if isinstance(entries, list) and entries:
                age = max(now - _entry_ms(entries[0][0]) / 1000.0, 0.0)
                figures.oldest_age = max(figures.oldest_age, age)
    return FleetFigures(list(queues.values()), online)


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0   # a reply error: the key is not there


class FleetCollector(Collector):
    """Reads Redis at each scrape (on the HTTP server's thread)."""

    def __init__(self, client: redis.Redis, keys: Keys, *, lost_after: float) -> None:
        self.client = client
        self.keys = keys
        self.lost_after = lost_after

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("engine_exporter_redis_up", "1 when this scrape read Redis")
        try:
            figures = read(self.client, self.keys, lost_after=self.lost_after)
        except redis.RedisError as exc:
            log.warning("scrape could not read Redis: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily("engine_queue_depth", "Entries not yet delivered",
                                  labels=["queue", "priority"])
        unacked = GaugeMetricFamily("engine_queue_unacked", "Delivered, not acked",
                                    labels=["queue"])
        delayed = GaugeMetricFamily("engine_queue_delayed", "Waiting for an eta",
                                    labels=["queue"])
        dead = GaugeMetricFamily("engine_dead_letters", "Entries in the dead-letter stream",
                                 labels=["queue"])
        age = GaugeMetricFamily("engine_queue_oldest_age_seconds",
                                "Age of the oldest undelivered entry", labels=["queue"])
        for q in figures.queues:
            for level, n in q.depths.items():
                depth.add_metric([q.name, str(level)], n)
            unacked.add_metric([q.name], q.unacked)
            delayed.add_metric([q.name], q.delayed)
            dead.add_metric([q.name], q.dead)
            age.add_metric([q.name], q.oldest_age)
        online = GaugeMetricFamily("engine_workers_online",
                                   "Workers with a heartbeat within worker_lost_after")
        online.add_metric([], figures.workers_online)
        yield from (depth, unacked, delayed, dead, age, online)


def serve(app: Any, port: int, address: str) -> int:
    """Start the endpoint (a daemon thread); returns the port (``port`` 0: a free one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(app.client, app.broker.keys,
                                     lost_after=float(app.conf.worker_lost_after)))
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server.server_port


def command(args: Any) -> int:
    """Entry point of ``engine exporter`` (see engine.cli): serve until stopped."""
    from engine.app import load_app
    app = load_app(args.app or "")
    bound = serve(app, args.port, args.address)
    log.info("exporter on http://%s:%d/metrics (prefix %s)", args.address, bound,
             app.broker.keys.prefix)
    threading.Event().wait()   # until a signal ends the process
    return 0
