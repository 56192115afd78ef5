"""Beat: sends the tasks of ``beat_schedule`` when they are due, from one leader at a time.

Any number of beat processes (``engine beat`` or ``engine run -B``) may run. They elect a
leader with a Redis lock held under a lease; only the leader fires. Last-run times live in
Redis, so a restart or a change of leader neither skips nor repeats a slot. Schedules and
their arithmetic are in ``engine.schedules``; sending is ``app.send_task``.

================  ======  ==============================================================
key               type    what
================  ======  ==============================================================
P:beat:lock       string  the leader's token, with a TTL of ``beat_lease`` seconds
P:beat:state      hash    entry name -> JSON ``{"last": unix seconds, "sig": schedule}``
================  ======  ==============================================================

On a Redis Cluster both are ``P:{beat}:lock`` and ``P:{beat}:state``: the claim script
touches both, so they share a hash tag (one slot).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import redis

from engine import signals
from engine.exceptions import ConfigurationError
from engine.schedules import to_schedule, zone
from engine.cluster import is_cluster_url
from engine.wire import text as _s

log = logging.getLogger("engine.beat")

#: seconds the leader's lock lives without renewal: a dead leader is replaced within about
#: this long (plus one standby poll)
DEFAULT_LEASE = 5.0
#: namespace of the run ids (uuid5 of the state key, entry name and slot)
ID_NAMESPACE = uuid.UUID("6b1d5a0e-3c43-4f0b-9a55-6f1f5e0be7a1")
#: options of a beat entry passed on to ``send_task``; others are ignored with a warning
SEND_OPTIONS = ("queue", "countdown", "eta", "expires", "soft_time_limit", "time_limit",
                "ignore_result")

#: extend the lease only while we still hold it (compare-and-set on the token)
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: record a run: only the lock holder, and only if nobody recorded one since we read the
#: state (-1: not the leader any more, 0: somebody else did, 1: ours to fire)
_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local current = redis.call('HGET', KEYS[2], ARGV[2])
if (current or '') ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
return 1
"""


class ManualClock:
    """A clock for tests: unix seconds that move only when told."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, moment: float | _dt.datetime) -> None:
        self.now = moment.timestamp() if isinstance(moment, _dt.datetime) else float(moment)


@dataclass
class Entry:
    """One ``beat_schedule`` item."""

    name: str
    task: str
    schedule: Any
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    @property
    def signature(self) -> str:
        """What identifies the timing: a change of it in code restarts the entry's grid."""
        return repr(self.schedule)

    @classmethod
    def from_config(cls, name: str, spec: Any) -> "Entry":
        if not isinstance(spec, dict) or "task" not in spec or "schedule" not in spec:
            raise ConfigurationError(f"beat entry {name!r} needs 'task' and 'schedule'")
        try:
            sched = to_schedule(spec["schedule"])
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"beat entry {name!r}: {exc}") from None
        options = dict(spec.get("options") or {})
        unknown = sorted(set(options) - set(SEND_OPTIONS))
        if unknown:
            log.warning("beat entry %s: ignoring options %s", name, ", ".join(unknown))
            options = {k: v for k, v in options.items() if k in SEND_OPTIONS}
        return cls(name, spec["task"], sched, tuple(spec.get("args") or ()),
                   dict(spec.get("kwargs") or {}), options)


