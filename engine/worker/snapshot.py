"""The worker snapshot: what a worker says about itself in its heartbeat key.

One schema, written by the supervisor (``P:worker:<name>``, msgpack, refreshed by the loop
and published by the heartbeat thread) and read by everyone else: the monitor, the
dashboard, a supervisor watching its lane processes, ``inspect stats``. ``from_wire`` never
raises: a snapshot it cannot read (another version, garbage) is None.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import msgpack

from engine.wire import text


@dataclass(slots=True)
class LaneInfo:
    name: str
    queues: list[str]
    pool: str                       #: the pool asked for (alias or class path)
    concurrency: int
    buffered: int = 0               #: fetched, not yet submitted
    processed: int = 0
    failed: int = 0
    pool_info: dict = field(default_factory=dict)   #: ``Pool.info()``


@dataclass(slots=True)
class WorkerSnapshot:
    name: str
    host: str
    pid: int
    started: float                  #: unix seconds
    at: float                       #: when this snapshot was taken, unix seconds
    active: int = 0                 #: jobs started and not finished (at most the slots)
    load: float = 0.0
    rss: int = 0                    #: KiB of the worker's process tree
    cpu: float = 0.0                #: CPU seconds of the tree, reaped children included
    parent: str | None = None       #: the supervisor's name, for a lane process
    lanes: list[LaneInfo] = field(default_factory=list)

    def to_wire(self) -> bytes:
        return msgpack.packb(dataclasses.asdict(self), use_bin_type=True, default=str)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, raw: bytes | None) -> "WorkerSnapshot | None":
        if not raw:
            return None
        try:
            data = msgpack.unpackb(raw, raw=False, strict_map_key=False)
            lanes = [LaneInfo(name=text(lane["name"]),
                              queues=[text(q) for q in lane.get("queues") or ()],
                              pool=text(lane.get("pool") or ""),
                              concurrency=int(lane.get("concurrency") or 0),
                              buffered=int(lane.get("buffered") or 0),
                              processed=int(lane.get("processed") or 0),
                              failed=int(lane.get("failed") or 0),
                              pool_info=dict(lane.get("pool_info") or {}))
                     for lane in data.get("lanes") or ()]
            return cls(name=text(data["name"]), host=text(data.get("host") or ""),
                       pid=int(data.get("pid") or 0), started=float(data.get("started") or 0),
                       at=float(data.get("at") or 0), active=int(data.get("active") or 0),
                       load=float(data.get("load") or 0), rss=int(data.get("rss") or 0),
                       cpu=float(data.get("cpu") or 0),
                       parent=text(data["parent"]) if data.get("parent") else None,
                       lanes=lanes)
        except (ValueError, TypeError, KeyError, AttributeError, msgpack.ExtraData):
            return None


def read_fleet(app: Any) -> list[tuple[str, float, "WorkerSnapshot | None"]]:
    """Every worker in ``P:workers`` with its last heartbeat time and its snapshot (None
    once its heartbeat key expired, or when it cannot be read), in two round trips."""
    keys = app.broker.keys
    client = app.client
    entries = client.zrange(keys.workers, 0, -1, withscores=True)
    if not entries:
        return []
    pipe = client.pipeline(transaction=False)
    for name, _ in entries:
        pipe.get(keys.worker(text(name)))
    return [(text(name), float(seen), WorkerSnapshot.from_wire(raw))
            for (name, seen), raw in zip(entries, pipe.execute())]
