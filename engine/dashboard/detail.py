"""One task's page, from the three places that know of it: the events the dashboard folded
(``monitor``), the result backend, and a dead letter still holding its message.

The backend is the authority on how a task ended; a dead letter on where it is now (a task
whose message sits in ``P:dlq:{Q}`` is DEAD-LETTERED, unless a copy of it succeeded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.dashboard import fleet

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.dashboard.monitor import Monitor

DEAD_LETTERED = "DEAD-LETTERED"


def task_detail(engine: "Engine", monitor: "Monitor", task_id: str) -> dict[str, Any] | None:
    """Everything known of ``task_id``, JSON-safe; None when nothing is."""
    seen = monitor.task(task_id)
    record = engine.backend.peek(task_id)
    dead = fleet.find_dead_letter(engine, task_id)
    if seen is None and record is None and dead is None:
        return None
    detail: dict[str, Any] = {
        "id": task_id, "name": "", "state": "PENDING", "worker": "", "queue": "",
        "received": None, "started": None, "ended": None, "runtime": None, "retries": 0,
        "exception": "", "message": "", "traceback": "", "timeline": [],
        "args": None, "kwargs": None, "result": None, "date_done": None,
        "args_source": None, "dead_letter": None}
    if seen:
        detail.update({k: v for k, v in seen.items() if k not in ("args", "kwargs")})
        if seen.get("args") is not None or seen.get("kwargs") is not None:
            # workers send them as capped repr text (engine.events); a producer of its own
            # may have sent the values
            detail.update(args=_text(seen.get("args")), kwargs=_text(seen.get("kwargs")),
                          args_source="events")
    if dead is not None:
        body = dead["body"]
        if detail["args"] is None:
            detail.update(args=fleet.show(body["args"]), kwargs=fleet.show(body["kwargs"]),
                          args_source="dead letter")
        detail["name"] = detail["name"] or body["task"]
        detail["queue"] = detail["queue"] or dead["queue"]
        detail["dead_letter"] = {key: dead[key] for key in ("reason", "queue", "at", "entry")}
    if record:
        detail.update(state=record["state"], date_done=record.get("date_done"),
                      retries=max(int(record.get("retries") or 0), int(detail["retries"] or 0)),
                      name=record.get("task") or detail["name"],
                      worker=record.get("worker") or detail["worker"])
        if record.get("runtime"):
            detail["runtime"] = record["runtime"]
        if record["state"] == "SUCCESS":
            detail["result"] = fleet.show(record.get("value"))
        for key, source in (("exception", "exc_type"), ("message", "exc_message"),
                            ("traceback", "traceback")):
            if record.get(source):
                detail[key] = str(record[source])
    if dead is not None and detail["state"] != "SUCCESS":
        detail["state"] = DEAD_LETTERED
        # last, whatever the clocks say: it is where the task is now (a worker files it in
        # the same step as its last event, a moment before that event's time is taken)
        detail["timeline"] = [*detail["timeline"], {
            "type": "dead-lettered", "ts": dead["at"], "worker": "", "detail": dead["reason"]}]
    return detail


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return fleet.show(value)
