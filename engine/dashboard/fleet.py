"""What the dashboard reads from and does to Redis: workers, queues, dead letters, control.

Plain synchronous functions on the app's client (the web layer runs them in a thread pool).
Keys are those of ``engine.broker``; control messages are those of ``engine.control``. Every
value that leaves here is JSON-safe: task data is turned into text by ``show``, never run.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any


from engine import control, flow, message, signing
from engine.worker.snapshot import read_fleet

if TYPE_CHECKING:
    from engine.app import Engine

#: longest text shown for one argument list, result or message body
SHOW_LIMIT = 20000
#: seconds an action waits for the worker's reply to a control command
CONTROL_TIMEOUT = 3.0
#: dead letters per queue searched for a task's page, newest first
DEAD_SEARCH = 500
#: delayed messages per queue looked at to count a limited task's waiting ones
WAITING_SEARCH = 5000

#: puts a dead letter's original body back on its queue and deletes the dead letter, in one
#: step (both keys carry the queue's hash tag, so this holds on a Redis Cluster too).
#: ARGV[2]: the body's signature with ``security_key`` (made from the same entry, which
#: cannot change), or empty
_REQUEUE = """
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then return 0 end
local fields = entry[1][2]
for i = 1, #fields, 2 do
  if fields[i] == 'm' then
    if ARGV[2] ~= '' then
      redis.call('XADD', KEYS[2], '*', 'm', fields[i + 1], 's', ARGV[2])
    else
      redis.call('XADD', KEYS[2], '*', 'm', fields[i + 1])
    end
    redis.call('XDEL', KEYS[1], ARGV[1])
    return 1
  end
