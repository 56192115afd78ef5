"""The Redis broker: queues on streams, batched fetch and ack, dead letters, delays, reclaim.

Every key it touches (``P`` is ``key_prefix``, default ``engine``; ``{Q}`` is a queue name in
literal braces, a Redis Cluster hash tag, so each queue's keys share one shard):

================  ======  ==============================================================
key               type    what
================  ======  ==============================================================
P:q:{Q}           stream  the queue; field ``m`` holds the msgpack body (and ``s`` its
                          signature, with ``security_key``: ``engine.signing``); group
                          ``engine``; entries are deleted once acked, so XLEN = waiting +
                          unacked; priority 0 (the default: producers that know no priority)
P:q:{Q}:pN        stream  priority N of the queue (1 to 9, higher runs first), as above
P:priorities      set     ``Q:N`` for every queue and priority level above 0 ever used
P:dlq:{Q}         stream  dead letters: ``m`` (original bytes), ``reason``, ``queue``, ``at``
P:delayed:{Q}     zset    bodies waiting for their eta (score: unix seconds); signed
                          ones in their envelope (``S`` + signature + body)
P:queues          set     every queue name ever used (inspect, purge, monitor)
P:worker:<name>   string  heartbeat of a live worker, with a TTL of ``worker_lost_after``
P:workers         zset    worker name -> last heartbeat (unix seconds)
P:revoked         zset    task id -> when the revocation is forgotten (unix seconds)
P:control         pubsub  broadcast commands to workers (``engine.control``)
================  ======  ==============================================================

Result keys are in ``engine.results``; event keys in ``engine.events``.
"""

from __future__ import annotations

import time
from typing import Iterable, Sequence

import redis

from engine.cluster import CLAIM_DEAD, CLAIM_MIN_IDLE_MS, is_cluster, wire_for
from engine.signing import Signer
from engine.wire import text as _s

GROUP = "engine"

#: moves due delayed bodies into their stream, atomically, at most ARGV[2] at a time. An
#: enveloped member (``S`` + 64 hex digits + body, see ``engine.signing``) becomes ``m`` and
#: ``s`` again, so a signature made by the producer reaches the worker (the mover holds no
#: key); a body with a ``priority`` goes to that level's stream (same slot: the name keeps
#: {Q})
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  local body, sig = member, nil
  if string.byte(member, 1) == 83 and #member > 65 then
    body, sig = string.sub(member, 66), string.sub(member, 2, 65)
  end
  local stream = KEYS[2]
  if string.find(body, 'priority', 1, true) then
    local ok, decoded = pcall(cmsgpack.unpack, body)
    local level = ok and type(decoded) == 'table' and tonumber(decoded['priority'])
    if level and level >= 1 and level <= 9 then stream = stream .. ':p' .. math.floor(level) end
  end
  if sig then
    redis.call('XADD', stream, '*', 'm', body, 's', sig)
  else
    redis.call('XADD', stream, '*', 'm', body)
  end
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""

#: priority levels a queue may have besides 0
PRIORITIES = range(1, 10)

