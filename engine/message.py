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

Anything else is refused with a TypeError; pickle is never used. So is a map key or a set
member that would not come back hashable (a tuple comes back as a list, a frozenset as a
set): producers refuse it rather than send what no worker could decode.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
import time
import os
import uuid
from typing import Any

import msgpack

from pools.base import Job

PROTOCOL_VERSION = 1
#: keys every task message must have, with their types
REQUIRED = {"v": int, "id": str, "task": str, "args": list, "kwargs": dict, "retries": int}
OPTIONAL_NUMBERS = ("eta", "expires", "soft", "hard")
#: the largest ``retries`` a message may carry: a counter past it is forged or corrupt (a real
#: task never retries two billion times), and a retry must still be able to add one to it
MAX_RETRIES = 2**31 - 1   # (inlined in decode_message: keep both in step)
#: exact types that hold no map or set, so no key the decoder could fail to rebuild
_LEAVES = frozenset({str, int, float, bool, type(None), bytes, _dt.datetime, _dt.date,
                     _dt.timedelta, uuid.UUID, decimal.Decimal})
#: what the strict packer leaves to the lenient one: the built-in types msgpack packs natively
#: (strictly, only their exact types: subclasses come here) and the types a map key or a set
#: member could be that would not come back hashable (tuple, frozenset)
_LENIENT = (str, bytes, bytearray, memoryview, int, float, list, tuple, dict, set, frozenset)
#: what a map key or a set member may be: it must come back hashable (a tuple comes back as a
#: list and a frozenset as a set, and neither can be a key)
_KEY_TYPES = (str, bytes, int, float, _dt.date, _dt.timedelta, uuid.UUID, decimal.Decimal)

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


def _strict_default(obj: Any) -> msgpack.ExtType:
    if type(obj) is set:   # a set cannot be a map key: only its members need a look
        return msgpack.ExtType(EXT_SET, _dumps_strict(list(obj)))
    if isinstance(obj, _LENIENT):
        # a tuple or a frozenset (either may be a map key, which comes back unhashable), or
        # a subclass of a built-in type (IntEnum, OrderedDict): the lenient path packs it,
        # once check_arguments has looked inside
        raise TypeError(f"{type(obj).__name__} is left to the lenient packer")
    return _default(obj)


def _dumps_strict(obj: Any) -> bytes:
    """``dumps`` for message bodies, refusing what might not come back: a tuple anywhere
    (as a map key or set member, the decoder could not rebuild it) and subclasses of the
    built-in types. Checked by msgpack itself, in C: the common message pays nothing."""
    return msgpack.packb(obj, default=_strict_default, use_bin_type=True, strict_types=True)


