"""A worker's presence in Redis: its heartbeat key and its control-channel listener.

Both run on threads of their own so that a long task on the supervisor's thread (solo) never
lets a live worker look dead. The heartbeat publishes the snapshot the loop prepared (it never
calls a pool); the listener only hands commands to the loop's inbox.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable

import msgpack
import redis

from engine import control
from engine.exceptions import ConfigurationError
from engine.worker.pressure import Pressure, Throttled, is_oom
from engine.worker.snapshot import WorkerSnapshot

log = logging.getLogger("engine.worker")

#: share of ``worker_lost_after`` a heartbeat key lives; the rest is left for the survivors
#: to notice (they look every RECLAIM_SHARE of it), so a dead worker's messages run again
#: within ``worker_lost_after`` of its last heartbeat
HEARTBEAT_TTL_SHARE = 0.75
RECLAIM_SHARE = 0.1
#: heartbeats per key lifetime at least: a live worker's key must never lapse
HEARTBEATS_PER_TTL = 3
#: seconds the listener waits for a message before it checks whether to stop
LISTEN_POLL = 0.5
#: seconds between two log lines about refused (unsigned or forged) control commands
REFUSED_LOG_EVERY = 60.0



def default_name() -> str:
    """``engine-PID@HOST``: a worker's name when none is given."""
    return f"engine-{os.getpid()}@{socket.gethostname()}"