#: claims the pending entries of one dead consumer for a live one, atomically: nothing
#: happens while the dead one's heartbeat key exists (a worker restarted under the same
#: name, or one that was only slow), and entries are read from the dead consumer's own PEL
#: inside the script, so two live workers racing for them cannot both get one. A consumer
#: left with nothing pending is deleted (inside the script too: deleting a consumer drops
#: its PEL, so it must not race a restart that just fetched under that name). Out of memory
#: Redis refuses DELCONSUMER as a script's first write: ``pcall`` leaves that consumer for a
#: later round, and the claim does not fail.
#: Returns ``{{id, fields, deliveries}, ...}``.
#: KEYS: stream, heartbeat key. ARGV: group, dead consumer, claimer, count.
_CLAIM_DEAD = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[4], ARGV[2])
local out = {}
if #pending > 0 then
  local ids, counts = {}, {}
  for i, p in ipairs(pending) do ids[i] = p[1]; counts[p[1]] = p[4] end
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, unpack(ids))
  for _, entry in ipairs(claimed) do
    if type(entry) == 'table' then
      out[#out + 1] = {entry[1], entry[2] or {}, counts[entry[1]] + 1}
      counts[entry[1]] = nil
    end
  end
  -- entries deleted while pending are claimed but not returned (Redis 6): ack them, or
  -- they would stay pending on the claimer for ever
  for entry_id, _ in pairs(counts) do redis.call('XACK', KEYS[1], ARGV[1], entry_id) end
end
if #pending < tonumber(ARGV[4]) then
  redis.pcall('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return out
"""


class EnqueueError(Exception):
    """``enqueue_many`` did not queue every item: ``error`` is redis-py's error (the first
    refusal, or the lost connection), ``sent`` and ``unsent`` the indexes of the items that
    Redis confirmed and of the rest (see ``Broker.enqueue_many``)."""

    def __init__(self, error: Exception, *, sent: list[int], unsent: list[int]) -> None:
        super().__init__(f"{len(sent)} of {len(sent) + len(unsent)} queued: {error}")
        self.error = error
        self.sent = sent
        self.unsent = unsent


class Keys:
    """Key names for one prefix."""

    def __init__(self, prefix: str = "engine") -> None:
        self.prefix = prefix
        self.queues = f"{prefix}:queues"
        self.workers = f"{prefix}:workers"
        self.revoked = f"{prefix}:revoked"
        self.control = f"{prefix}:control"
        self.events = f"{prefix}:events"
        self.priorities = f"{prefix}:priorities"

    def queue(self, name: str, priority: int = 0) -> str:
        if priority:
            return f"{self.prefix}:q:{{{name}}}:p{priority}"
        return f"{self.prefix}:q:{{{name}}}"

    def dlq(self, name: str) -> str:
        return f"{self.prefix}:dlq:{{{name}}}"

    def delayed(self, name: str) -> str:
        return f"{self.prefix}:delayed:{{{name}}}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def queue_name(self, stream_key: str | bytes) -> str:
        if isinstance(stream_key, bytes):
            stream_key = stream_key.decode()
        return stream_key[stream_key.index("{") + 1:stream_key.rindex("}")]


class Broker:
    """Queue operations on one Redis client. Safe to share between threads (redis-py and
    ``Wire`` pool connections), but the worker gives its fetch threads their own client to
    keep blocking reads off the connections used for acks. The hot commands (XADD of one
    message or many, XREADGROUP) go through ``self.wire``; the rest through redis-py."""

    def __init__(self, client: redis.Redis, *, prefix: str = "engine",
                 signer: Signer | None = None) -> None:
        self.client = client
        #: signs every body this broker sends (``engine.signing``); None: unsigned
        self.signer = signer
        self.wire = wire_for(client)
        self.keys = Keys(prefix)
        self._move_due = client.register_script(_MOVE_DUE)
        self._claim_dead = client.register_script(_CLAIM_DEAD)
        #: on a Redis Cluster (the heartbeat key in another slot): ``engine.cluster.CLAIM_DEAD``
        self._claim_dead_cluster = (client.register_script(CLAIM_DEAD)
                                    if is_cluster(client) else None)
        self._known_queues: set = set()    # queue names, and (queue, priority) pairs

    # -- producing ---------------------------------------------------------------------
    def enqueue(self, queue: str, body: bytes, *, eta: float | None = None,
                priority: int = 0) -> None:
        """Queue one body (delayed while ``eta`` is ahead). Raises redis-py's error: a
        ``ResponseError`` when Redis refused it (``OutOfMemoryError`` at maxmemory), a
        ``ConnectionError`` once the client's retries are spent."""
        commands = self.enqueue_commands(queue, body, eta=eta, priority=priority)
        if len(commands) == 1:
            self.wire.call(*commands[0])
            return
        replies = self.wire.pipeline(commands, raise_on_error=False)
        # registrations count as known only once Redis has them: a refused SADD is sent
        # again with the next message
        self._unmark([c for c, r in zip(commands, replies)
                      if c[0] == "SADD" and isinstance(r, redis.ResponseError)])
        if isinstance(replies[0], redis.ResponseError):
            raise replies[0]

    def enqueue_commands(self, queue: str, body: bytes, *, eta: float | None = None,
                         priority: int = 0) -> list[tuple]:
        """What ``enqueue`` sends (the async producer, ``engine.aio``, sends the same): the
        push first, and the first time this broker sees the queue (or the queue's priority
        level), its SADD to the queue set (or the levels set)."""
        commands = [self.push_command(queue, body, eta, priority)]
        if queue not in self._known_queues:
            commands.append(("SADD", self.keys.queues, queue))
            self._known_queues.add(queue)
        if priority and (queue, priority) not in self._known_queues:
            commands.append(("SADD", self.keys.priorities, f"{queue}:{priority}"))
            self._known_queues.add((queue, priority))
        return commands

    def _unmark(self, commands: list[tuple]) -> None:
        """Forget the registrations (SADDs) among ``commands``: Redis may not have them."""
        for command in commands:
            if command[0] != "SADD":
                continue
            if command[1] == self.keys.queues:
                self._known_queues.discard(command[2])
            else:
                queue, _, level = command[2].rpartition(":")
                self._known_queues.discard((queue, int(level)))

    def enqueue_many(self, items: Iterable[tuple[str, bytes, float | None]], *,
                     chunk: int = 2000) -> None:
        """Send in pipelines of ``chunk`` commands (XADD, or ZADD for a future eta).

        Redis runs every command of a pipeline even after one is refused, so each reply
        says whether its item was queued. When some were not, no further pipeline is sent
        and ``EnqueueError`` lists which items (by index) were queued and which were not."""
        items = items if isinstance(items, list) else list(items)
        commands: list[tuple] = []
        streams: dict[str, str] = {}
        now = time.time()
        signer = self.signer
        first = 0   # index of the first item whose command is in ``commands``
        for index, (queue, body, eta) in enumerate(items):
            if queue not in self._known_queues:
                commands.append(("SADD", self.keys.queues, queue))
                self._known_queues.add(queue)
            if eta is not None and eta > now:
                commands.append(self.delay_command(queue, body, eta))
            else:
                stream = streams.get(queue)
                if stream is None:
                    stream = streams[queue] = self.keys.queue(queue)
                if signer is None:
                    commands.append(("XADD", stream, "*", "m", body))
                else:
                    commands.append(("XADD", stream, "*", "m", body, "s", signer.sign(body)))
            if len(commands) >= chunk:
                self._send_chunk(commands, first, len(items))
                commands = []
                first = index + 1
        if commands:
            self._send_chunk(commands, first, len(items))

    def _send_chunk(self, commands: list[tuple], first: int, total: int) -> None:
        """One pipeline of ``enqueue_many``, whose items are ``first`` onwards (of ``total``)."""
        try:
            replies = self.wire.pipeline(commands, raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # what this pipeline did is unknown: its SADDs are sent again next time
            self._unmark(commands)
            raise EnqueueError(exc, sent=list(range(first)),
                               unsent=list(range(first, total))) from exc
        error_type = redis.ResponseError
        for reply in replies:
            if isinstance(reply, error_type):
                break
        else:
            return
        failed: list[int] = []
        error: redis.ResponseError | None = None
        index = first
        for command, reply in zip(commands, replies):
            is_item = command[0] != "SADD"
            if isinstance(reply, error_type):
                error = error or reply
                if is_item:
                    failed.append(index)
                else:
                    self._known_queues.discard(command[2])
            if is_item:
                index += 1
        refused = set(failed)
        raise EnqueueError(error, sent=[i for i in range(index) if i not in refused],
                           unsent=failed + list(range(index, total)))

    def push_command(self, queue: str, body: bytes, eta: float | None = None,
                     priority: int = 0) -> tuple:
        """XADD to the queue (at its ``priority``), or ZADD to its delayed set when ``eta``
        is still to come (the body carries its priority there)."""
        if eta is not None and eta > time.time():
            return self.delay_command(queue, body, eta)
        stream = self.keys.queue(queue, priority)
        if self.signer is None:
            return ("XADD", stream, "*", "m", body)
        return ("XADD", stream, "*", "m", body, "s", self.signer.sign(body))

    def levels(self) -> dict[str, list[int]]:
        """Queue -> its priority levels above 0 that were ever used, highest first."""
        found: dict[str, list[int]] = {}
        for item in self.client.smembers(self.keys.priorities):
            queue, _, level = _s(item).rpartition(":")
            if level.isdigit() and int(level) in PRIORITIES:
                found.setdefault(queue, []).append(int(level))
        return {queue: sorted(levels, reverse=True) for queue, levels in found.items()}

    def delay_command(self, queue: str, body: bytes, eta: float) -> tuple:
        """ZADD to the delayed set whatever ``eta`` (the mover sends it when due); a signed
        body goes in its envelope (the same member each time: a ZADD sent twice is one)."""
        if self.signer is not None:
            body = self.signer.wrap(body)
        return ("ZADD", self.keys.delayed(queue), eta, body)

    # -- consuming ---------------------------------------------------------------------
    def ensure_groups(self, queues: Sequence[str], levels: Sequence[tuple[str, int]] = ()
                      ) -> None:
        """The consumer group on every queue's stream (and on these (queue, priority)
        streams), created where missing."""
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.xgroup_create(self.keys.queue(queue), GROUP, id="0", mkstream=True)
            pipe.sadd(self.keys.queues, queue)
        for queue, level in levels:
            pipe.xgroup_create(self.keys.queue(queue, level), GROUP, id="0", mkstream=True)
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, redis.ResponseError) and "BUSYGROUP" not in str(result):
                raise result

    def fetch(self, consumer: str, streams: dict[str, str], *, count: int,
              block_ms: int | None) -> list:
        """One XREADGROUP: ``streams`` maps stream key -> id (``>`` new, ``0`` own pending).

        Returns ``[[stream_key, [[entry_id, fields | None], ...]], ...]`` as Redis sends it:
        ``fields`` a flat ``[name, value, ...]`` list (``wire.fields_get`` reads one), None for
        an entry deleted while pending."""
        args: list = ["XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        args.append("STREAMS")
        args.extend(streams)
        args.extend(streams.values())
        # a ">" read resent after a dropped connection would lose what the first one
        # handed over: the caller sees the error (``engine.worker.unread``)
        return self.wire.call(*args, retry=">" not in streams.values(),
                              block=None if block_ms is None else block_ms / 1000) or []

    def ack(self, by_stream: dict[str, list]) -> None:
        self.wire.pipeline(self.ack_commands(by_stream))

    @staticmethod
    def ack_commands(by_stream: dict[str, list]) -> list[tuple]:
        """XACK and XDEL of each stream's ids: acked entries are deleted, so the stream holds
        only what is waiting or running, its memory stays bounded and XLEN - pending is the
        backlog."""
        commands: list[tuple] = []
        for stream, ids in by_stream.items():
            commands.append(("XACK", stream, GROUP, *ids))
            commands.append(("XDEL", stream, *ids))
        return commands

    def dead_letter_command(self, queue: str, raw: bytes, reason: str) -> tuple:
        """The XADD that files ``raw`` in the queue's dead-letter stream."""
        return ("XADD", self.keys.dlq(queue), "*", "m", raw, "reason", reason, "queue", queue,
                "at", f"{time.time():.6f}")

    def requeue(self, stream: str, entries: list[tuple[str, bytes]]) -> None:
        """Give fetched entries back at once: add fresh copies to the stream and ack the
        originals, in one MULTI so that a crash cannot lose or double them."""
        if not entries:
            return
        pipe = self.client.pipeline(transaction=True)
        for entry_id, raw in entries:
            pipe.xadd(stream, {"m": raw} if self.signer is None
                      else {"m": raw, "s": self.signer.sign(raw)})
        ids = [entry_id for entry_id, _ in entries]
        pipe.xack(stream, GROUP, *ids)
        pipe.xdel(stream, *ids)
        pipe.execute()

    def close(self) -> None:
        self.wire.close()

    def move_due(self, queues: Sequence[str], *, now: float | None = None,
                 batch: int = 500) -> int:
        """Move delayed messages whose eta has come into their streams."""
        at = time.time() if now is None else now
        moved = 0
        for queue in queues:
            moved += self._move_due(keys=[self.keys.delayed(queue), self.keys.queue(queue)],
                                    args=[at, batch])
        return moved

    def claim_from_dead(self, consumer: str, queues: Sequence[str], *, alive: set[str],
                        count: int = 200, streams: Sequence[str] | None = None
                        ) -> list[tuple[str, list, dict[str, int]]]:
        """Claim the pending entries of consumers whose heartbeat key has expired.

        Returns ``[(stream, entries, deliveries_by_id)]`` where deliveries include this one,
        at most ``count`` entries in all (the claimer's prefetch room).
        Liveness is decided by the heartbeat keys, never by how long a task has run: a
        message is never taken from a live worker. ``alive`` only spares round trips; the
        decisive check runs inside the claim script (see ``_CLAIM_DEAD``).
        """
        claimed: list = []
        try:
            self._claim_into(claimed, consumer, streams or [self.keys.queue(queue)
                                                            for queue in queues],
                             alive=alive, left=count)
        except redis.RedisError:
            if not claimed:
                raise
            # what was claimed is pending on the caller now: raising would strand it there
        return claimed

    def _claim_into(self, claimed: list, consumer: str, streams: Sequence[str], *,
                    alive: set[str], left: int) -> None:
        """``claim_from_dead``'s rounds, each claim added to ``claimed`` as it is made;
        ``left`` is the caller's budget, across every stream and dead consumer."""
        for stream in streams:
            if left <= 0:
                break
            try:
                consumers = self.client.xinfo_consumers(stream, GROUP)
            except redis.ResponseError:
                continue
            for info in consumers:
                name = _s(info["name"])
                if name == consumer or name in alive or left <= 0:
                    continue
                # a dead consumer with nothing pending is deleted too (XINFO stays short)
                if self._claim_dead_cluster is None:
                    rows = self._claim_dead(keys=[stream, self.keys.worker(name)],
                                            args=[GROUP, name, consumer, left])
                elif self.client.exists(self.keys.worker(name)):
                    continue
                else:
                    rows = self._claim_dead_cluster(
                        keys=[stream], args=[GROUP, name, consumer, left, CLAIM_MIN_IDLE_MS])
                if not rows:
                    continue
                left -= len(rows)
                entries = [(entry_id, _pairs(fields) or None) for entry_id, fields, _ in rows]
                deliveries = {_s(entry_id): int(n) for entry_id, _, n in rows}
                claimed.append((stream, entries, deliveries))

    def alive_workers(self) -> set[str]:
        names = self.client.zrange(self.keys.workers, 0, -1)
        if not names:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.exists(self.keys.worker(_s(name)))
        return {_s(n) for n, live in zip(names, pipe.execute()) if live}

    # -- inspection --------------------------------------------------------------------
    def known_queues(self) -> list[str]:
        return sorted(_s(q) for q in self.client.smembers(self.keys.queues))

    def depth(self, queue: str) -> dict[str, int]:
        """Messages waiting (not yet delivered), delivered but unacked, delayed, dead."""
        stream = self.keys.queue(queue)
        pipe = self.client.pipeline(transaction=False)
        pipe.xinfo_groups(stream)
        pipe.xlen(stream)
        pipe.zcard(self.keys.delayed(queue))
        pipe.xlen(self.keys.dlq(queue))
        groups, length, delayed, dead = pipe.execute(raise_on_error=False)
        waiting = length if isinstance(length, int) else 0
        pending = 0
        if isinstance(groups, list):
            for group in groups:
                if _s(group["name"]) == GROUP:
                    pending = int(group.get("pending") or 0)
                    lag = group.get("lag")
                    waiting = int(lag) if lag is not None else max(waiting - pending, 0)
        return {"waiting": waiting, "unacked": pending,
                "delayed": delayed if isinstance(delayed, int) else 0,
                "dead": dead if isinstance(dead, int) else 0}

    def purge(self, queue: str) -> int:
        """Delete every waiting and delayed message of ``queue``; returns how many."""
        # XTRIM keeps the consumer group: messages running now can still be acked
        counts = self.depth(queue)
        pipe = self.client.pipeline(transaction=True)
        pipe.xtrim(self.keys.queue(queue), maxlen=0, approximate=False)
        pipe.delete(self.keys.delayed(queue))
        pipe.execute()
        return counts["waiting"] + counts["delayed"]


def _pairs(flat: list) -> dict:
    """A flat ``[field, value, ...]`` reply (as a script returns it) -> dict."""
    return dict(zip(flat[::2], flat[1::2]))
