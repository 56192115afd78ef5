"""Flow control for the whole fleet: rate limits, concurrency limits, unique tasks, pauses.

Every count lives in Redis, so it holds across workers and hosts; each script touches one
key (one hash slot). A worker asks once per fetched batch and task (``Limiter.admit``), not
once per message: what a limit holds back goes back to the queue's delayed set with the
time it may run (it waits in Redis, not in a worker, and is not counted as a delivery), so
it never blocks the other tasks of its queue.

================================  ======  ===============================================
key                               type    what
================================  ======  ===============================================
P:rate:{t:TASK}                   hash    token bucket of TASK: ``tokens``, ``at`` (ms)
P:rate_limits                     hash    TASK -> rate set at run time (``control rate-limit``)
P:conc:{t:TASK}                   hash    worker -> slots of TASK it holds (max_concurrency)
P:unique:{t:TASK}:DIGEST          string  the id of the pending or running TASK with these
                                          args and kwargs (``unique_for``), expiring
P:paused                          set     queues the fleet does not fetch
================================  ======  ===============================================
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import redis

from engine import message
from engine.wire import text

if TYPE_CHECKING:
    from engine.task import Task

log = logging.getLogger("engine.flow")

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}

#: takes up to ARGV[3] tokens from the bucket (rate ARGV[1] per second, capacity ARGV[2]),
#: refilled by the time elapsed on the Redis clock; returns {granted, ms until the next}.
_TAKE_TOKENS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, cap, want = tonumber(ARGV[1]) / 1000, tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or cap
local at = tonumber(state[2]) or now
tokens = math.min(cap, tokens + math.max(now - at, 0) * rate)
local granted = math.min(math.floor(tokens), want)
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate) + 1000)
local wait = 0
if granted < want then wait = math.ceil((1 - (tokens - math.floor(tokens))) / rate) end
return {granted, wait}
"""

#: takes up to ARGV[3] of ARGV[1] slots for worker ARGV[2]; returns how many it got
_TAKE_SLOTS = """
local used = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do used = used + tonumber(v) end
local granted = math.max(math.min(tonumber(ARGV[1]) - used, tonumber(ARGV[3])), 0)
if granted > 0 then redis.call('HINCRBY', KEYS[1], ARGV[2], granted) end
return granted
"""

