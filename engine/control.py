"""Remote control: revocations, broadcast commands to workers, and their replies.

A command is a msgpack map published on ``P:control``: ``cmd``, ``destination`` (worker
names or shell patterns such as ``w@host-*``, the supervisors of one ``engine run
--processes N``; None for all) and ``reply_to``. Each worker's presence thread puts it on the
supervisor's inbox, and ``engine.worker.commands`` handles it on the loop. With
``security_key`` commands are published signed, in an envelope (``engine.signing``), and a
worker with a key ignores any that does not verify. Replies go to the
list ``reply_to`` (``P:reply:<uuid>``, expiring) which the caller pops with a timeout.
Revocations also live in the ``P:revoked`` sorted set (id -> when to forget it) for workers
started later. This module is the calling side; it prints nothing (``engine.console`` does).
"""

from __future__ import annotations

import fnmatch
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable

import msgpack

from engine import signing
from engine.cluster import is_cluster

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.signing import Signer

#: seconds an unread reply list is kept
REPLY_TTL = 60
#: verbs ``engine inspect`` and ``engine control`` know
INSPECT_VERBS = ("ping", "stats", "active", "reserved", "registered", "queues")
CONTROL_VERBS = ("shutdown", "revoke", "pool-grow", "pool-shrink", "rate-limit", "pause",
                 "resume")


# -- the calling side -------------------------------------------------------------------
def revoke(app: "Engine", task_id: str, *, terminate: bool = False,
           reply_to: str | None = None) -> int:
    """Remember the revocation and tell the live workers; returns how many heard it."""
    keys = app.broker.keys
    command = encode({"cmd": "revoke", "id": task_id, "terminate": terminate,
                      "reply_to": reply_to}, app.signer)
    if is_cluster(app.client):
        # a cluster pipeline refuses PUBLISH (redis-py): the set first, then the news
        app.client.zadd(keys.revoked, {task_id: time.time() + app.conf.revoke_expires})
        return app.client.publish(keys.control, command)
    pipe = app.client.pipeline(transaction=False)
    pipe.zadd(keys.revoked, {task_id: time.time() + app.conf.revoke_expires})
    pipe.publish(keys.control, command)
    return pipe.execute()[1]


def revoked_ids(app: "Engine") -> set[str]:
    keys = app.broker.keys
    pipe = app.client.pipeline(transaction=False)
    pipe.zremrangebyscore(keys.revoked, "-inf", time.time())
    pipe.zrange(keys.revoked, 0, -1)
    _, ids = pipe.execute()
    return {i.decode() if isinstance(i, bytes) else i for i in ids}


def broadcast(app: "Engine", cmd: str, *, destination: list[str] | None = None,
              timeout: float = 1.0, **arguments: Any) -> list[dict]:
    """Send ``cmd`` to every worker (or those named) and gather replies until all that
    heard it answered or ``timeout`` seconds passed. Each reply: ``{"worker", "reply"}``."""
    reply_to = f"{app.broker.keys.prefix}:reply:{uuid.uuid4().hex}"
    command = {"cmd": cmd, "destination": destination or None, "reply_to": reply_to,
               **arguments}
    if cmd == "revoke":
        heard = revoke(app, arguments["id"], terminate=bool(arguments.get("terminate")),
                       reply_to=reply_to)
    else:
        heard = app.client.publish(app.broker.keys.control, encode(command, app.signer))
    # PUBLISH counts subscribers: one per live worker; a pattern may match any of them
    expected = min(len(destination), heard) if destination and not any(
        map(is_pattern, destination)) else heard
    return gather(app, reply_to, expected, timeout)


def is_pattern(destination: str) -> bool:
    return any(c in destination for c in "*?[")


def addressed(name: str, destination: list[str] | None) -> bool:
    """Whether worker ``name`` is one of ``destination`` (names or ``fnmatch`` patterns,
    case-sensitive; None or empty: every worker)."""
    if not destination:
        return True
    return name in destination or any(
        isinstance(d, str) and is_pattern(d) and fnmatch.fnmatchcase(name, d)
        for d in destination)


def gather(app: "Engine", reply_to: str, expected: int, timeout: float,
           on_reply: Callable[[dict], Any] | None = None) -> list[dict]:
    """Up to ``expected`` replies from ``reply_to`` within ``timeout`` s, by worker name;
    ``on_reply`` sees each one as it comes."""
    replies: list[dict] = []
    deadline = time.monotonic() + timeout
    client = app.client
    try:
        while len(replies) < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            item = client.blpop([reply_to], timeout=max(left, 0.01))
            if item is None:
                break
            reply = msgpack.unpackb(item[1], raw=False)
            if on_reply is not None:
                on_reply(reply)
            replies.append(reply)
    finally:
        client.delete(reply_to)
    return sorted(replies, key=lambda r: r.get("worker", ""))


def queue_depths(app: "Engine") -> dict[str, dict[str, int]]:
    broker = app.broker
    return {queue: broker.depth(queue) for queue in broker.known_queues()}


# -- wire format -----------------------------------------------------------------------
class Refused(ValueError):
    """A control command without a valid signature, heard by a worker with a key."""


def encode(command: dict, signer: "Signer | None" = None) -> bytes:
    """msgpack; with a signer, in its envelope (``engine.signing``)."""
    raw = msgpack.packb(command, use_bin_type=True)
    return raw if signer is None else signer.wrap(raw)


def decode(raw: bytes, signer: "Signer | None" = None) -> dict:
    """The command; with a signer, ``Refused`` unless it came signed with one of its keys."""
    raw, signature = signing.unwrap(raw)
    if signer is not None and not signer.verify(raw, signature):
        raise Refused("unsigned control command" if signature is None
                      else "control command with a bad signature")
    command = msgpack.unpackb(raw, raw=False)
    if not isinstance(command, dict) or "cmd" not in command:
        raise ValueError("control message without 'cmd'")
    return command
