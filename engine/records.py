"""Result records: the one format of what the backend stores for a task.

A record is a msgpack array ``[state, value, exc_type, exc_message, traceback, date_done,
retries, task, worker, runtime]``, with an 11th item ``children`` (the ids of the tasks it
sent: canvas successors) when there are any; ``value`` is spliced in already encoded by the
process that ran the task, so a result is serialised exactly once.
``decode_record`` never raises: a record it cannot read is a FAILURE saying it is malformed.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack

from engine import message

PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED = (
    "PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED")
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
_NONE = msgpack.packb(None)
_FIELDS = ("state", "value", "exc_type", "exc_message", "traceback", "date_done",
           "retries", "task", "worker", "runtime", "children")


def encode_record(state: str, value: bytes = b"", *, exc_type: str = "", exc_message: str = "",
                  traceback: str = "", retries: int = 0, task: str = "", worker: str = "",
                  runtime: float = 0.0, children: list[str] | None = None) -> bytes:
    if children:
        tail = msgpack.packb([exc_type, exc_message, traceback, time.time(), retries, task,
                              worker, runtime, children], use_bin_type=True)
        return b"\x9b" + msgpack.packb(state) + (value or _NONE) + tail[1:]
    tail = msgpack.packb([exc_type, exc_message, traceback, time.time(), retries, task,
                          worker, runtime], use_bin_type=True)
    # fixarray of 10: header, state, the spliced value, then the 8 packed items of ``tail``
    # without their own fixarray header (one byte, 0x98); 11 with the children
    return b"\x9a" + msgpack.packb(state) + (value or _NONE) + tail[1:]


def decode_record(raw: bytes) -> dict[str, Any]:
    """The record as a dict of ``_FIELDS``. A malformed one (undecodable, not an array, a
    field of the wrong type) comes back as a FAILURE whose message says what is wrong, with
    ``malformed`` set: a result key holding garbage must read as a failure, never raise."""
    try:
        items = message.loads(raw)
    except Exception as exc:   # msgpack raises several unrelated types on garbage
        return _malformed(f"undecodable ({type(exc).__name__}: {exc})")
    # the common case in one expression: the ten fields as encode_record writes them
    if (type(items) is list and len(items) == 10 and type(items[0]) is str
            and type(items[2]) is str and type(items[3]) is str and type(items[4]) is str
            and type(items[6]) is int):
        return dict(zip(_FIELDS, items))
    if not isinstance(items, list):
        return _malformed(f"a {type(items).__name__}, not an array")
    if not items:
        return _malformed("an empty array")
    record = dict(_BLANK, **dict(zip(_FIELDS, items)))
    for name, kinds in _TYPES.items():
        if not isinstance(record[name], kinds) or (isinstance(record[name], bool)
                                                   and bool not in kinds):
            return _malformed(f"field {name!r} is a {type(record[name]).__name__}")
    return record


#: the fields a record must have of these types, the ones producers act on (the others,
#: ``date_done``, ``task``, ``worker`` and ``runtime``, are only shown; ``value`` is anything
#: msgpack carries); the fast path of decode_record checks the same ones
_TYPES: dict[str, tuple[type, ...]] = {
    "state": (str,), "exc_type": (str,), "exc_message": (str,), "traceback": (str,),
    "retries": (int,)}
#: what a short record (an older or foreign writer) lacks
_BLANK = {"state": "", "value": None, "exc_type": "", "exc_message": "", "traceback": "",
          "date_done": None, "retries": 0, "task": "", "worker": "", "runtime": None}


def _malformed(why: str) -> dict[str, Any]:
    return dict(_BLANK, state=FAILURE, exc_message=f"malformed result record: {why}",
                malformed=True)
