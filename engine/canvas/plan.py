"""The canvas on the wire: a signature map turned into the messages that start it.

Producers (``Signature.apply_async``) and workers (a finished step's successors) build
bodies here, the same way, from the wire form of a signature: a map ``{task, args, kwargs,
options, immutable}``. A chain, a group and a chord are signatures too, with the reserved
task names below and their parts in ``kwargs``. Nothing here talks to Redis.

Task ids that a signature does not carry in ``options.task_id`` are derived from the id of
the step that sends it (``child_id``), so a step that runs twice sends the same ids again
and the idempotent send in ``engine.canvas.worker`` keeps one copy.
"""

from __future__ import annotations

import datetime as _dt
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from engine import message

if TYPE_CHECKING:
    from engine.app import Engine

CHAIN, GROUP, CHORD = "engine.chain", "engine.group", "engine.chord"
MAP, STARMAP, CHUNKS = "engine.map", "engine.starmap", "engine.chunks"
#: the options a signature may carry (anything else is refused by ``Signature``)
OPTIONS = frozenset({"task_id", "group_id", "queue", "countdown", "eta", "expires",
                     "soft_time_limit", "time_limit", "ignore_result", "link", "link_error"})
#: chain options that go to every step that has none of its own
_CHAIN_FILL = ("queue", "expires", "soft_time_limit", "time_limit", "ignore_result")
#: body keys that make a message part of a canvas (``message.job_from_body`` looks for them)
BODY_KEYS = frozenset({"chain", "link", "link_error", "chord", "group"})

#: the namespace of derived ids: uuid5(NAMESPACE, "<parent id>/<role>") (docs/wire.md)
NAMESPACE = uuid.UUID("6f1c5a0e-9c1d-4e8b-a3a5-2f0d3c1b7e42")
NIL = message.dumps(None)


class CanvasError(ValueError):
    """A signature that cannot be planned (its shape is wrong, or it nests what a chord
    cannot count); the message says what."""


def child_id(parent: str, role: str) -> str:
    """The id of what ``parent`` sends in ``role`` (``next``, ``link/0``, ``errback/1``,
    ``member/3``, ``body``, ``group``), when the signature does not name one."""
    return str(uuid.uuid5(NAMESPACE, f"{parent}/{role}"))


@dataclass(slots=True)
class Outgoing:
    """One message to send: its queue, id, encoded body and eta (unix s, None for now)."""

    queue: str
    task_id: str
    body: bytes
    eta: float | None


def check(sig: Any) -> dict:
    """A wire signature with every key present and of the right type; CanvasError if not."""
    if not isinstance(sig, dict) or not isinstance(sig.get("task"), str):
        raise CanvasError(f"a signature is a map with a 'task' name, got {sig!r:.120}")
    args, kwargs = sig.get("args", ()), sig.get("kwargs") or {}
    options = sig.get("options") or {}
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict) \
            or not isinstance(options, dict):
        raise CanvasError(f"signature {sig['task']}: args must be an array, kwargs and "
                          "options maps")
    if len(sig) == 5 and type(args) is list and "immutable" in sig:
        return sig
    return {"task": sig["task"], "args": list(args), "kwargs": kwargs, "options": options,
            "immutable": bool(sig.get("immutable", False))}


def _parts(sig: dict, key: str) -> list:
    parts = sig["kwargs"].get(key)
    if not isinstance(parts, (list, tuple)):
        raise CanvasError(f"{sig['task']}: kwargs.{key} must be an array of signatures")
    return list(parts)


def spread_chain(sig: dict) -> list[dict]:
    """The steps of a chain, with the chain's own options moved onto them: countdown and eta
    to the first step; task_id, link and link_error to the last (its handle: a chain's
    errbacks run once whichever step fails); queue, expires, limits and ignore_result to
    every step that has none."""
    steps = [check(s) for s in _parts(sig, "tasks")]
    if not steps:
        raise CanvasError("an empty chain")
    options = sig["options"]
    if not options:
        return steps
    first, last = dict(steps[0]), dict(steps[-1])
    steps[0], steps[-1] = first, last
    first["options"] = dict(first["options"])
    for key in ("countdown", "eta"):
        if key in options:
            first["options"].setdefault(key, options[key])
    last["options"] = dict(last["options"])
    if "task_id" in options:
        last["options"]["task_id"] = options["task_id"]
    for key in ("link", "link_error"):
        if options.get(key):
            last["options"][key] = list(last["options"].get(key) or ()) + list(options[key])
    fill = {k: options[k] for k in _CHAIN_FILL if k in options}
    if fill:
        steps = [dict(s, options={**fill, **s["options"]}) for s in steps]
    return steps


