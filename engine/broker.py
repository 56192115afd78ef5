"""The Redis broker: queues on streams, batched fetch and ack, dead letters, delays, reclaim.

Every key it touches (``P`` is ``key_prefix``, default ``engine``; ``{Q}`` is a queue name in
literal braces, a Redis Cluster hash tag, so each queue's keys share one shard):

================  ======  ==============================================================
key               type    what
================  ======  ==============================================================
P:q:{Q}           stream  the queue; field ``m`` holds the msgpack body; group ``engine``;
                          entries are deleted once acked, so XLEN = waiting + unacked
P:dlq:{Q}         stream  dead letters: ``m`` (original bytes), ``reason``, ``queue``, ``at``
P:delayed:{Q}     zset    bodies waiting for their eta (score: unix seconds)
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

from engine.wire import Wire

GROUP = "engine"

#: moves due delayed bodies into their stream, atomically, at most ARGV[2] at a time
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, body in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'm', body)
  redis.call('ZREM', KEYS[1], body)
end
return #due
"""

#: claims the pending entries of one dead consumer for a live one, atomically: nothing
#: happens while the dead one's heartbeat key exists (a worker restarted under the same
#: name, or one that was only slow), and entries are read from the dead consumer's own PEL
#: inside the script, so two live workers racing for them cannot both get one. A consumer
#: left with nothing pending is deleted (inside the script too: deleting a consumer drops
#: its PEL, so it must not race a restart that just fetched under that name).
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
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
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

    def queue(self, name: str) -> str:
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

    def __init__(self, client: redis.Redis, *, prefix: str = "engine") -> None:
        self.client = client
        self.wire = Wire(client)
        self.keys = Keys(prefix)
        self._move_due = client.register_script(_MOVE_DUE)
        self._claim_dead = client.register_script(_CLAIM_DEAD)
        self._known_queues: set[str] = set()

    # -- producing ---------------------------------------------------------------------
    def _note_queue(self, pipe, queue: str) -> None:
        if queue not in self._known_queues:
            pipe.sadd(self.keys.queues, queue)
            self._known_queues.add(queue)

    def enqueue(self, queue: str, body: bytes, *, eta: float | None = None) -> None:
        """Queue one body (delayed while ``eta`` is ahead). Raises redis-py's error: a
        ``ResponseError`` when Redis refused it (``OutOfMemoryError`` at maxmemory), a
        ``ConnectionError`` once the client's retries are spent."""
        if eta is None and queue in self._known_queues:
            self.wire.call("XADD", self.keys.queue(queue), "*", "m", body)
            return
        if eta is not None and eta > time.time():
            push: tuple = ("ZADD", self.keys.delayed(queue), eta, body)
        else:
            push = ("XADD", self.keys.queue(queue), "*", "m", body)
        if queue in self._known_queues:
            self.wire.call(*push)
            return
        registered, pushed = self.wire.pipeline([("SADD", self.keys.queues, queue), push],
                                                raise_on_error=False)
        if isinstance(pushed, redis.ResponseError):
            raise pushed
        # marked only once Redis has it: a refused SADD is sent again with the next message
        if not isinstance(registered, redis.ResponseError):
            self._known_queues.add(queue)

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
        first = 0   # index of the first item whose command is in ``commands``
        for index, (queue, body, eta) in enumerate(items):
            if queue not in self._known_queues:
                commands.append(("SADD", self.keys.queues, queue))
                self._known_queues.add(queue)
            if eta is not None and eta > now:
                commands.append(("ZADD", self.keys.delayed(queue), eta, body))
            else:
                stream = streams.get(queue)
                if stream is None:
                    stream = streams[queue] = self.keys.queue(queue)
                commands.append(("XADD", stream, "*", "m", body))
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
            self._known_queues.difference_update(c[2] for c in commands if c[0] == "SADD")
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

    def _push(self, pipe, queue: str, body: bytes, eta: float | None) -> None:
        self._note_queue(pipe, queue)
        if eta is not None and eta > time.time():
            pipe.zadd(self.keys.delayed(queue), {body: eta})
        else:
            pipe.xadd(self.keys.queue(queue), {"m": body})

    # -- consuming ---------------------------------------------------------------------
    def ensure_groups(self, queues: Sequence[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.xgroup_create(self.keys.queue(queue), GROUP, id="0", mkstream=True)
            pipe.sadd(self.keys.queues, queue)
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
        return self.wire.call(*args, block=None if block_ms is None else block_ms / 1000) or []

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

    def dead_letter(self, pipe, queue: str, raw: bytes, reason: str) -> None:
        """Add to ``pipe`` the commands that file ``raw`` in the queue's dead-letter stream."""
        pipe.xadd(self.keys.dlq(queue), {"m": raw, "reason": reason, "queue": queue,
                                          "at": f"{time.time():.6f}"})

    def requeue(self, stream: str, entries: list[tuple[str, bytes]]) -> None:
        """Give fetched entries back at once: add fresh copies to the stream and ack the
        originals, in one MULTI so that a crash cannot lose or double them."""
        if not entries:
            return
        pipe = self.client.pipeline(transaction=True)
        for entry_id, raw in entries:
            pipe.xadd(stream, {"m": raw})
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
                        count: int = 200) -> list[tuple[str, list, dict[str, int]]]:
        """Claim the pending entries of consumers whose heartbeat key has expired.

        Returns ``[(stream, entries, deliveries_by_id)]`` where deliveries include this one.
        Liveness is decided by the heartbeat keys, never by how long a task has run: a
        message is never taken from a live worker. ``alive`` only spares round trips; the
        decisive check runs inside the claim script (see ``_CLAIM_DEAD``).
        """
        claimed = []
        for queue in queues:
            stream = self.keys.queue(queue)
            try:
                consumers = self.client.xinfo_consumers(stream, GROUP)
            except redis.ResponseError:
                continue
            for info in consumers:
                name = _s(info["name"])
                if name == consumer or name in alive:
                    continue
                # a dead consumer with nothing pending is deleted too (XINFO stays short)
                rows = self._claim_dead(keys=[stream, self.keys.worker(name)],
                                        args=[GROUP, name, consumer, count])
                if not rows:
                    continue
                entries = [(entry_id, _pairs(fields) or None) for entry_id, fields, _ in rows]
                deliveries = {_s(entry_id): int(n) for entry_id, _, n in rows}
                claimed.append((stream, entries, deliveries))
        return claimed

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


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