#: gives one slot back (never below zero, and a field at zero is removed)
_GIVE_SLOT = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
"""

#: releases a unique lock only if it still names this task id
_RELEASE_UNIQUE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: seconds a task held back by max_concurrency waits before it is tried again
CONCURRENCY_RETRY = 0.25


def parse_rate(rate: Any) -> tuple[float, float] | None:
    """``"N/s"``, ``"N/m"``, ``"N/h"`` (or a number, or ``"N"`` alone, per second, as in
    Celery) -> (per second, burst N); None, 0 or "" -> no limit. Anything else is a
    ValueError naming the text."""
    if rate in (None, "", 0, "0", "none"):
        return None
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        return (float(rate), max(float(rate), 1.0)) if rate > 0 else None
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh])\s*)?", str(rate))
    if not found or float(found.group(1)) <= 0:
        raise ValueError(f"bad rate limit {rate!r}: expected N/s, N/m or N/h, e.g. 100/s")
    n = float(found.group(1))
    return n / _PERIODS[found.group(2) or "s"], max(n, 1.0)


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.rate_limits = f"{prefix}:rate_limits"
        self.paused = f"{prefix}:paused"

    def rate(self, task: str) -> str:
        return f"{self.prefix}:rate:{{t:{task}}}"

    def concurrency(self, task: str) -> str:
        return f"{self.prefix}:conc:{{t:{task}}}"

    def unique(self, task: str, args: Any, kwargs: dict) -> str:
        digest = hashlib.sha1(message.dumps([task, list(args), kwargs])).hexdigest()
        return f"{self.prefix}:unique:{{t:{task}}}:{digest}"


# -- producing -------------------------------------------------------------------------
def claim_unique(app: Any, key: str, task_id: str, seconds: float) -> str | None:
    """Take the unique lock ``key`` for ``task_id``: None when this call got it, else the
    id of the task already holding it."""
    client = app.client
    for _ in range(3):   # the holder may expire between the SET and the GET
        if client.set(key, task_id, nx=True, px=max(int(seconds * 1000), 1)):
            return None
        holder = client.get(key)
        if holder is not None:
            return text(holder)
    return None


def release_unique_command(key: str, task_id: str) -> tuple:
    return ("EVAL", _RELEASE_UNIQUE, 1, key, task_id)


# -- the worker side -------------------------------------------------------------------
class Limiter:
    """A worker's view of the fleet's limits: which tasks are limited, and the scripts
    that grant them. Used on the supervisor's loop only."""

    def __init__(self, app: Any, worker: str) -> None:
        self.app = app
        self.worker = worker
        self.keys = Keys(app.broker.keys.prefix)
        self.rates: dict[str, tuple[float, float]] = {}
        #: each rate as it was written ("100/s"), for inspect stats
        self.rate_texts: dict[str, str] = {}
        self.concurrency: dict[str, int] = {}
        for task in app.tasks.values():
            self._declare(task)
        #: task names with any limit: the one lookup intake makes per message
        self.names: set[str] = set(self.rates) | set(self.concurrency)
        self.paused: set[str] = set()
        #: messages this worker held back per task, in all (inspect stats)
        self.held: dict[str, int] = {}
        #: per task, the batches held back and not all due yet: (first eta, spacing, n)
        self._due: dict[str, list[tuple[float, float, int]]] = {}

    def _declare(self, task: "Task") -> None:
        rate = parse_rate(getattr(task, "rate_limit", None))
        if rate is not None:
            self.rates[task.name] = rate
            self.rate_texts[task.name] = str(task.rate_limit)
        limit = getattr(task, "max_concurrency", None)
        if limit:
            self.concurrency[task.name] = int(limit)

    def refresh(self) -> None:
        """Read the run-time rate limits and pauses from Redis (start, housekeeping)."""
        client = self.app.client
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(self.keys.rate_limits)
        pipe.smembers(self.keys.paused)
        overrides, paused = pipe.execute()
        for name, rate in overrides.items():
            self.set_rate(text(name), text(rate))
        self.paused = {text(q) for q in paused}

    def set_rate(self, task: str, rate: Any) -> None:
        try:
            parsed = parse_rate(rate)
        except ValueError as exc:
            log.warning("ignored rate limit for %s: %s", task, exc)
            return
        if parsed is None:
            self.rates.pop(task, None)   # "0": no limit, whatever the task declares
            self.rate_texts.pop(task, None)
        else:
            self.rates[task] = parsed
            self.rate_texts[task] = str(rate)
        self.names = set(self.rates) | set(self.concurrency)

    def start(self) -> None:
        self.refresh()
        # slots this worker name held in a past life are not held any more
        self.forget(self.worker)

    def admit(self, task: str, want: int) -> tuple[int, float]:
        """How many of ``want`` messages of ``task`` may run now, and for the rest, the
        seconds until the next may."""
        granted, wait = want, 0.0
        client = self.app.client
        rate = self.rates.get(task)
        if rate is not None:
            granted, wait_ms = client.eval(_TAKE_TOKENS, 1, self.keys.rate(task),
                                           rate[0], rate[1], want)
            granted, wait = int(granted), int(wait_ms) / 1000
        limit = self.concurrency.get(task)
        if limit is not None and granted:
            slots = int(client.eval(_TAKE_SLOTS, 1, self.keys.concurrency(task), limit,
                                    self.worker, granted))
            if slots < granted:
                # tokens taken for messages that cannot start are not given back: a rate
                # limit only ever errs on the slow side
                granted, wait = slots, max(wait, CONCURRENCY_RETRY)
        return granted, wait

    def release_command(self, task: str) -> tuple | None:
        """The command that gives back a concurrency slot of ``task`` (None: no limit)."""
        if task not in self.concurrency:
            return None
        return ("EVAL", _GIVE_SLOT, 1, self.keys.concurrency(task), self.worker)

    def forget_lost(self, alive: set[str]) -> None:
        """Free the concurrency slots of every worker not in ``alive`` (declared lost by
        the same heartbeat rule as redelivery)."""
        if not self.concurrency:
            return
        client = self.app.client
        keys = [self.keys.concurrency(task) for task in self.concurrency]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hkeys(key)
        for key, holders in zip(keys, pipe.execute()):
            lost = [h for h in (text(h) for h in holders) if h not in alive]
            if lost:
                log.warning("freed %s's slots of %s (worker lost)", ", ".join(lost), key)
                client.hdel(key, *lost)

    def forget(self, worker: str) -> None:
        """A worker is gone (declared lost, or this name restarting): its slots are free."""
        if self.concurrency:
            pipe = self.app.client.pipeline(transaction=False)
            for task in self.concurrency:
                pipe.hdel(self.keys.concurrency(task), worker)
            pipe.execute()

    def note_held(self, task: str, now: float, wait: float, n: int) -> None:
        """``n`` messages of ``task`` went back to the delayed set at ``now``, due as
        ``held_eta`` spreads them: counted for ``inspect stats`` (``waiting``)."""
        self.held[task] = self.held.get(task, 0) + n
        rate = self.rates.get(task)
        batches = self._due.setdefault(task, [])
        batches.append((now + max(wait, 0.001), 1.0 / rate[0] if rate else 0.0, n))
        if len(batches) > 64:   # drop the batches that are all due (amortised)
            batches[:] = [b for b in batches if b[0] + (b[2] - 1) * b[1] > now]

    def waiting(self, task: str, now: float) -> int:
        """Messages this worker held back for ``task`` that are not due yet at ``now``
        (unix time): they wait in Redis on the limit."""
        count = 0
        for first, spacing, n in self._due.get(task, ()):
            if first > now:
                count += n
            elif spacing > 0:
                count += max(n - (int((now - first) / spacing) + 1), 0)
        return count

    def in_use(self) -> dict[str, int | None]:
        """Fleet-wide slots in use of each max_concurrency task, read from Redis (one
        round trip; None for all when Redis cannot be read)."""
        names = sorted(self.concurrency)
        if not names:
            return {}
        try:
            pipe = self.app.client.pipeline(transaction=False)
            for task in names:
                pipe.hvals(self.keys.concurrency(task))
            replies = pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not read the concurrency slots in use: %s", exc)
            return dict.fromkeys(names)
        return {task: sum(int(v) for v in values) for task, values in zip(names, replies)}

    def describe(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """For ``inspect stats``: each limited task's limits as this worker sees them, the
        slots in use across the fleet, and the messages this worker holds back (waiting:
        not due yet; held_back: in all since it started)."""
        now = time.time() if now is None else now
        used = self.in_use()
        return {name: {"rate_limit": self.rate_texts.get(name),
                       "rate_per_s": (self.rates.get(name) or (None,))[0],
                       "max_concurrency": self.concurrency.get(name),
                       "in_use": used.get(name),
                       "waiting": self.waiting(name, now),
                       "held_back": self.held.get(name, 0)} for name in sorted(self.names)}


def held_eta(now: float, wait: float, index: int, rate: tuple[float, float] | None) -> float:
    """When the ``index``-th message held back should come back: spread at the rate, so
    that a flood is not fetched again all at once."""
    spacing = 1.0 / rate[0] if rate else 0.0
    return now + max(wait, 0.001) + index * spacing


def set_rate_limit(app: Any, task: str, rate: str) -> None:
    """Store a run-time rate limit for the fleet, which workers started later read too
    (validated here; "0" means no limit, whatever the task declares)."""
    parse_rate(rate)
    app.client.hset(Keys(app.broker.keys.prefix).rate_limits, task, rate)


def set_paused(app: Any, queue: str, paused: bool) -> None:
    keys = Keys(app.broker.keys.prefix)
    (app.client.sadd if paused else app.client.srem)(keys.paused, queue)



# -- reading the fleet's flow state (dashboard) ------------------------------------------
def fleet_state(app: Any) -> dict[str, Any]:
    """The limits a worker of ``app`` would apply now (the declared ones with the run-time
    ``P:rate_limits`` over them: what ``inspect stats`` reports as ``limits``), with what
    Redis holds for each: the tokens left in its bucket, the ``max_concurrency`` slots in
    use per worker; and the paused queues. Reads only."""
    limiter = Limiter(app, "")
    limiter.refresh()
    keys = limiter.keys
    names = sorted(limiter.names)
    pipe = app.client.pipeline(transaction=False)
    for name in names:
        pipe.hget(keys.rate(name), "tokens")
        pipe.hgetall(keys.concurrency(name))
    pipe.hgetall(keys.rate_limits)
    found = pipe.execute()
    overrides = {text(k): text(v) for k, v in found[-1].items()}
    tasks = {}
    for i, name in enumerate(names):
        tokens, holders = found[2 * i], found[2 * i + 1]
        rate = limiter.rates.get(name)
        held = {text(k): int(v) for k, v in holders.items() if int(v) > 0}
        tasks[name] = {
            "rate": (overrides.get(name) or getattr(app.tasks.get(name), "rate_limit", None)
                     if rate else None),
            "rate_per_s": rate[0] if rate else None,
            "tokens": float(text(tokens)) if tokens is not None and rate else None,
            "max_concurrency": limiter.concurrency.get(name),
            "slots_used": sum(held.values()), "slots": held}
    return {"tasks": tasks, "paused": sorted(limiter.paused)}
