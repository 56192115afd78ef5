"""Redis Cluster: ``redis+cluster://`` clients, and the hot path's commands routed per slot.

``make_cluster_client`` builds redis-py's ``RedisCluster`` from seed nodes (every command of
redis-py's API is then routed by redis-py). ``ClusterWire`` is ``engine.wire.Wire`` for a
cluster: the same ``call``/``pipeline``, each command sent to the master of its key's slot
on that node's own ``Wire``, MOVED/ASK followed, the slot map read again after a dropped
connection (a failover). What it promises beyond one Wire:

- a pipeline's commands for different nodes are written to every node before any reply is
  read (one round trip, not one per node), and replies come back in the caller's order;
- in a pipeline that spans nodes, an XACK (the writer's acks) is sent only once every
  command before it is confirmed: on one Redis a pipeline's order is its execution order,
  across nodes it is not, and an ack must never land before the result it follows (one
  round trip more per such batch);
- an XREADGROUP over streams of several slots (Redis refuses it in one command) reads each
  slot's streams without blocking first, then blocks on one slot at a time, a share of the
  block each (as ``engine.worker.lanes._Windows`` does for many streams).
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError
from redis.retry import Retry

from engine.wire import Wire, _CONNECTION_ERRORS, _connected, _as_redis_error

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
#: the port of a seed node given without one
CLUSTER_PORT = 6379
#: times a command follows MOVED/ASK or waits out CLUSTERDOWN/TRYAGAIN before the error
#: is the caller's
REDIRECTS = 16
#: milliseconds a blocking read over several slots blocks on each slot at least
SLOT_BLOCK_MIN_MS = 20
#: error replies after which the slot map is read again and the command sent again
_REROUTE = ("CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN")


#: ``engine.broker._CLAIM_DEAD`` on a Redis Cluster, where the heartbeat key lives in another
#: slot than the stream: the caller checks the heartbeat first (EXISTS), and the script claims only
#: entries idle for ARGV[5] ms and deletes the consumer only when nothing is left pending
#: on it. A worker restarted under the dead one's name between the check and the script
#: keeps what it fetched since (idle for less than that) and its consumer; what the dead
#: one left may then run twice (at-least-once, as a reclaim always is).
#: KEYS: stream. ARGV: group, dead consumer, claimer, count, min idle ms.
CLAIM_DEAD = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[5], '-', '+', ARGV[4],
                           ARGV[2])
local out = {}
if #pending > 0 then
  local ids, counts = {}, {}
  for i, p in ipairs(pending) do ids[i] = p[1]; counts[p[1]] = p[4] end
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], ARGV[5], unpack(ids))
  for _, entry in ipairs(claimed) do
    if type(entry) == 'table' then
      out[#out + 1] = {entry[1], entry[2] or {}, counts[entry[1]] + 1}
      counts[entry[1]] = nil
    end
  end
  for entry_id, _ in pairs(counts) do redis.call('XACK', KEYS[1], ARGV[1], entry_id) end
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  redis.pcall('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])   -- refused out of memory
end
return out
"""
#: milliseconds a dead consumer's entry must have been idle to be claimed on a cluster
CLAIM_MIN_IDLE_MS = 1000


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def wire_for(client: Any) -> "Wire | ClusterWire":
    """The hot path's commands on ``client``: a ``Wire``, or on a Redis Cluster client a
    ``ClusterWire`` (the same calls, routed per slot). Chosen once, when a broker or backend
    is made: a single Redis pays nothing for the cluster's routing."""
    if isinstance(client, RedisCluster):
        return ClusterWire(client)
    return Wire(client)


def is_cluster_url(url: str | None) -> bool:
    return (url or "").partition("://")[0].lower() in CLUSTER_SCHEMES


def make_cluster_client(url: str, options: Mapping[str, Any]) -> RedisCluster:
    """``redis+cluster://[user:pw@]h1:p1,h2:p2/?query`` (``rediss+cluster://``: TLS): a
    ``RedisCluster`` that finds every node from these seeds. Query parameters are those of
    ``redis://`` URLs (``ssl_ca_certs``...). A cluster has database 0 only."""
    seeds, kwargs = _parse(url, options)
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in seeds], **kwargs)