class Beat:
    """The scheduler. ``tick()`` does one round and says how long to wait; ``run()`` loops
    until ``stop()``. ``clock`` returns unix seconds (``ManualClock`` in tests); the lease is
    kept by Redis in real time."""

    def __init__(self, app, *, clock: Callable[[], float] = time.time,
                 lease: float | None = None, schedule: dict | None = None,
                 timezone: str | None = None) -> None:
        self.app = app
        self.clock = clock
        self.lease = float(lease or app.conf.get("beat_lease") or DEFAULT_LEASE)
        self.tz = zone(timezone or app.conf.get("timezone"))
        spec = app.conf.get("beat_schedule") if schedule is None else schedule
        self.entries = [Entry.from_config(name, item) for name, item in (spec or {}).items()]
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        prefix = app.conf.key_prefix
        tag = "{beat}" if is_cluster_url(app.broker_url) else "beat"
        self.lock_key = f"{prefix}:{tag}:lock"
        self.state_key = f"{prefix}:{tag}:state"
        self.is_leader = False
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = self.app.client
            for name, text in (("renew", _RENEW), ("release", _RELEASE), ("claim", _CLAIM)):
                self._scripts[name] = self._client.register_script(text)
        return self._client

    @property
    def renew_interval(self) -> float:
        return self.lease / 3

    # -- leadership --------------------------------------------------------------------
    def _acquire(self) -> bool:
        return bool(self.client.set(self.lock_key, self.token, nx=True,
                                    px=int(self.lease * 1000)))

    def _renew(self) -> bool:
        return bool(self._scripts["renew"](keys=[self.lock_key],
                                           args=[self.token, int(self.lease * 1000)]))

    def release(self) -> None:
        """Give up leadership now, so that a standby takes over at its next poll."""
        if self.is_leader:
            try:
                self._scripts["release"](keys=[self.lock_key], args=[self.token])
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            self.is_leader = False

    def _become_leader(self) -> None:
        self.is_leader = True
        log.info("beat %s: leader now (%d entries)", self.token, len(self.entries))
        known = {_s(k) for k in self.client.hkeys(self.state_key)}
        removed = known - {entry.name for entry in self.entries}
        if removed:
            # entries deleted from the code are forgotten, so a re-added one starts afresh
            self.client.hdel(self.state_key, *sorted(removed))
            log.info("beat: forgot removed entries %s", ", ".join(sorted(removed)))

    # -- one round ---------------------------------------------------------------------
    def tick(self) -> float:
        """Renew or try to take the lock; as leader, fire what is due. Returns the seconds
        until the next round is needed."""
        if self.is_leader and not self._renew():
            self.is_leader = False
            log.warning("beat %s: lost the leader lock", self.token)
        if not self.is_leader:
            if not self._acquire():
                return min(1.0, self.renew_interval)
            self._become_leader()
        now = self.clock()
        state = self.client.hgetall(self.state_key)
        wait = self.renew_interval
        for entry in self.entries:
            due = self._visit(entry, state.get(entry.name.encode()), now)
            if due is None:   # lost the lock while firing
                return min(1.0, self.renew_interval)
            wait = min(wait, due - now)
        return max(wait, 0.0)

    def _visit(self, entry: Entry, raw: bytes | None, now: float) -> float | None:
        """Fire ``entry`` if due; returns when it is due next (unix seconds)."""
        moment = _dt.datetime.fromtimestamp(now, self.tz)
        record = _load(raw)
        if record is None or record.get("sig") != entry.signature:
            # new (or its timing changed): its grid starts now, the first run one period on
            self._claim(entry, raw, now)
            return entry.schedule.next_after(moment).timestamp()
        last = _dt.datetime.fromtimestamp(float(record["last"]), self.tz)
        due = entry.schedule.next_after(last)
        if moment < due:
            return due.timestamp()
        # a stretch of missed slots stands for one run, not a burst
        slot = entry.schedule.last_slot(due, moment)
        claimed = self._claim(entry, raw, slot.timestamp())
        if claimed < 0:
            self.is_leader = False
            log.warning("beat %s: lost the leader lock; not sending %s", self.token, entry.name)
            return None
        if claimed:
            self._send(entry, slot.timestamp())
        return entry.schedule.next_after(slot).timestamp()

    def _claim(self, entry: Entry, raw: bytes | None, last: float) -> int:
        # recorded before sending: a crash in between loses one run rather than doubling it
        value = json.dumps({"last": last, "sig": entry.signature})
        return int(self._scripts["claim"](keys=[self.lock_key, self.state_key],
                                          args=[self.token, entry.name, raw or b"", value]))

    def task_id(self, entry: Entry, slot: float) -> str:
        """The id of the run for ``slot``: the same for every beat process, so a duplicate
        (which the claim prevents) would be visible as a repeated id."""
        return str(uuid.uuid5(ID_NAMESPACE, f"{self.state_key}|{entry.name}|{slot:.6f}"))

    def _send(self, entry: Entry, slot: float) -> None:
        try:
            result = self.app.send_task(entry.task, args=entry.args, kwargs=entry.kwargs,
                                        task_id=self.task_id(entry, slot), **entry.options)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception:
            log.exception("beat: could not send %s (%s)", entry.name, entry.task)
            return
        self.sent += 1
        log.info("beat: sent %s (%s) as %s", entry.name, entry.task, result.id)

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> None:
        if signals.beat_init.receivers:
            signals.beat_init.send(sender=self)
        log.info("beat %s starting: %d entries, lease %.1f s, timezone %s", self.token,
                 len(self.entries), self.lease, self.tz)
        try:
            while not self._stop.is_set():
                try:
                    wait = self.tick()
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    log.warning("beat: Redis unavailable (%s)", exc)
                    wait = 1.0
                self._stop.wait(min(max(wait, 0.01), self.renew_interval))
        finally:
            self.release()
            log.info("beat %s stopped", self.token)

    def stop(self) -> None:
        self._stop.set()

    def start_thread(self) -> threading.Thread:
        """Run in a daemon thread (``engine run -B``); ``stop()`` ends it."""
        thread = self._thread = threading.Thread(target=self._run_logged, name="beat",
                                                 daemon=True)
        thread.start()
        return thread

    def shutdown(self, timeout: float = 2.0) -> None:
        """Stop the thread of ``start_thread`` and wait for it to hand the lock back."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run_logged(self) -> None:
        try:
            self.run()
        except Exception:
            log.exception("beat thread crashed")


def _load(raw: bytes | None) -> dict | None:
    if not raw:
        return None
    try:
        record = json.loads(raw)
        float(record["last"])
        return record
    except (ValueError, KeyError, TypeError):
        return None




def command(args) -> int:
    """``engine beat -A tasks``: run until SIGTERM or SIGINT."""
    from engine.worker import ossignals as signals
    from engine.app import load_app
    from engine.connection import wait_for_app
    from engine.worker import hooks
    app = load_app(args.app or "")
    hooks.hand_over_logging(args.loglevel)
    # like a worker: wait for an unreachable broker, one line a retry, then give up
    wait_for_app(app)
    beat = Beat(app)
    if not beat.entries:
        log.warning("beat: beat_schedule is empty; nothing will be sent")
    signals.install(lambda intent: beat.stop() if intent == signals.SHUTDOWN else None)
    try:
        beat.run()
    finally:
        signals.restore_defaults()
    return signals.EXIT_OK
