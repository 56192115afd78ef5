"""The msgpack codec: task arguments and results, and the task message of the wire protocol.

Plain msgpack carries None, bool, int, float, str, bytes, lists (tuples become lists) and
maps. Extension types, documented for producers in other languages (payload in brackets):

====  =========  ======================================================
code  type       payload
====  =========  ======================================================
1     datetime   ISO 8601 text (``2026-11-25T14:00:00.123456+00:00``)
2     UUID       the 16 raw bytes
3     Decimal    its text (``"12.50"``)
4     set        a msgpack array (frozenset decodes as set)
5     date       ISO 8601 text
6     timedelta  msgpack float of seconds
====  =========  ======================================================

Anything else is refused with a TypeError; pickle is never used.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import uuid
from typing import Any

import msgpack

from pools.base import Job

PROTOCOL_VERSION = 1
#: keys every task message must have, with their types
REQUIRED = {"v": int, "id": str, "task": str, "args": list, "kwargs": dict, "retries": int}
OPTIONAL_NUMBERS = ("eta", "expires", "soft", "hard")

EXT_DATETIME, EXT_UUID, EXT_DECIMAL, EXT_SET, EXT_DATE, EXT_TIMEDELTA = 1, 2, 3, 4, 5, 6


class MessageError(ValueError):
    """A message that cannot become a Job; ``reason`` goes to the dead-letter stream."""


def _default(obj: Any) -> msgpack.ExtType:
    # datetime is checked before date: it is a subclass of date
    if isinstance(obj, _dt.datetime):
        return msgpack.ExtType(EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, _dt.date):
        return msgpack.ExtType(EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(EXT_UUID, obj.bytes)
    if isinstance(obj, decimal.Decimal):
        return msgpack.ExtType(EXT_DECIMAL, str(obj).encode())
    if isinstance(obj, (set, frozenset)):
        return msgpack.ExtType(EXT_SET, dumps(list(obj)))
    if isinstance(obj, _dt.timedelta):
        return msgpack.ExtType(EXT_TIMEDELTA, msgpack.packb(obj.total_seconds()))
    raise TypeError(f"cannot serialise object of type {type(obj).__module__}.{type(obj).__qualname__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_DATETIME:
        return _dt.datetime.fromisoformat(data.decode())
    if code == EXT_UUID:
        return uuid.UUID(bytes=data)
    if code == EXT_DECIMAL:
        return decimal.Decimal(data.decode())
    if code == EXT_SET:
        return set(loads(data))
    if code == EXT_DATE:
        return _dt.date.fromisoformat(data.decode())
    if code == EXT_TIMEDELTA:
        return _dt.timedelta(seconds=msgpack.unpackb(data))
    return msgpack.ExtType(code, data)


def dumps(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def loads(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def check_arguments(task_name: str, args: Any, kwargs: Any) -> None:
    """Find the argument that cannot be serialised and raise a TypeError naming it."""
    for index, value in enumerate(args):
        try:
            dumps(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"{task_name}: argument {index} ({type(value).__name__}) "
                            f"cannot be sent: {exc}") from None
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise TypeError(f"{task_name}: keyword names must be str, got {key!r}")
        try:
            dumps(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"{task_name}: argument {key!r} ({type(value).__name__}) "
                            f"cannot be sent: {exc}") from None
    raise TypeError(f"{task_name}: arguments cannot be sent")


def encode_message(task_id: str, task: str, args: Any, kwargs: dict, *, retries: int = 0,
                   eta: float | None = None, expires: float | None = None,
                   soft: float | None = None, hard: float | None = None,
                   ignore_result: bool = False) -> bytes:
    """The wire body of one task message; TypeError naming the argument if it cannot be sent."""
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": task_id, "task": task,
                            "args": list(args), "kwargs": kwargs, "retries": retries}
    if eta is not None:
        body["eta"] = float(eta)
    if expires is not None:
        body["expires"] = float(expires)
    if soft is not None:
        body["soft"] = float(soft)
    if hard is not None:
        body["hard"] = float(hard)
    if ignore_result:
        body["ignore_result"] = True
    try:
        return dumps(body)
    except (TypeError, ValueError, OverflowError):
        check_arguments(task, args, kwargs)
        raise


def decode_message(raw: bytes) -> dict:
    """The body map of a message, checked; MessageError (with the reason) otherwise."""
    try:
        body = loads(raw)
    except Exception as exc:   # msgpack raises several unrelated types on garbage
        raise MessageError(f"undecodable message: {type(exc).__name__}: {exc}") from None
    if not isinstance(body, dict):
        raise MessageError(f"message is a {type(body).__name__}, not a map")
    # the common case in one expression (exact types, no optional numbers); anything else
    # takes the slow path below, which names what is wrong
    get = body.get
    if (get("v") == PROTOCOL_VERSION and type(get("v")) is int and type(get("id")) is str
            and type(get("task")) is str and type(get("args")) is list
            and type(get("kwargs")) is dict and type(get("retries")) is int
            and get("eta") is None and get("expires") is None and get("soft") is None
            and get("hard") is None):
        return body
    for key, kind in REQUIRED.items():
        if key not in body:
            raise MessageError(f"missing required key {key!r}")
        value = body[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MessageError(f"key {key!r} must be {kind.__name__}, got {type(value).__name__}")
    if body["v"] != PROTOCOL_VERSION:
        raise MessageError(f"unsupported protocol version {body['v']!r}")
    for key in OPTIONAL_NUMBERS:
        value = body.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise MessageError(f"key {key!r} must be a number, got {type(value).__name__}")
    return body


def job_from_body(body: dict, raw: bytes, queue: str) -> Job:
    job = Job(id=body["id"], task=body["task"], args=body["args"], kwargs=body["kwargs"],
              body=raw, retries=body["retries"], queue=queue,
              soft_limit=body.get("soft"), hard_limit=body.get("hard"),
              ignore_result=bool(body.get("ignore_result", False)))
    # the canvas keys (engine.canvas.plan.BODY_KEYS); a body of the six required keys alone,
    # most messages, has none. Spelled out: a third of the cost of a frozenset test
    if len(body) > 6 and ("chain" in body or "link" in body or "chord" in body
                          or "link_error" in body or "group" in body):
        job.canvas = body
    return job


def load_job(raw: bytes, queue: str = "") -> Job:
    """Decode a wire body straight into a Job (used in pool children)."""
    return job_from_body(decode_message(raw), raw, queue)


def reencode(raw: bytes, **changes: Any) -> bytes:
    """The same message with some keys changed (retries, eta); None removes a key."""
    body = loads(raw)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return dumps(body)
