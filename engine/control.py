"""Remote control: revocations, broadcast commands to workers, and their replies.

A command is a msgpack map published on ``P:control``: ``cmd``, ``destination`` (worker
names, or None for all) and ``reply_to``. Each worker's control thread puts it on the
supervisor's inbox; ``Supervisor.on_control`` handles revoke and shutdown itself and hands
the rest to ``handle`` here, on the supervisor's loop. Replies go to the list ``reply_to``
(``P:reply:<uuid>``, expiring) which the caller pops with a timeout. Revocations also live
in the ``P:revoked`` sorted set (id -> when to forget it) for workers started later.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable

import msgpack
import redis

from engine.exceptions import NotSupported

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.worker.supervisor import Supervisor

log = logging.getLogger("engine.control")

#: seconds an unread reply list is kept
REPLY_TTL = 60
#: verbs ``engine inspect`` and ``engine control`` know
INSPECT_VERBS = ("ping", "stats", "active", "registered", "queues")
CONTROL_VERBS = ("shutdown", "revoke", "pool-grow", "pool-shrink")


# -- the calling side -------------------------------------------------------------------
def revoke(app: "Engine", task_id: str, *, terminate: bool = False,
           reply_to: str | None = None) -> int:
    """Remember the revocation and tell the live workers; returns how many heard it."""
    keys = app.broker.keys
    pipe = app.client.pipeline(transaction=False)
    pipe.zadd(keys.revoked, {task_id: time.time() + app.conf.revoke_expires})
    pipe.publish(keys.control, encode({"cmd": "revoke", "id": task_id, "terminate": terminate,
                                       "reply_to": reply_to}))
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
        heard = app.client.publish(app.broker.keys.control, encode(command))
    # PUBLISH counts subscribers: one per live worker
    expected = min(len(destination), heard) if destination else heard
    return gather(app, reply_to, expected, timeout)


def gather(app: "Engine", reply_to: str, expected: int, timeout: float) -> list[dict]:
    replies: list[dict] = []
    deadline = time.monotonic() + timeout
    client = app.client
    while len(replies) < expected:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        item = client.blpop([reply_to], timeout=max(left, 0.01))
        if item is None:
            break
        replies.append(msgpack.unpackb(item[1], raw=False))
    client.delete(reply_to)
    return sorted(replies, key=lambda r: r.get("worker", ""))


def queue_depths(app: "Engine") -> dict[str, dict[str, int]]:
    broker = app.broker
    return {queue: broker.depth(queue) for queue in broker.known_queues()}


# -- the worker side (on the supervisor's loop) ------------------------------------------
def reply(supervisor: "Supervisor", command: dict, payload: Any) -> None:
    """Answer ``command`` if it asked for a reply. Never raises for Redis trouble: the
    caller's timeout covers a lost reply."""
    key = command.get("reply_to")
    if not key:
        return
    data = msgpack.packb({"worker": supervisor.name, "reply": payload}, use_bin_type=True,
                         default=str)
    try:
        pipe = supervisor.app.client.pipeline(transaction=False)
        pipe.rpush(key, data)
        pipe.expire(key, REPLY_TTL)
        pipe.execute()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("could not reply to %s: %s", command.get("cmd"), exc)


def handle(supervisor: "Supervisor", command: dict) -> None:
    """Run a broadcast command other than revoke/shutdown and reply with its result."""
    cmd = command.get("cmd")
    handler = HANDLERS.get(cmd)
    if handler is None:
        payload: Any = {"error": f"unknown command {cmd!r}"}
    else:
        try:
            payload = handler(supervisor, command)
        except (NotSupported, ValueError, LookupError) as exc:
            payload = {"error": str(exc)}
        except Exception as exc:   # a bug here must not take the worker down
            log.exception("control command %s failed", cmd)
            payload = {"error": f"{type(exc).__name__}: {exc}"}
    reply(supervisor, command, payload)


def _ping(sup: "Supervisor", command: dict) -> dict:
    return {"ok": "pong"}