def chord_parts(sig: dict) -> tuple[list[dict], dict]:
    """Header and body of a chord; the chord's link and link_error belong to its body."""
    header = [check(s) for s in _parts(sig, "header")]
    body = check(sig["kwargs"].get("body"))
    options = sig["options"]
    if options.get("link") or options.get("link_error") or options.get("task_id"):
        merged = dict(body["options"])
        for key in ("link", "link_error"):
            if options.get(key):
                merged[key] = list(merged.get(key) or ()) + list(options[key])
        if options.get("task_id") and body["task"] not in (CHAIN, GROUP, CHORD):
            merged.setdefault("task_id", options["task_id"])
        body = dict(body, options=merged)
    return header, body


def group_members(sig: dict) -> list[dict]:
    """Members of a group; options of the group itself (a queue, errbacks) go to each."""
    members = [check(s) for s in _parts(sig, "tasks")]
    options = {k: v for k, v in sig["options"].items() if k not in ("group_id", "task_id")}
    if options:
        members = [dict(m, options={**options, **m["options"]}) for m in members]
    return members


def chain_of(steps: Sequence[dict]) -> dict:
    if len(steps) == 1:
        return steps[0]
    return {"task": CHAIN, "args": [], "kwargs": {"tasks": list(steps)}, "options": {},
            "immutable": False}


class Planner:
    """Plans signatures into messages for one app at one instant (``now``: countdowns and
    relative expiries count from it)."""

    def __init__(self, app: "Engine", now: float | None = None) -> None:
        self.app = app
        self.now = time.time() if now is None else now
        self.default_queue = app.conf.task_default_queue
        #: the W3C traceparent every planned body carries (``tp``): a traced step's, so
        #: that what the worker sends after it stays in its trace (engine.tracing)
        self.traceparent: str | None = None

    def plan(self, sig: Any, *, seed: str, head: bytes | None = None,
             chord: dict | None = None, group: str | None = None,
             rest: Sequence[dict] = ()) -> list[Outgoing]:
        """The messages that start ``sig`` (then ``rest``, carried in their bodies).

        ``head`` is an encoded value given as the first argument (a parent's result), unless
        the signature is immutable; ``seed`` is the id of the first task when the signature
        does not name one; ``chord`` is the chord context this run counts for."""
        out: list[Outgoing] = []
        self._plan(check(sig), seed, head, chord, group, list(rest), out)
        return out

    def _plan(self, sig: dict, seed: str, head: bytes | None, chord: dict | None,
              group: str | None, rest: list, out: list) -> None:
        kind = sig["task"]
        if kind == CHAIN:
            steps = spread_chain(sig)
            self._plan(steps[0], seed, head, chord, group, steps[1:] + rest, out)
        elif kind == GROUP and rest:
            # a group followed by more steps is a chord whose body is the rest of the chain
            self._plan(_as_chord(sig, rest), seed, head, chord, group, [], out)
        elif kind == GROUP:
            if chord is not None:
                raise CanvasError("a group cannot be a chord's header member (nor end one)")
            gid = sig["options"].get("group_id") or child_id(seed, "group")
            for i, member in enumerate(group_members(sig)):
                self._plan(member, child_id(gid, f"member/{i}"), head, None, gid, [], out)
        elif kind == CHORD:
            if chord is not None:
                raise CanvasError("a chord cannot be another chord's header member")
            header, body = chord_parts(sig)
            if rest:
                body = chain_of([body, *rest])
            gid = sig["options"].get("group_id") or child_id(seed, "group")
            if not header:
                # nothing to wait for: the body runs at once, given the empty list
                self._plan(body, child_id(gid, "body"), _array([]), None, None, [], out)
                return
            context = {"id": gid, "size": len(header), "callback": body}
            for i, member in enumerate(header):
                self._plan(member, child_id(gid, f"member/{i}"), head,
                           dict(context, index=i), gid, [], out)
        else:
            out.append(self.message(sig, sig["options"].get("task_id") or seed, head,
                                    chord=chord, group=group, rest=rest))

    def future(self, sig: Any, *, seed: str, rest: Sequence[dict] = ()
               ) -> Iterator[tuple[str, dict]]:
        """Every ``(task id, signature)`` that ``plan`` would start, then their chains'
        and chords' later steps, in the order planning meets them (what a failure ahead of
        them marks FAILURE, and whose errbacks it calls). Mirrors ``_plan``."""
        sig = check(sig)
        kind = sig["task"]
        rest = list(rest)
        if kind == CHAIN:
            steps = spread_chain(sig)
            yield from self.future(steps[0], seed=seed, rest=steps[1:] + rest)
        elif kind == GROUP and rest:
            yield from self.future(_as_chord(sig, rest), seed=seed)
        elif kind == GROUP:
            gid = sig["options"].get("group_id") or child_id(seed, "group")
            for i, member in enumerate(group_members(sig)):
                yield from self.future(member, seed=child_id(gid, f"member/{i}"))
        elif kind == CHORD:
            header, body = chord_parts(sig)
            gid = sig["options"].get("group_id") or child_id(seed, "group")
            for i, member in enumerate(header):
                yield from self.future(member, seed=child_id(gid, f"member/{i}"))
            yield from self.future(chain_of([body, *rest]) if rest else body,
                                   seed=child_id(gid, "body"))
        else:
            task_id = sig["options"].get("task_id") or seed
            yield task_id, sig
            if rest:
                yield from self.future(rest[0], seed=child_id(task_id, "next"), rest=rest[1:])

    def message(self, sig: dict, task_id: str, head: bytes | None, *, chord: dict | None,
                group: str | None, rest: Sequence[dict]) -> Outgoing:
        """The message of one plain task signature."""
        name, options = sig["task"], sig["options"]
        task = self.app.tasks.get(name)
        queue = options.get("queue") or (task.queue if task else None) or self.default_queue
        body: dict[str, Any] = {"v": message.PROTOCOL_VERSION, "id": task_id, "task": name,
                                "kwargs": sig["kwargs"], "retries": 0}
        eta = None
        if options.get("countdown"):
            eta = body["eta"] = self.now + float(options["countdown"])
        elif options.get("eta") is not None:
            eta = body["eta"] = _unix(options["eta"], self.now, absolute=True)
        expires = options.get("expires")
        if expires is None and task is not None:
            expires = task.expires
        if expires is not None:
            body["expires"] = _unix(expires, self.now, absolute=False)
        if options.get("soft_time_limit") is not None:
            body["soft"] = float(options["soft_time_limit"])
        if options.get("time_limit") is not None:
            body["hard"] = float(options["time_limit"])
        if options.get("ignore_result") or (task is not None and task.ignore_result):
            body["ignore_result"] = True
        if rest:
            body["chain"] = list(rest)
        for key in ("link", "link_error"):
            callbacks = options.get(key)
            if callbacks:
                body[key] = [check(c) for c in callbacks]
        if chord is not None:
            body["chord"] = chord
        if self.traceparent is not None:
            body["tp"] = self.traceparent
        if group is not None:
            body["group"] = group
        if sig["immutable"]:
            head = None
        return Outgoing(queue, task_id, encode(body, sig["args"], head), eta)