def process_figures() -> dict[str, float]:
    """Load average, and resident KiB and CPU seconds of this process and its descendants
    (reaped ones included in the CPU), from one listing of the process tree."""
    import psutil
    figures = {"load": os.getloadavg()[0], "rss": 0, "cpu": 0.0}
    try:
        me = psutil.Process()
        times = me.cpu_times()
        cpu = times.user + times.system + times.children_user + times.children_system
        rss = me.memory_info().rss
        children = me.children(recursive=True)
    except psutil.Error:
        return figures
    for child in children:
        try:
            with child.oneshot():
                times = child.cpu_times()
                cpu += times.user + times.system
                rss += child.memory_info().rss
        except psutil.Error:
            pass   # ended between the listing and the read
    figures.update(rss=rss // 1024, cpu=round(cpu, 3))
    return figures


class Presence:
    def __init__(self, app, name: str, *, lost_after: float, interval: float, events,
                 active: Callable[[], int],
                 channel: str, deliver: Callable[[dict], None],
                 stopping: threading.Event, pressure: Pressure | None = None) -> None:
        self.app = app
        self.keys = app.broker.keys
        self.name = name
        self.lost_after = lost_after
        # beat often enough that a late beat or two never lets a live worker's key lapse
        self.interval = min(interval, lost_after * HEARTBEAT_TTL_SHARE / HEARTBEATS_PER_TTL)
        self.events = events
        #: the worker snapshot to publish, bytes the loop refreshes (the loop alone calls
        #: pools, so this thread never builds it)
        self.snapshot = b""
        self.active = active
        self.channel = channel
        #: control commands ignored for want of a valid signature
        self.refused = 0
        self._refused_told = 0
        self._refused_logged: float | None = None
        self.deliver = deliver
        self.stopping = stopping
        #: the latest process figures, measured here (a /proc walk) rather than on the loop
        self.figures: dict[str, float] = {"load": 0.0, "rss": 0, "cpu": 0.0}
        self.pressure = pressure if pressure is not None else Pressure()
        self._log = Throttled()

    def check_name(self) -> None:
        """Refuse to start beside a live worker of the same name (a dead one is taken over)."""
        info = WorkerSnapshot.from_wire(self.app.client.get(self.keys.worker(self.name)))
        if info is None:
            return
        same_host = info.host == socket.gethostname()
        pid = info.pid
        if same_host and pid and pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
            raise ConfigurationError(f"a worker named {self.name!r} is already running (pid {pid})")
        if not same_host:
            raise ConfigurationError(f"a worker named {self.name!r} is alive on {info.host}")

    def beat(self, *, online: bool = False, offline: bool = False) -> None:
        """Write the heartbeat key (or delete it, ``offline``) with a worker event."""
        pipe = self.app.client.pipeline(transaction=False)
        key = self.keys.worker(self.name)
        if offline:
            # the loop is over: events still held for batching go out before 'offline'
            self.events.flush(pipe, force=True)
            pipe.delete(key)
            pipe.zrem(self.keys.workers, self.name)
        else:
            pipe.set(key, self.snapshot, px=self._ttl_ms())
            pipe.zadd(self.keys.workers, {self.name: time.time()})
        if self.events.enabled:
            kind = "worker-online" if online else "worker-offline" if offline else "worker-heartbeat"
            pipe.xadd(self.keys.events, {"b": msgpack.packb([{
                "type": kind, "ts": time.time(), "worker": self.name, "pid": os.getpid(),
                "active": self.active()}], use_bin_type=True)},
                maxlen=self.events.maxlen, approximate=True)
        pipe.execute()

    def _refused(self, exc: control.Refused) -> None:
        """A control command that failed the signature check: ignored, and logged once a
        minute at most (a flood of forged commands must not flood the log too): the first
        at once, the others counted in the next line."""
        self.refused += 1
        now = time.monotonic()
        if self._refused_logged is None or now - self._refused_logged >= REFUSED_LOG_EVERY:
            unlogged = self.refused - self._refused_told - 1
            log.warning("ignored a control command: %s (security_key is set)%s", exc,
                        f"; {unlogged} more ignored since the last report" if unlogged else "")
            self._refused_logged, self._refused_told = now, self.refused

    def start(self) -> None:
        for target, name in ((self._beat_loop, "heartbeat"), (self._listen_loop, "control")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def _ttl_ms(self) -> int:
        return max(int(self.lost_after * HEARTBEAT_TTL_SHARE * 1000), 100)

    def _beat_loop(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.figures = process_figures()
                self.beat()
            except redis.RedisError as exc:
                if is_oom(exc):
                    self._keep_alive(exc)
                else:
                    self._log.warning("heartbeat failed: %s", exc)
                continue
            except Exception:   # this thread must outlive anything (a /proc read, say)
                log.exception("heartbeat failed")
                continue
            if self.pressure.refusing:
                self.pressure.accepted()   # the SET went through: memory is back

    def _keep_alive(self, exc: redis.RedisError) -> None:
        """Redis refuses the SET for memory but takes PEXPIRE: the key this worker wrote
        last lives on (its snapshot grows stale), so no survivor reclaims from a live
        worker."""
        try:
            kept = self.app.client.pexpire(self.keys.worker(self.name), self._ttl_ms())
        except redis.RedisError as error:
            self._log.warning("heartbeat failed: %s; keeping the key alive failed too: %s",
                              exc, error)
            return
        self.pressure.refused("heartbeat: SET refused, key kept by PEXPIRE" if kept else
                              "heartbeat: SET refused and the key is gone: survivors may "
                              "take this worker for lost")

    def _listen_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                client = self.app.new_client()
                pubsub = client.pubsub()
                pubsub.subscribe(self.channel)
                while not self.stopping.is_set():
                    msg = pubsub.get_message(timeout=LISTEN_POLL)
                    if msg and msg.get("type") == "subscribe":
                        # listening from now on: what was revoked before (since the loop
                        # read the set at start, or while we were cut off) is in the set
                        self.deliver({"cmd": "sync-revoked"})
                    elif msg and msg.get("type") == "message":
                        try:
                            self.deliver(control.decode(msg["data"], self.app.signer))
                        except control.Refused as exc:
                            self._refused(exc)
                        except Exception as exc:
                            log.warning("ignored a bad control message: %s", exc)
                pubsub.close()
                client.close()
            except redis.RedisError as exc:
                self._log.warning("control channel: %s; listening again in 1 s", exc)
                self.stopping.wait(1.0)