def make_async_cluster_client(url: str, options: Mapping[str, Any]) -> Any:
    """The same URL as a ``redis.asyncio`` cluster client (``engine.aio``)."""
    from redis.asyncio.cluster import ClusterNode as AsyncNode, RedisCluster as AsyncCluster
    seeds, kwargs = _parse(url, options)
    return AsyncCluster(startup_nodes=[AsyncNode(h, p) for h, p in seeds], **kwargs)


def _parse(url: str, options: Mapping[str, Any]) -> tuple[list[tuple[str, int]], dict]:
    parts = urlsplit(url)
    seeds = []
    for item in filter(None, parts.netloc.rpartition("@")[2].split(",")):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not host:
            raise ValueError(f"bad cluster node address {item!r}")
        try:
            seeds.append((host.strip("[]"), int(port) if port else CLUSTER_PORT))
        except ValueError:
            raise ValueError(f"bad cluster node port in {item!r}") from None
    if not seeds:
        raise ValueError("redis+cluster:// needs at least one node: "
                         "redis+cluster://host:port,host:port/")
    db = parts.path.strip("/")
    if db not in ("", "0"):
        raise ValueError(f"a Redis Cluster has database 0 only, got {db!r}")
    kwargs = dict(options)
    kwargs.pop("retry_on_error", None)   # the cluster client retries what a node drops
    for name, value in parse_qsl(parts.query):
        parser = URL_QUERY_ARGUMENT_PARSERS.get(name)
        kwargs[name] = parser(value) if parser else value
    if parts.scheme.lower() == "rediss+cluster":
        kwargs["ssl"] = True
    if parts.username:
        kwargs["username"] = unquote(parts.username)
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    return seeds, kwargs


def slot_of(key: str | bytes) -> int:
    return key_slot(key.encode() if isinstance(key, str) else key)


def shard_of(client: RedisCluster, key: str) -> tuple[int, str]:
    """The slot of ``key`` and the ``host:port`` of the master serving it now."""
    slot = slot_of(key)
    return slot, client.nodes_manager.get_node_from_slot(slot).name


def _name(args: Sequence[Any]) -> bytes:
    name = args[0]
    return (name.encode() if isinstance(name, str) else bytes(name)).upper()


def _key(args: Sequence[Any]) -> Any:
    """The key a command is routed by (its first; every key of one command must share its
    slot), or None for a command without keys."""
    name = _name(args)
    if name in (b"EVAL", b"EVALSHA"):
        return args[3] if int(args[2]) else None
    if name in (b"XREADGROUP", b"XREAD"):
        return args[_streams_at(args) + 1]
    return args[1] if len(args) > 1 else None


def _streams_at(args: Sequence[Any]) -> int:
    for i, arg in enumerate(args):
        if isinstance(arg, (str, bytes)) and arg.upper() in ("STREAMS", b"STREAMS"):
            return i
    raise redis.DataError("XREADGROUP without STREAMS")