end
return -1
"""


def show(value: Any) -> str:
    """Task data as display text: JSON where it fits, ``repr`` for the rest, cut short."""
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > SHOW_LIMIT:
        text = text[:SHOW_LIMIT] + f"… ({len(text) - SHOW_LIMIT} more characters)"
    return text


def _s(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# -- workers -----------------------------------------------------------------------------
def workers(app: "Engine") -> list[dict[str, Any]]:
    """Every worker in ``P:workers``: online ones with their last snapshot, and those whose
    heartbeat key expired (``lost``) until they are reclaimed."""
    now = time.time()
    result = []
    for name, seen, snapshot in read_fleet(app):
        # no snapshot: its heartbeat expired, or one from another version (the name only)
        raw = None if snapshot is None else True
        info: dict[str, Any] = {} if snapshot is None else snapshot.as_dict()
        if info.get("parent"):   # an isolated lane's process: shown in its supervisor's lanes
            continue
        lanes = []
        for lane in info.get("lanes") or []:
            pool_info = lane.get("pool_info") or {}
            lanes.append({
                "name": _s(lane.get("name", "")),
                "queues": [_s(q) for q in lane.get("queues") or []],
                "pool": _s(pool_info.get("pool") or lane.get("pool") or ""),
                "concurrency": pool_info.get("concurrency", lane.get("concurrency")),
                "processed": lane.get("processed", 0), "failed": lane.get("failed", 0),
                "buffered": lane.get("buffered", 0)})
        result.append({
            "name": _s(name), "online": raw is not None, "last_seen": float(seen),
            "age": max(now - float(seen), 0.0), "host": _s(info.get("host", "")),
            "pid": info.get("pid"), "started": info.get("started"),
            "active": info.get("active", 0), "load": info.get("load"),
            "rss_kib": info.get("rss"), "lanes": lanes,
            "pool": ", ".join(sorted({lane["pool"] for lane in lanes})),
            "concurrency": sum(int(lane["concurrency"] or 0) for lane in lanes),
            "processed": sum(int(lane["processed"] or 0) for lane in lanes),
            "failed": sum(int(lane["failed"] or 0) for lane in lanes)})
    result.sort(key=lambda w: (not w["online"], w["name"]))
    return result


# -- queues and dead letters ---------------------------------------------------------------
def queues(app: "Engine") -> list[dict[str, Any]]:
    broker = app.broker
    return [{"name": name, **broker.depth(name)} for name in broker.known_queues()]


def dead_letters(app: "Engine", queue: str, *, count: int = 50,
                 before: str | None = None) -> dict[str, Any]:
    """The newest ``count`` dead letters of ``queue`` (older than entry ``before``)."""
    key = app.broker.keys.dlq(queue)
    top = f"({before}" if before else "+"
    entries = app.client.xrevrange(key, top, "-", count=count + 1)
    more = len(entries) > count
    letters = []
    for entry_id, fields in entries[:count]:
        fields = {_s(k): v for k, v in fields.items()}
        raw = fields.get("m") or b""
        letter: dict[str, Any] = {
            "entry": _s(entry_id), "reason": _s(fields.get("reason", "")),
            "queue": _s(fields.get("queue", queue)), "size": len(raw),
            "at": _float(fields.get("at")), "id": None, "task": None, "args": None,
            "kwargs": None, "retries": None, "error": None}
        try:
            body = message.decode_message(raw)
        except message.MessageError as exc:
            letter["error"] = str(exc)
            letter["preview"] = show(raw[:200])
        else:
            letter.update(id=body["id"], task=body["task"], args=show(body["args"]),
                          kwargs=show(body["kwargs"]), retries=body["retries"])
        letters.append(letter)
    return {"queue": queue, "letters": letters, "total": app.client.xlen(key),
            "more": more, "next": letters[-1]["entry"] if more and letters else None}


def requeue_dead_letter(app: "Engine", queue: str, entry_id: str) -> str:
    """XADD the original body back to ``P:q:{Q}`` and XDEL the dead letter, atomically.

    Returns "" when done, else why not: a body that does not decode is refused, since the
    worker would only file it again. With ``security_key`` the copy is signed with the
    app's key, except a dead letter filed for a bad signature: signing that would let a
    forged message in through the dashboard."""
    keys = app.broker.keys
    found = app.client.xrange(keys.dlq(queue), entry_id, entry_id)
    if not found:
        return "no such dead letter"
    fields = found[0][1]
    raw = fields.get(b"m") or b""
    try:
        message.decode_message(raw)
    except message.MessageError as exc:
        return f"not requeued: {exc}"
    signer = app.signer
    if signer is not None and fields.get(b"reason") == signing.BAD_SIGNATURE.encode():
        return "not requeued: it was refused for a bad signature (re-send it from a producer)"
    script = app.client.register_script(_REQUEUE)
    signature = signer.sign(raw) if signer is not None else b""
    if script(keys=[keys.dlq(queue), keys.queue(queue)], args=[entry_id, signature]) != 1:
        return "no such dead letter"   # deleted or requeued by someone else meanwhile
    app.client.sadd(keys.queues, queue)
    return ""


def delete_dead_letter(app: "Engine", queue: str, entry_id: str) -> bool:
    return bool(app.client.xdel(app.broker.keys.dlq(queue), entry_id))


def find_dead_letter(app: "Engine", task_id: str) -> dict[str, Any] | None:
    """The newest dead letter that holds ``task_id`` (among the DEAD_SEARCH newest of each
    queue): its ``body`` (the decoded message), ``reason``, ``queue``, ``at`` and ``entry``.
    Arguments are in no event, so this is also where the dashboard can learn them for a
    task whose events are gone."""
    client = app.client
    for queue in app.broker.known_queues():
        for entry_id, fields in client.xrevrange(app.broker.keys.dlq(queue), "+", "-",
                                                 count=DEAD_SEARCH):
            raw = fields.get(b"m") or b""
            if task_id.encode() not in raw:
                continue
            try:
                body = message.decode_message(raw)
            except message.MessageError:
                continue
            if body["id"] == task_id:
                return {"body": body, "reason": _s(fields.get(b"reason", b"")),
                        "queue": _s(fields.get(b"queue", queue)),
                        "at": _float(fields.get(b"at")), "entry": _s(entry_id)}
    return None


# -- flow control --------------------------------------------------------------------------
def flow_state(app: "Engine") -> dict[str, Any]:
    """``engine.flow.fleet_state`` (limits, slots in use, paused queues), with how many
    messages of each limited task wait in the delayed sets: held back by its limit (or sent
    with a countdown), among the WAITING_SEARCH soonest of each queue."""
    state = flow.fleet_state(app)
    limited = state["tasks"]
    waiting = dict.fromkeys(limited, 0)
    if limited:
        names = [(name, name.encode()) for name in limited]
        pipe = app.client.pipeline(transaction=False)
        queues = app.broker.known_queues()
        for queue in queues:
            pipe.zrange(app.broker.keys.delayed(queue), 0, WAITING_SEARCH - 1)
        for members in pipe.execute():
            for member in members:
                body, _ = signing.unwrap(member)
                for name, encoded in names:
                    if encoded in body and _task_of(body) == name:
                        waiting[name] += 1
                        break
    for name, info in limited.items():
        info["waiting"] = waiting[name]
    return state


def _task_of(raw: bytes) -> str | None:
    try:
        return message.decode_message(raw)["task"]
    except message.MessageError:
        return None


# -- control -------------------------------------------------------------------------------
def send_control(app: "Engine", command: str, *, destination: str,
                 timeout: float = CONTROL_TIMEOUT, **arguments: Any) -> str:
    """Send a control command to one worker as ``engine control`` does; its answer as text."""
    replies = control.broadcast(app, command, destination=[destination], timeout=timeout,
                                **arguments)
    if not replies:
        return f"sent {command} to {destination} (no reply within {timeout:g} s)"
    answer = replies[0].get("reply")
    if isinstance(answer, dict) and "error" in answer:
        raise ControlError(f"{destination}: {answer['error']}")
    if isinstance(answer, dict) and "ok" in answer:
        extra = f", concurrency now {answer['concurrency']}" if "concurrency" in answer else ""
        return f"{destination}: {answer['ok']}{extra}"
    return f"{destination}: {show(answer)}"


class ControlError(Exception):
    """A worker answered a control command with an error."""


def worker_known(app: "Engine", name: str) -> bool:
    """Whether ``name`` is in ``P:workers`` (online, or lost and not yet reclaimed)."""
    return app.client.zscore(app.broker.keys.workers, name) is not None


def revoke(app: "Engine", task_id: str, *, terminate: bool = False) -> None:
    control.revoke(app, task_id, terminate=terminate)


def _float(value: Any) -> float | None:
    try:
        return float(_s(value))
    except (TypeError, ValueError):
        return None