def _stats(sup: "Supervisor", command: dict) -> dict:
    info = sup.info()
    info.update(uptime=time.time() - sup.started_at, revoked=len(sup.revoked),
                prefetched=sum(len(lane.buffer) for lane in sup.lanes),
                events=bool(sup.events.enabled), beat=bool(sup.beat))
    return info


def _active(sup: "Supervisor", command: dict) -> list[dict]:
    now = time.monotonic()
    active = []
    for delivery in sup.inflight.values():
        job = delivery.job
        active.append({"id": job.id, "task": job.task, "args": job.args, "kwargs": job.kwargs,
                       "queue": job.queue, "lane": delivery.lane.name,
                       "retries": job.retries, "started": delivery.started is not None,
                       "runtime": (now - delivery.started) if delivery.started else None})
    return active


def _registered(sup: "Supervisor", command: dict) -> list[str]:
    return sup.app.tasks.names()


def _queues(sup: "Supervisor", command: dict) -> list[dict]:
    return [{"lane": lane.name, "queues": lane.queues, "pool": lane.spec.pool}
            for lane in sup.lanes]


def _resize(grow: bool) -> Callable[["Supervisor", dict], dict]:
    def resize(sup: "Supervisor", command: dict) -> dict:
        n = int(command.get("n") or 1)
        if n < 1:
            raise ValueError(f"expected a positive number of slots, got {n}")
        wanted = command.get("lane")
        lanes = [lane for lane in sup.lanes if not wanted or lane.name == wanted]
        if not lanes:
            raise LookupError(f"no lane named {wanted!r} (lanes: "
                              f"{', '.join(lane.name for lane in sup.lanes)})")
        lane = lanes[0]
        pool = lane.pool
        (pool.grow if grow else pool.shrink)(n)
        # the lane's prefetch budget follows its pool, so new slots get messages
        lane.spec.concurrency = pool.concurrency
        lane.resize()
        log.info("lane %s: pool %s by %d to %d", lane.name, "grown" if grow else "shrunk",
                 n, pool.concurrency)
        return {"ok": f"{'grew' if grow else 'shrank'} by {n}", "lane": lane.name,
                "concurrency": pool.concurrency}
    return resize


HANDLERS: dict[str, Callable[["Supervisor", dict], Any]] = {
    "ping": _ping, "stats": _stats, "active": _active, "registered": _registered,
    "queues": _queues, "pool-grow": _resize(True), "pool-shrink": _resize(False),
}


# -- wire format -----------------------------------------------------------------------
def encode(command: dict) -> bytes:
    return msgpack.packb(command, use_bin_type=True)


def decode(raw: bytes) -> dict:
    command = msgpack.unpackb(raw, raw=False)
    if not isinstance(command, dict) or "cmd" not in command:
        raise ValueError("control message without 'cmd'")
    return command


# -- the command line ------------------------------------------------------------------
def _destination(args) -> list[str] | None:
    names = [n.strip() for n in (getattr(args, "destination", None) or "").split(",")]
    return [n for n in names if n] or None