class ClusterWire:
    """``Wire`` over a ``RedisCluster``: one ``Wire`` per master, commands routed by slot."""

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self._wires: dict[str, Wire] = {}
        self._slots: dict[Any, int] = {}     # key -> slot (queue streams repeat)
        self._policy: Retry = client.retry or Retry(NoBackoff(), 0)

    # -- routing ---------------------------------------------------------------------
    def _slot(self, key: Any) -> int | None:
        if key is None:
            return None
        slot = self._slots.get(key)
        if slot is None:
            slot = slot_of(key)
            if len(self._slots) < 100_000:
                self._slots[key] = slot
        return slot

    def _node(self, slot: int | None):
        manager = self.client.nodes_manager
        if slot is None:
            return self.client.get_default_node()
        return manager.get_node_from_slot(slot)

    def _wire(self, node) -> Wire:
        wire = self._wires.get(node.name)
        if wire is None:
            wire = self._wires[node.name] = Wire(node.redis_connection)
        return wire

    def _refresh(self) -> None:
        """Read the slot map again (after MOVED, or a node that went away)."""
        try:
            self.client.nodes_manager.initialize()
        except (redis.RedisError, OSError):
            pass   # no node answers yet: the next attempt tries again

    # -- commands ----------------------------------------------------------------------
    def call(self, *args: Any, retry: bool = True, block: float | None = None,
             forever: bool = False) -> Any:
        if _name(args) == b"XREADGROUP":
            streams_at = _streams_at(args)
            keys = args[streams_at + 1:streams_at + 1 + (len(args) - streams_at - 1) // 2]
            if len({self._slot(k) for k in keys}) > 1:
                return self._read_slots(args, streams_at, retry)
        reply = self.pipeline([args], retry=retry, raise_on_error=False,
                              block=block, forever=forever)[0]
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[Any]], *, retry: bool = True,
                 raise_on_error: bool = True, block: float | None = None,
                 forever: bool = False) -> list[Any]:
        if not commands:
            return []
        replies: list[Any] = [None] * len(commands)
        # acks wait until everything before them is in (see the module's docstring)
        first_ack = next((i for i, c in enumerate(commands) if _name(c) == b"XACK"),
                         len(commands))
        if 0 < first_ack < len(commands) and len(
                {self._node(self._slot(_key(c))).name for c in commands}) > 1:
            phases = [range(first_ack), range(first_ack, len(commands))]
        else:
            phases = [range(len(commands))]   # one node runs them in order anyway
        for phase in phases:
            if phase:
                self._send(commands, list(phase), replies, retry, block, forever)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, redis.ResponseError):
                    raise reply
        return replies

    def _send(self, commands, pending: list[int], replies: list, retry: bool,
              block: float | None, forever: bool, partial: bool = False) -> None:
        """Send ``commands[i]`` for every ``i`` in ``pending``, following redirects, until
        each has its final reply in ``replies`` (or the error is the caller's). A node that
        drops its connection costs only its own commands: the other nodes' replies are
        kept (an XREADGROUP a live node answered has delivered its entries: dropping that
        reply would strand them as pending on this consumer). Once the retries are spent
        (or with ``retry`` off) the dropped ones raise ConnectionError, or with ``partial``
        get it in their place."""
        asking: dict[int, Any] = {}    # index -> node named by an ASK reply
        redirects = failures = 0
        while pending:
            by_node: dict[str, tuple[Any, list[int]]] = {}
            for i in pending:
                node = asking.get(i) or self._node(self._slot(_key(commands[i])))
                by_node.setdefault(node.name, (node, []))[1].append(i)
            dropped = self._round_trip(commands, by_node, replies, asking, block, forever)
            if dropped:
                # a node went away (a failover?): its commands again, on the new map
                failures += 1
                self._refresh()
                if not retry or failures > getattr(self._policy, "_retries", 0):
                    if not partial:
                        error = next(iter(dropped.values()))
                        raise _as_redis_error(error) from error
                    for i, error in dropped.items():
                        replies[i] = _as_redis_error(error)
                    dropped = {}
                else:
                    time.sleep(self._policy._backoff.compute(failures))
            again = sorted(dropped)
            asking_next: dict[int, Any] = {}
            redirected = False
            for i in pending:
                if i in dropped:
                    continue
                reply = replies[i]
                if isinstance(reply, AskError) and not isinstance(reply, MovedError):
                    asking_next[i] = self.client.nodes_manager.get_node(
                        reply.host, reply.port) or ClusterNode(reply.host, reply.port)
                    again.append(i)
                elif isinstance(reply, MovedError) or (
                        isinstance(reply, redis.ResponseError)
                        and str(reply).startswith(_REROUTE)):
                    again.append(i)
                    redirected = True
            if not again:
                return
            if redirected or asking_next:
                redirects += 1
                if redirects > REDIRECTS:
                    return    # the errors stay in ``replies``: the caller's
                if redirected:
                    if redirects > 1:
                        time.sleep(min(0.05 * redirects, 1.0))
                    self._refresh()
            for node in asking_next.values():
                if node.redis_connection is None:
                    self.client.nodes_manager.create_redis_connections([node])
            pending, asking = sorted(again), asking_next

    def _round_trip(self, commands, by_node, replies, asking, block, forever
                    ) -> dict[int, BaseException]:
        """Write each node's commands, then read each node's replies. Returns the indexes
        whose node dropped the connection before their reply came (with the error)."""
        dropped: dict[int, BaseException] = {}
        sent = []
        try:
            for node, indexes in by_node.values():
                wire = self._wire(node)
                conn = wire._take()
                batch = []
                for i in indexes:
                    if i in asking:
                        batch.append(("ASKING",))
                    batch.append(commands[i])
                try:
                    _connected(conn)
                    conn.send_packed_command(conn.pack_commands(batch), check_health=False)
                except _CONNECTION_ERRORS as exc:
                    conn.disconnect()
                    wire._give(conn)
                    dropped.update((i, exc) for i in indexes)
                    continue
                sent.append((wire, conn, indexes))
            while sent:
                wire, conn, indexes = sent[0]
                wait = _wait(conn, block, forever)
                done = 0
                try:
                    for i in indexes:
                        if i in asking:
                            _read(conn, wait)
                        replies[i] = _read(conn, wait)
                        done += 1
                except _CONNECTION_ERRORS as exc:
                    conn.disconnect()
                    dropped.update((i, exc) for i in indexes[done:])
                sent.pop(0)
                wire._give(conn)
        except BaseException:
            for wire, conn, _ in sent:
                conn.disconnect()
                wire._give(conn)
            raise
        return dropped

    def _read_slots(self, args: Sequence[Any], streams_at: int, retry: bool) -> list:
        """XREADGROUP over streams of several slots: one read per slot."""
        head = list(args[:streams_at])
        block_ms = None
        if any(isinstance(a, (str, bytes)) and a.upper() in ("BLOCK", b"BLOCK") for a in head):
            at = next(i for i, a in enumerate(head)
                      if isinstance(a, (str, bytes)) and a.upper() in ("BLOCK", b"BLOCK"))
            block_ms = int(head[at + 1])
            del head[at:at + 2]
        tail = args[streams_at + 1:]
        n = len(tail) // 2
        groups: dict[int, list[int]] = {}
        for i in range(n):
            groups.setdefault(self._slot(tail[i]), []).append(i)

        def read(indexes: list[int], block: int | None) -> Any:
            extra = [] if block is None else ["BLOCK", block]
            command = [*head, *extra, "STREAMS", *(tail[i] for i in indexes),
                       *(tail[n + i] for i in indexes)]
            return command

        got: list = []
        reads = [read(indexes, None) for indexes in groups.values()]
        replies: list[Any] = [None] * len(reads)
        self._send(reads, list(range(len(reads))), replies, retry, None, False, partial=True)
        errors = [r for r in replies if isinstance(r, redis.RedisError)]
        for reply in replies:
            if not isinstance(reply, redis.RedisError):
                got += reply or []
        if errors and not got:
            raise errors[0]
        if got or block_ms is None:
            return got     # a shard that is away now is read again next time
        share = max(block_ms // len(groups), SLOT_BLOCK_MIN_MS)
        for indexes in groups.values():
            reply = self.call(*read(indexes, share), retry=retry, block=share / 1000)
            if reply:
                return reply
        return []

    def close(self) -> None:
        for wire in self._wires.values():
            wire.close()


def _wait(conn, block: float | None, forever: bool) -> Any:
    """How long to read a reply, as ``Wire.call`` decides it (False: the socket timeout)."""
    if forever:
        return None
    limit = conn.socket_timeout
    if block is not None and limit is not None and block + 1 >= limit:
        return block + limit
    return False


def _read(conn, wait: Any) -> Any:
    try:
        if wait is False:
            return conn.read_response()
        return conn.read_response(timeout=wait)
    except redis.ResponseError as exc:
        return exc


def topology(client: RedisCluster, prefix: str, queues: Sequence[str] = ()) -> dict:
    """``engine broker status`` of a cluster: each master with its slot ranges and
    replicas, and the slot and master of every queue (those the prefix's queue set names,
    and ``queues``: names to place before they are used). A queue's keys all carry its
    name as the hash tag (``{Q}``), so its slot depends on the name alone."""
    ranges: dict[str, list[list[int]]] = {}
    replicas: dict[str, list[str]] = {}
    cache = client.nodes_manager.slots_cache
    for slot in range(16384):
        nodes = cache.get(slot)
        if not nodes:
            continue
        name = nodes[0].name
        replicas[name] = sorted({n.name for n in nodes[1:]} | set(replicas.get(name, [])))
        spans = ranges.setdefault(name, [])
        if spans and spans[-1][1] == slot - 1:
            spans[-1][1] = slot
        else:
            spans.append([slot, slot])
    known = {text.decode() if isinstance(text, bytes) else text
             for text in client.smembers(f"{prefix}:queues")}
    placed = []
    for queue in sorted(known | set(queues)):
        slot, node = shard_of(client, f"{{{queue}}}")
        placed.append({"queue": queue, "slot": slot, "master": node, "used": queue in known})
    return {"masters": [{"master": name, "slots": spans, "replicas": replicas[name]}
                        for name, spans in sorted(ranges.items())],
            "queues": placed}
