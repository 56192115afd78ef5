"""Control commands as a worker handles them: one table, one handler per verb, on the loop.

A command reaches the loop's inbox from the presence thread (``engine.worker.presence``);
``handle`` runs its handler and answers on the command's ``reply_to`` list. The calling side
(publishing, gathering replies, the wire format) is ``engine.control``'s.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import msgpack
import redis

from engine import control, flow
from engine.control import REPLY_TTL
from engine.exceptions import NotSupported
from engine.worker import held, replies

if TYPE_CHECKING:
    from engine.worker.supervisor import Supervisor

log = logging.getLogger("engine.control")

#: slots one pool-grow may add at most (a typo must not fork ten thousand children)
MAX_GROW = 1000


def handle(sup: "Supervisor", command: dict) -> None:
    """Run ``command`` if it is addressed to this worker, and reply with its result."""
    if not control.addressed(sup.name, command.get("destination")):
        return
    cmd = command.get("cmd")
    table = HANDLERS
    if command.get("shape") == "celery":   # app.control from Python (engine.inspect)
        table = replies.table(HANDLERS)
    handler = table.get(cmd)
    if handler is None:
        payload: Any = {"error": f"unknown command {cmd!r}"}
    else:
        try:
            payload = handler(sup, command)
        except (NotSupported, ValueError, LookupError) as exc:
            payload = {"error": str(exc)}
        except Exception as exc:   # a bug here must not take the worker down
            log.exception("control command %s failed", cmd)
            payload = {"error": f"{type(exc).__name__}: {exc}"}
    reply(sup, command, payload)


def reply(sup: "Supervisor", command: dict, payload: Any) -> None:
    """Answer ``command`` if it asked for a reply. Never raises for Redis trouble: the
    caller's timeout covers a lost reply."""
    key = command.get("reply_to")
    if not key:
        return
    data = msgpack.packb({"worker": sup.name, "reply": payload}, use_bin_type=True,
                         default=str)
    try:
        pipe = sup.app.client.pipeline(transaction=False)
        pipe.rpush(key, data)
        pipe.expire(key, REPLY_TTL)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not reply to %s: %s", command.get("cmd"), exc)


def _revoke(sup: "Supervisor", command: dict) -> dict:
    task_id = command.get("id")
    if not isinstance(task_id, str):
        raise ValueError("revoke needs a task id")
    sup.revoked.add(task_id)
    delivery = sup.inflight.get(task_id)
    if delivery is not None and command.get("terminate"):
        # submitted but maybe not started (or its start notice not read yet): end it now
        # when the pool can end a job that waits, and again when it starts
        delivery.revoked = delivery.lane.end(task_id)
    elif delivery is not None and held.withdrawn(delivery):
        # it waited in its pool's queue (the prefetch): it never runs, as in the buffer
        held.revoke_withdrawn(sup, delivery, "revoked")
    for lane in sup.lanes:
        lane.forward(command)
    return {"ok": f"revoked {task_id}"}


def _sync_revoked(sup: "Supervisor", command: dict) -> dict:
    """Read the fleet's revoked set again: the control channel just (re)subscribed, and a
    revoke published before that reached the set but not this worker."""
    sup.revoked = held.learn_revoked(sup, control.revoked_ids(sup.app), forget_ended=False)
    return {"ok": f"{len(sup.revoked)} revoked"}


def _shutdown(sup: "Supervisor", command: dict) -> dict:
    sup.request_shutdown()
    return {"ok": "shutting down"}


def _rate_limit(sup: "Supervisor", command: dict) -> dict:
    task, rate = command.get("task"), command.get("rate")
    if not isinstance(task, str) or not isinstance(rate, str):
        raise ValueError("rate-limit needs a task name and a rate")
    flow.parse_rate(rate)           # a bad rate is an error reply, not a silent no-op
    sup.limiter.set_rate(task, rate)
    return {"ok": f"rate limit of {task}: {rate}"}


