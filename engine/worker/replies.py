"""Control commands answered in Celery's reply shapes, for ``app.control`` from Python.

``engine.inspect`` (the calling side) sends its commands with ``"shape": "celery"``;
``engine.worker.commands.handle`` answers those from ``table(its own handlers)``, whose
revoke and pool verbs do their work.
The command line's verbs keep their own replies (``engine.worker.commands``). Each handler
runs on the supervisor's loop, as the others do, and returns what Celery's worker would:
a task as ``Request.info()`` (``id``, ``name``, ``args``, ``kwargs``, ``type``,
``hostname``, ``time_start``, ``acknowledged``, ``delivery_info``, ``worker_pid``), ``{"ok":
...}`` or ``{"error": ...}`` for a control verb.
"""

from __future__ import annotations

import datetime as _dt
import os
import resource
import time
from typing import TYPE_CHECKING, Any, Callable

from engine import flow, signing
from engine.message import MessageError, decode_message
from engine.urls import redact

if TYPE_CHECKING:
    from engine.worker.supervisor import Supervisor

#: delayed messages ``scheduled`` reads at most per queue (the reply must stay small)
SCHEDULED_MAX = 1000
#: settings ``conf`` never sends: they are secrets
SECRET = ("security_key",)


def _pid(delivery: Any, started: bool) -> int | None:
    """The process running it: this one for a pool that runs tasks in-process, else unknown
    (a prefork child's pid is not reported per job)."""
    if not started or getattr(delivery.lane.pool_cls, "runs_in_children", False):
        return None
    return os.getpid()


def info(sup: "Supervisor", delivery: Any) -> dict:
    """A delivery as Celery's ``Request.info()``; ``time_start`` in unix seconds."""
    job = delivery.job
    started = delivery.started is not None
    return {"id": job.id, "name": job.task, "args": job.args, "kwargs": job.kwargs,
            "type": job.task, "hostname": sup.name,
            "time_start": (time.time() - (time.monotonic() - delivery.started)
                           if started else None),
            # acks_late (our default) acknowledges after the task: Celery's
            # ``acknowledged`` of a started task means it was delivered to this worker,
            # which is what the stream's pending entry says here
            "acknowledged": started,
            "delivery_info": {"exchange": "", "routing_key": job.queue,
                              "priority": _priority(delivery), "redelivered":
                              delivery.deliveries > 1},
            "worker_pid": _pid(delivery, started)}


def _priority(delivery: Any) -> int:
    stream = delivery.stream
    _, _, level = stream.rpartition(":p")
    return int(level) if level.isdigit() else 0


def _reserved_deliveries(sup: "Supervisor") -> list:
    found = [d for d in sup.inflight.values() if d.started is None]
    for lane in sup.lanes:
        found += list(getattr(lane, "buffer", ()))
    found += [d for copies in sup.aside.values() for d in copies]
    return found


def _active(sup: "Supervisor", command: dict) -> list[dict]:
    return [info(sup, d) for d in sup.inflight.values() if d.started is not None]


def _reserved(sup: "Supervisor", command: dict) -> list[dict]:
    return [info(sup, d) for d in _reserved_deliveries(sup)]


def _scheduled(sup: "Supervisor", command: dict) -> list[dict]:
    """Messages of this worker's queues waiting for their eta. They wait in Redis (the
    delayed set of their queue), not in a worker: every worker of a queue lists them."""
    keys = sup.app.broker.keys
    queues = sorted({q for lane in sup.lanes for q in lane.queues})
    pipe = sup.app.client.pipeline(transaction=False)
    for queue in queues:
        pipe.zrange(keys.delayed(queue), 0, SCHEDULED_MAX - 1, withscores=True)
    found = []
    for queue, entries in zip(queues, pipe.execute()):
        for raw, eta in entries:
            try:
                body = decode_message(signing.unwrap(raw)[0])
            except (MessageError, ValueError, TypeError):
                continue   # the mover dead-letters it when due
            when = _dt.datetime.fromtimestamp(eta, _dt.timezone.utc)
            found.append({"eta": when.isoformat(), "priority": body.get("priority", 0),
                          "request": {"id": body["id"], "name": body["task"],
                                      "args": body["args"], "kwargs": body["kwargs"],
                                      "type": body["task"], "hostname": sup.name,
                                      "time_start": None, "acknowledged": False,
                                      "delivery_info": {"exchange": "", "routing_key": queue,
                                                        "priority": body.get("priority", 0),
                                                        "redelivered": False},
                                      "worker_pid": None}})
    return found


def _query_task(sup: "Supervisor", command: dict) -> dict:
    ids = command.get("ids") or ()
    wanted = {ids} if isinstance(ids, str) else set(ids)
    found: dict[str, list] = {}
    for delivery in sup.inflight.values():
        if delivery.job.id in wanted and delivery.started is not None:
            found[delivery.job.id] = ["active", info(sup, delivery)]
    for delivery in _reserved_deliveries(sup):
        if delivery.job.id in wanted and delivery.job.id not in found:
            found[delivery.job.id] = ["reserved", info(sup, delivery)]
    return found


def _registered(sup: "Supervisor", command: dict) -> list[str]:
    """Task names, sorted; ``taskinfoitems`` adds ``[attr=value ...]`` as Celery does."""
    items = command.get("taskinfoitems") or ()
    registry = sup.app.tasks
    found = []
    for name in sorted(registry.names()):
        task = registry.get(name)
        extra = [f"{item}={getattr(task, item)}" for item in items
                 if getattr(task, item, None) is not None]
        found.append(f"{name} [{' '.join(extra)}]" if extra else name)
    return found