def loads(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def check_arguments(task_name: str, args: Any, kwargs: Any) -> None:
    """Raise a TypeError naming the first argument that cannot be sent: one msgpack cannot
    carry, or one holding a map key or set member the decoder could not rebuild; or naming
    a keyword that is not a str. Returns when every argument can be sent."""
    for index, value in enumerate(args):
        _check_value(task_name, f"argument {index}", value)
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise TypeError(f"{task_name}: keyword names must be str, got {_short(key)}")
        _check_value(task_name, f"argument {key!r}", value)


def _check_value(task_name: str, name: str, value: Any) -> None:
    try:
        dumps(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{task_name}: {name} ({type(value).__name__}) "
                        f"cannot be sent: {exc}") from None
    problem = undecodable(value)
    if problem:
        raise TypeError(f"{task_name}: {name} ({type(value).__name__}) cannot be sent: "
                        f"it holds {problem}, which the worker could not decode (map keys "
                        f"and set members must be str, bytes, numbers, None or the "
                        f"extension types)")


def undecodable(value: Any) -> str | None:
    """What in ``value`` msgpack packs but the decoder cannot rebuild, or None: a map key or
    a set member that comes back as a list or a set (a tuple, a frozenset), unhashable. The
    worker would dead-letter such a message, so producers refuse it. ``value`` has already
    been packed, so its nesting is within msgpack's limit (and Python's recursion's)."""
    if type(value) in _LEAVES:
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if key is not None and not isinstance(key, _KEY_TYPES):
                return f"a map key of type {type(key).__name__} ({_short(key)})"
            problem = undecodable(item)
            if problem:
                return problem
    elif isinstance(value, (set, frozenset)):
        for item in value:
            if item is not None and not isinstance(item, _KEY_TYPES):
                return f"a set member of type {type(item).__name__} ({_short(item)})"
    elif isinstance(value, (list, tuple)):
        for item in value:
            problem = undecodable(item)
            if problem:
                return problem
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _seconds(name: str, value: Any) -> float:
    """A time of the message as a float; ValueError when it is not finite (an eta of +inf
    would park the message for ever, a NaN compares false with every clock)."""
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    return seconds


def encode_message(task_id: str, task: str, args: Any, kwargs: dict, *, retries: int = 0,
                   eta: float | None = None, expires: float | None = None,
                   soft: float | None = None, hard: float | None = None,
                   ignore_result: bool = False, unique: str | None = None,
                   priority: int = 0, headers: dict | None = None) -> bytes:
    """The wire body of one task message. TypeError naming the argument if it cannot be sent
    (or a worker could not decode it); ValueError for a time that is not finite."""
    arguments = list(args)
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": task_id, "task": task,
                            "args": arguments, "kwargs": kwargs, "retries": retries}
    if eta is not None:
        body["eta"] = _seconds("eta", eta)
    if expires is not None:
        body["expires"] = _seconds("expires", expires)
    if soft is not None:
        body["soft"] = _seconds("soft time limit", soft)
    if hard is not None:
        body["hard"] = _seconds("hard time limit", hard)
    if ignore_result:
        body["ignore_result"] = True
    if priority:
        body["priority"] = priority   # kept through delays and retries (engine.broker)
    if unique is not None:
        body["uq"] = unique      # the unique lock (engine.flow) the worker releases at the end
    if headers:
        body["headers"] = headers
    for name in kwargs:
        if type(name) is not str:
            break
    else:
        try:
            return _dumps_strict(body)
        except (TypeError, ValueError, OverflowError):
            pass
    # a tuple, a subclass of a built-in type, a keyword that is not a str, or something
    # that cannot be sent at all: pack leniently (a tuple as an array, an IntEnum as its
    # int), then look inside for what the decoder could not rebuild
    try:
        raw = dumps(body)
    except (TypeError, ValueError, OverflowError):
        if headers:
            try:
                dumps(headers)
            except (TypeError, ValueError, OverflowError) as exc:
                raise TypeError(f"{task}: headers cannot be sent: {exc}") from None
        check_arguments(task, arguments, kwargs)   # raises, naming the argument
        raise
    if (any(map(undecodable, arguments)) or any(map(undecodable, kwargs.values()))
            or not all(isinstance(key, str) for key in kwargs)):
        check_arguments(task, arguments, kwargs)
    return raw


def decode_message(raw: bytes) -> dict:
    """The body map of a message, checked; MessageError (with the reason) otherwise.

    Every field a worker acts on is checked for type and range: a message that names an
    absurd retry count, an eta of infinity or keyword names that are not strings is a dead
    letter with that reason, never an error later in the worker."""
    try:
        body = loads(raw)
    except Exception as exc:   # msgpack raises several unrelated types on garbage
        raise MessageError(f"undecodable message: {type(exc).__name__}: {exc}") from None
    if type(body) is not dict:
        raise MessageError(f"message is a {type(body).__name__}, not a map")
    # the common case in one expression (exact types, no optional numbers, the bounds
    # inlined: MAX_RETRIES and PROTOCOL_VERSION), then a loop over keyword names; anything
    # else takes the slow path below, which names what is wrong
    get = body.get
    task_id, kwargs, retries = get("id"), get("kwargs"), get("retries")
    if (type(task_id) is str and task_id and type(kwargs) is dict and type(retries) is int
            and 0 <= retries <= 2147483647 and get("v") == 1 and type(get("v")) is int
            and type(get("task")) is str and type(get("args")) is list
            and get("eta") is None and get("expires") is None and get("soft") is None
            and get("hard") is None):
        for name in kwargs:
            if type(name) is not str:
                break
        else:
            return body
    _refuse(body)
    return body


