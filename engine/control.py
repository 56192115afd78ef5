"""Remote control: revocations and broadcast commands to workers through Redis.

Producers call ``revoke``; workers subscribe to ``P:control`` and hand each command to
``Supervisor.on_control`` in their own loop. Revocations also live in the ``P:revoked``
sorted set (id -> when to forget it), so that a worker started later still honours them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgpack

if TYPE_CHECKING:
    from engine.app import Engine


def revoke(app: "Engine", task_id: str, *, terminate: bool = False) -> None:
    keys = app.broker.keys
    pipe = app.client.pipeline(transaction=False)
    pipe.zadd(keys.revoked, {task_id: time.time() + app.conf.revoke_expires})
    pipe.publish(keys.control, encode({"cmd": "revoke", "id": task_id, "terminate": terminate}))
    pipe.execute()


def revoked_ids(app: "Engine") -> set[str]:
    keys = app.broker.keys
    pipe = app.client.pipeline(transaction=False)
    pipe.zremrangebyscore(keys.revoked, "-inf", time.time())
    pipe.zrange(keys.revoked, 0, -1)
    _, ids = pipe.execute()
    return {i.decode() if isinstance(i, bytes) else i for i in ids}


def encode(command: dict) -> bytes:
    return msgpack.packb(command, use_bin_type=True)


def decode(raw: bytes) -> dict:
    command = msgpack.unpackb(raw, raw=False)
    if not isinstance(command, dict) or "cmd" not in command:
        raise ValueError("control message without 'cmd'")
    return command
