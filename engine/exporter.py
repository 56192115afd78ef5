"""``engine exporter``: fleet-wide Prometheus gauges read from Redis at each scrape.

One process for the whole fleet, holding no state and writing nothing: queue depth (the
group's lag), unacked, delayed, dead letters, the oldest undelivered entry's age, workers
online (docs/observability.md). ``read`` makes 3 pipelined round trips per scrape, whatever
the number of queues Q, and sends at most 3 + 5 Q commands (see ``read``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.broker import GROUP, Keys
from engine.cluster import is_cluster
from engine.wire import text

log = logging.getLogger("engine.exporter")

#: the one priority level queues have today (the label is there for when they have more)
PRIORITY = "0"


def commands_bound(queues: int) -> int:
    """Redis commands one scrape sends at most for ``queues`` queues."""
    return 3 + 5 * queues


@dataclass(slots=True)
class QueueFigures:
    name: str
    depth: int = 0
    unacked: int = 0
    delayed: int = 0
    dead: int = 0
    oldest_age: float = 0.0
    #: where undelivered entries start: after the group's last delivered id, or the start
    next_start: str = "-"


@dataclass(slots=True)
class FleetFigures:
    queues: list[QueueFigures]
    workers_online: int


def _entry_ms(entry_id: Any) -> int:
    value = text(entry_id)
    return int(value[:value.index("-")])


def read(client: redis.Redis, keys: Keys, *, lost_after: float) -> FleetFigures:
    """Every queue's figures and the live worker count, in three pipelined round trips:
    (1) SMEMBERS of the queue set, TIME; (2) ZCOUNT of heartbeats newer than TIME -
    ``lost_after``, and per queue XINFO GROUPS, XLEN, ZCARD (delayed), XLEN (dead letters);
    (3) per queue with entries undelivered, one XRANGE from after the group's last
    delivered id, COUNT 1, for the oldest. Depth is the group's lag, or XLEN minus pending
    where Redis has no lag (exact: acked entries are deleted)."""
    if is_cluster(client):
        # a cluster pipeline refuses TIME (redis-py): two calls (the clock of some master)
        names_raw, (seconds, micros) = client.smembers(keys.queues), client.time()
    else:
        pipe = client.pipeline(transaction=False)
        pipe.smembers(keys.queues)
        pipe.time()
        names_raw, (seconds, micros) = pipe.execute()
    now = seconds + micros / 1e6   # Redis's clock: entry ids and heartbeats are on it
    names = sorted(text(n) for n in names_raw)
    pipe = client.pipeline(transaction=False)
    pipe.zcount(keys.workers, now - lost_after, "+inf")
    for name in names:
        stream = keys.queue(name)
        pipe.xinfo_groups(stream)
        pipe.xlen(stream)
        pipe.zcard(keys.delayed(name))
        pipe.xlen(keys.dlq(name))
    replies = pipe.execute(raise_on_error=False)
    online = replies[0] if isinstance(replies[0], int) else 0
    queues = []
    for i, name in enumerate(names):
        groups, length, delayed, dead = replies[1 + 4 * i: 5 + 4 * i]
        figures = QueueFigures(name, delayed=_int(delayed), dead=_int(dead))
        length = _int(length)
        figures.depth = length
        for group in groups if isinstance(groups, list) else ():
            if text(group["name"]) != GROUP:
                continue
            figures.unacked = int(group.get("pending") or 0)
            lag = group.get("lag")
            figures.depth = int(lag) if lag is not None else max(length - figures.unacked, 0)
            last = text(group.get("last-delivered-id") or "0-0")
            figures.next_start = "(" + last if last != "0-0" else "-"
        queues.append(figures)
    waiting = [q for q in queues if q.depth > 0]
    if waiting:
        pipe = client.pipeline(transaction=False)
        for figures in waiting:
            pipe.xrange(keys.queue(figures.name), min=figures.next_start, max="+", count=1)
        for figures, entries in zip(waiting, pipe.execute(raise_on_error=False)):
            if isinstance(entries, list) and entries:
                figures.oldest_age = max(now - _entry_ms(entries[0][0]) / 1000.0, 0.0)
    return FleetFigures(queues, online)


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
            depth.add_metric([q.name, PRIORITY], q.depth)
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