def _stats(sup: "Supervisor", command: dict) -> dict:
    snapshot = sup.info().as_dict()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    pids = [pid for lane in snapshot["lanes"] for pid in lane["pool_info"].get("pids", ())]
    url = str(sup.app.broker_url or "")
    return {"pid": os.getpid(), "uptime": time.time() - sup.started_at,
            "hostname": sup.name,
            "broker": {"transport": "redis", "hostname": redact(url)},
            "prefetch_count": sum(lane.spec.prefetch * lane.spec.concurrency
                                  for lane in sup.lanes),
            "pool": {"max-concurrency": sum(lane["concurrency"] for lane in snapshot["lanes"]),
                     "processes": pids or [os.getpid()],
                     "implementation": ",".join(lane["pool"] for lane in snapshot["lanes"]),
                     "max-tasks-per-child": sup.app.conf.worker_max_tasks_per_child},
            "rusage": {"utime": usage.ru_utime, "stime": usage.ru_stime,
                       "maxrss": usage.ru_maxrss},
            "processed": sum(lane["processed"] for lane in snapshot["lanes"]),
            "lanes": snapshot["lanes"]}


def _active_queues(sup: "Supervisor", command: dict) -> list[dict]:
    """Celery's queue declarations, key for key. There is no AMQP here: the exchange is
    named after the queue, as Celery's default one is, and the AMQP-only keys are None."""
    return [{"name": queue, "routing_key": queue, "alias": None, "durable": True,
             "auto_delete": False, "exclusive": False, "no_ack": False, "no_declare": None,
             "bindings": [], "binding_arguments": None, "consumer_arguments": None,
             "queue_arguments": None, "expires": None, "max_length": None,
             "max_length_bytes": None, "max_priority": None, "message_ttl": None,
             "exchange": {"name": queue, "type": "direct", "durable": True,
                          "auto_delete": False, "arguments": None, "delivery_mode": None,
                          "no_declare": False, "passive": False}}
            for lane in sup.lanes for queue in lane.queues]


def _revoked(sup: "Supervisor", command: dict) -> list[str]:
    return sorted(sup.revoked)


def _conf(sup: "Supervisor", command: dict) -> dict:
    """The app's settings; without ``with_defaults`` only those that differ from the
    defaults. URLs have their password masked; ``security_key`` is never sent."""
    from engine.config import DEFAULTS
    conf = sup.app.conf
    table = {}
    for key in conf:
        value = conf.get(key)
        if key in SECRET or (not command.get("with_defaults") and key in DEFAULTS
                             and DEFAULTS[key] == value):
            continue
        if isinstance(value, str) and "://" in value:
            value = redact(value)
        table[key] = value
    return table


def _ping(sup: "Supervisor", command: dict) -> dict:
    return {"ok": "pong"}


def _revoke(revoke: Callable) -> Callable[["Supervisor", dict], dict]:
    def handler(sup: "Supervisor", command: dict) -> dict:
        ids = command.get("task_id")
        ids = [ids] if isinstance(ids, str) else list(ids or ())
        if not ids or not all(isinstance(i, str) for i in ids):
            raise ValueError("revoke needs a task id or a list of them")
        for task_id in ids:
            revoke(sup, {"cmd": "revoke", "id": task_id,
                         "terminate": bool(command.get("terminate"))})
        return {"ok": f"tasks {', '.join(ids)} flagged as revoked"}
    return handler


def _rate_limit(sup: "Supervisor", command: dict) -> dict:
    task, rate = command.get("task_name"), command.get("rate_limit")
    if task not in sup.app.tasks.names():
        return {"error": "unknown task"}
    rate = "0" if rate in (None, 0, "") else str(rate)
    try:
        flow.parse_rate(rate)
    except ValueError as exc:
        return {"error": f"Invalid rate limit string: {exc}"}
    sup.limiter.set_rate(task, rate)
    return {"ok": "rate limit disabled successfully" if rate == "0"
            else "new rate limit set successfully"}


def _resize(resize: Callable, grow: bool) -> Callable[["Supervisor", dict], dict]:
    def handler(sup: "Supervisor", command: dict) -> dict:
        resize(sup, {"n": command.get("n") or 1, "lane": command.get("lane")})
        return {"ok": f"pool will {'grow' if grow else 'shrink'}"}
    return handler


def _shutdown(sup: "Supervisor", command: dict) -> dict:
    sup.request_shutdown()
    return {"ok": "shutdown"}


_TABLE: dict[str, Callable[["Supervisor", dict], Any]] = {}


def table(base: dict[str, Callable]) -> dict[str, Callable[["Supervisor", dict], Any]]:
    """The handlers by Celery's verb names, doing their work with ``base``'s (the command
    line's: ``engine.worker.commands.HANDLERS``); made once."""
    if not _TABLE:
        _TABLE.update({
            "active": _active, "reserved": _reserved, "scheduled": _scheduled,
            "query_task": _query_task, "registered": _registered, "stats": _stats,
            "active_queues": _active_queues, "revoked": _revoked, "conf": _conf,
            "ping": _ping, "revoke": _revoke(base["revoke"]), "rate_limit": _rate_limit,
            "pool_grow": _resize(base["pool-grow"], True),
            "pool_shrink": _resize(base["pool-shrink"], False), "shutdown": _shutdown})
    return _TABLE