def inspect_command(args) -> int:
    """``engine inspect VERB``: exit 0 with replies, 1 when no worker answered."""
    from engine.app import load_app
    app = load_app(args.app or "")
    dest = _destination(args)
    replies = broadcast(app, args.verb, destination=dest, timeout=args.timeout)
    if args.verb == "queues":
        data: Any = {"queues": queue_depths(app),
                     "workers": {r["worker"]: r["reply"] for r in replies}}
        if args.json:
            _print_json(data)
        else:
            print(_format_queues(data))
        return 0
    if args.json:
        _print_json({r["worker"]: r["reply"] for r in replies})
    else:
        for r in replies:
            print(_format_reply(args.verb, r["worker"], r["reply"]))
    if not replies:
        print(f"engine inspect: no reply from {'any worker' if not dest else ', '.join(dest)} "
              f"within {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


def control_command(args) -> int:
    """``engine control VERB [ARG]``: exit 0 when some worker answered without an error
    (revoke also succeeds with none: the revocation is stored for later workers)."""
    from engine.app import load_app
    app = load_app(args.app or "")
    dest = _destination(args)
    arguments: dict[str, Any] = {}
    if args.verb == "revoke":
        if not args.argument:
            print("engine control: error: revoke needs a task id", file=sys.stderr)
            return 2
        arguments = {"id": args.argument, "terminate": bool(args.terminate)}
    elif args.verb in ("pool-grow", "pool-shrink"):
        try:
            n = int(args.argument or 1)
            if n < 1:
                raise ValueError
        except ValueError:
            print(f"engine control: error: {args.verb} needs a positive number, "
                  f"got {args.argument!r}", file=sys.stderr)
            return 2
        arguments = {"n": n, "lane": args.lane}
    replies = broadcast(app, args.verb, destination=dest, timeout=args.timeout, **arguments)
    if getattr(args, "json", False):
        _print_json({r["worker"]: r["reply"] for r in replies})
    for r in replies if not getattr(args, "json", False) else ():
        print(_format_reply(args.verb, r["worker"], r["reply"]))
    errors = [r for r in replies if isinstance(r["reply"], dict) and "error" in r["reply"]]
    if args.verb == "revoke":
        if not replies:
            print(f"revoked {args.argument} (no live worker answered; kept for "
                  f"{app.conf.revoke_expires:g} s for workers that start later)")
        return 0
    if not replies:
        print(f"engine control: no reply from {'any worker' if not dest else ', '.join(dest)} "
              f"within {args.timeout:g} s", file=sys.stderr)
        return 1
    return 1 if len(errors) == len(replies) else 0


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _format_reply(verb: str, worker: str, payload: Any) -> str:
    head = f"-> {worker}"
    if isinstance(payload, dict) and "error" in payload:
        return f"{head}: ERROR {payload['error']}"
    if isinstance(payload, dict) and "ok" in payload and verb != "stats":
        extra = "".join(f" {k}={v}" for k, v in payload.items() if k != "ok")
        return f"{head}: OK {payload['ok']}{extra}"
    if verb == "registered":
        return "\n".join([f"{head}: {len(payload)} task(s)"] + [f"    * {n}" for n in payload])
    if verb == "active":
        if not payload:
            return f"{head}: no running tasks"
        lines = [f"{head}: {len(payload)} task(s)"]
        for job in payload:
            runtime = f"{job['runtime']:.1f}s" if job.get("runtime") is not None else "waiting"
            lines.append(f"    * {job['task']}[{job['id']}] args={job['args']!r} "
                         f"kwargs={job['kwargs']!r} queue={job['queue']} {runtime}")
        return "\n".join(lines)
    if verb == "stats":
        lines = [f"{head}: pid {payload.get('pid')} on {payload.get('host')}, "
                 f"up {payload.get('uptime', 0):.0f}s, {payload.get('active', 0)} running, "
                 f"rss {_kib(payload.get('rss'))}, load {payload.get('load', 0):.2f}"]
        for lane in payload.get("lanes", []):
            lines.append(f"    lane {lane['name']}: {lane['pool']}:{lane['concurrency']} "
                         f"queues={','.join(lane['queues'])} processed={lane['processed']} "
                         f"failed={lane['failed']} buffered={lane['buffered']}")
            lines.append(f"        pool {json.dumps(lane.get('pool_info'), default=str)}")
        return "\n".join(lines)
    return f"{head}: {json.dumps(payload, default=str)}"


def _format_queues(data: dict) -> str:
    consumers: dict[str, list[str]] = {}
    for worker, lanes in data["workers"].items():
        for lane in lanes if isinstance(lanes, list) else ():
            for queue in lane["queues"]:
                consumers.setdefault(queue, []).append(worker)
    rows = [("queue", "waiting", "unacked", "delayed", "dead", "workers")]
    for queue, depth in sorted(data["queues"].items()):
        rows.append((queue, str(depth["waiting"]), str(depth["unacked"]), str(depth["delayed"]),
                     str(depth["dead"]), ",".join(consumers.get(queue, [])) or "-"))
    if len(rows) == 1:
        return "no queues"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i in (0, 5) else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
                     for row in rows)


def _kib(value: Any) -> str:
    if not value:
        return "?"
    return f"{value / 1024:.1f} MiB"