def _pause(paused: bool) -> Callable[["Supervisor", dict], dict]:
    def pause(sup: "Supervisor", command: dict) -> dict:
        queue = command.get("queue")
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"{'pause' if paused else 'resume'} needs a queue name")
        # a new set: fetch threads notice the change by its identity
        limiter = sup.limiter
        limiter.paused = (limiter.paused | {queue}) if paused else (limiter.paused - {queue})
        return {"ok": f"{'paused' if paused else 'resumed'} {queue}"}
    return pause


def _ping(sup: "Supervisor", command: dict) -> dict:
    return {"ok": "pong"}


def _stats(sup: "Supervisor", command: dict) -> dict:
    info = sup.info().as_dict()
    info.update(uptime=time.time() - sup.started_at, revoked=len(sup.revoked),
                prefetched=sum(lane["buffered"] for lane in info["lanes"]) + sum(
                    1 for d in sup.inflight.values() if d.started is None) + sum(
                    len(copies) for copies in sup.aside.values()),
                events=bool(sup.events.enabled), beat=bool(sup.beat),
                limits=sup.limiter.describe(), paused=sorted(sup.limiter.paused))
    return info


def running(sup: "Supervisor") -> int:
    """Jobs a pool has started and not finished: never more than the slots (a job handed to
    a pool that queues locally, prefork's ring, is reserved until it starts)."""
    return sum(1 for delivery in sup.inflight.values() if delivery.started is not None)


def _job(delivery: Any) -> dict:
    job = delivery.job
    return {"id": job.id, "task": job.task, "args": job.args, "kwargs": job.kwargs,
            "queue": job.queue, "lane": delivery.lane.name, "retries": job.retries}


def _active(sup: "Supervisor", command: dict) -> list[dict]:
    """Started jobs only, with how long each has run."""
    now = time.monotonic()
    return [dict(_job(d), started=True, runtime=now - d.started)
            for d in sup.inflight.values() if d.started is not None]


def _reserved(sup: "Supervisor", command: dict) -> list[dict]:
    """Prefetched and not started: in a lane's buffer, handed to a pool that has not begun
    it, or a copy waiting aside for a running one of its id. An isolated lane's jobs are
    its child's (a ProcessLane has no buffer here)."""
    found = [dict(_job(d), where="pool") for d in sup.inflight.values() if d.started is None]
    for lane in sup.lanes:
        found += [dict(_job(d), where="buffer") for d in getattr(lane, "buffer", ())]
    found += [dict(_job(d), where="aside") for copies in sup.aside.values() for d in copies]
    return found


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
        if grow and n > MAX_GROW:
            raise ValueError(f"pool-grow adds at most {MAX_GROW} slots at a time, got {n}")
        wanted = command.get("lane")
        lanes = [lane for lane in sup.lanes if not wanted or lane.name == wanted]
        if not lanes:
            raise LookupError(f"no lane named {wanted!r} (lanes: "
                              f"{', '.join(lane.name for lane in sup.lanes)})")
        lane = lanes[0]
        size = lane.grow(n) if grow else lane.shrink(n)
        log.info("lane %s: pool %s by %d to %d", lane.name, "grown" if grow else "shrunk",
                 n, size)
        # publish the new size before the reply: the snapshot is otherwise refreshed every
        # few housekeeping rounds and heartbeats, so a dashboard showed the old one for seconds
        sup.presence.snapshot = sup.info().to_wire()
        try:
            sup.presence.beat()
        except redis.RedisError:
            pass   # the next heartbeat publishes it
        return {"ok": f"{'grew' if grow else 'shrank'} by {n}", "lane": lane.name,
                "concurrency": size}
    return resize


HANDLERS: dict[str, Callable[["Supervisor", dict], Any]] = {
    "ping": _ping, "stats": _stats, "active": _active, "reserved": _reserved,
    "registered": _registered,
    "queues": _queues, "pool-grow": _resize(True), "pool-shrink": _resize(False),
    "revoke": _revoke, "sync-revoked": _sync_revoked, "shutdown": _shutdown, "rate-limit": _rate_limit,
    "pause": _pause(True), "resume": _pause(False),
}