def _refuse(body: dict) -> None:
    """Raise MessageError naming the first field of ``body`` that is wrong (the slow path:
    messages with optional numbers come here too, and pass)."""
    for key, kind in REQUIRED.items():
        if key not in body:
            raise MessageError(f"missing required key {key!r}")
        value = body[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MessageError(f"key {key!r} must be {kind.__name__}, got {type(value).__name__}")
    if body["v"] != PROTOCOL_VERSION:
        raise MessageError(f"unsupported protocol version {body['v']!r}")
    if not body["id"]:
        raise MessageError("key 'id' must not be empty")
    if not 0 <= body["retries"] <= MAX_RETRIES:
        raise MessageError(f"key 'retries' out of range (0 to {MAX_RETRIES}): {body['retries']}")
    for name in body["kwargs"]:
        if not isinstance(name, str):
            raise MessageError(f"key 'kwargs' must have str keys, got {type(name).__name__} "
                               f"{_short(name)}")
    for key in OPTIONAL_NUMBERS:
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise MessageError(f"key {key!r} must be a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise MessageError(f"key {key!r} must be a finite number, got {value!r}")


def job_from_body(body: dict, raw: bytes, queue: str) -> Job:
    get = body.get
    headers = get("headers")
    # positional, in Job's field order: keywords cost a third more here, once a task
    job = Job(body["id"], body["task"], body["args"], body["kwargs"], raw, body["retries"],
              queue, get("soft"), get("hard"), bool(get("ignore_result", False)),
              headers if type(headers) is dict else None)
    # the canvas keys (engine.canvas.plan.BODY_KEYS); a body of the six required keys alone,
    # most messages, has none. Spelled out: a third of the cost of a frozenset test
    if len(body) > 6 and ("chain" in body or "link" in body or "chord" in body
                          or "link_error" in body or "group" in body):
        job.canvas = body
    return job


def load_job(raw: bytes, queue: str = "") -> Job:
    """Decode a wire body straight into a Job, checked (MessageError when it is not one)."""
    return job_from_body(decode_message(raw), raw, queue)


def load_accepted_job(raw: bytes) -> Job:
    """A Job of a body a worker's intake already checked (``decode_message``), for the
    pool child that runs it: decoded again, not checked again."""
    return job_from_body(loads(raw), raw, "")


def reencode(raw: bytes, **changes: Any) -> bytes:
    """The same message with some keys changed (retries, eta); None removes a key."""
    body = loads(raw)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return dumps(body)


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def uuid4_strings(block: int = 256):
    """Endless random (version 4) UUID strings, as ``str(uuid.uuid4())`` spells them, from
    one ``os.urandom`` call per ``block`` ids: a third of the cost of ``uuid4()`` each, which
    was a sixth of ``send_many``'s time."""
    urandom, variant = os.urandom, _VARIANT
    while True:
        raw = urandom(16 * block).hex()
        for i in range(0, 32 * block, 32):
            h = raw[i:i + 32]
            yield f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:]}"


def absolute_time(when: Any, name: str = "time") -> float:
    """Seconds from now or a datetime -> unix seconds (the wire's ``eta``/``expires``);
    ValueError for a number that is not finite."""
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None:   # naive means UTC (Celery's rule)
            when = when.replace(tzinfo=_dt.timezone.utc)
        return when.timestamp()
    if isinstance(when, (int, float)):
        return time.time() + finite_seconds(name, when)
    raise TypeError(f"{name}: expected seconds or a datetime, got {type(when).__name__}")


def finite_seconds(name: str, seconds: Any) -> float:
    """``seconds`` as a float; ValueError when it is not finite: an eta of +inf would park
    the message for ever, and NaN compares false with every clock."""
    value = float(seconds)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {seconds!r}")
    return value