def _as_chord(group_sig: dict, rest: list) -> dict:
    return {"task": CHORD, "args": [], "options": dict(group_sig["options"]),
            "kwargs": {"header": _parts(group_sig, "tasks"), "body": chain_of(rest)},
            "immutable": False}


def _unix(when: Any, now: float, *, absolute: bool) -> float:
    """A datetime, or a number (unix seconds if ``absolute``, else seconds from ``now``)."""
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None:
            when = when.astimezone()
        return when.timestamp()
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        return float(when) if absolute else now + float(when)
    raise CanvasError(f"expected seconds or a datetime, got {type(when).__name__}")


def _header(n: int, small: int, mid: bytes, big: bytes) -> bytes:
    if n < 16:
        return bytes((small | n,))
    if n < 0x10000:
        return mid + n.to_bytes(2, "big")
    return big + n.to_bytes(4, "big")


def _array(items: Sequence[bytes]) -> bytes:
    """A msgpack array of already encoded items."""
    return _header(len(items), 0x90, b"\xdc", b"\xdd") + b"".join(items)


def encode(body: dict, args: Sequence[Any], head: bytes | None) -> bytes:
    """The body map with ``args`` added, ``head`` (already encoded: a parent's result, a
    chord's list of results) spliced in as the first argument without decoding it."""
    try:
        packed = message.dumps(body)
        encoded = [message.dumps(a) for a in args]
    except (TypeError, ValueError, OverflowError):
        message.check_arguments(body["task"], args, body["kwargs"])
        raise
    if head is not None:
        encoded.insert(0, head)
    # the map header counts one key more (args); the packed pairs follow it unchanged
    first = packed[0]
    skip = 1 if 0x80 <= first <= 0x8F else (3 if first == 0xDE else 5)
    count = int.from_bytes(packed[1:skip], "big") if skip > 1 else first & 0x0F
    return (_header(count + 1, 0x80, b"\xde", b"\xdf") + packed[skip:]
            + message.dumps("args") + _array(encoded))
