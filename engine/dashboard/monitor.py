"""The dashboard's memory of recent tasks, built by tailing the events stream ``P:events``.

One thread reads the stream from its start (so history survives a dashboard restart, as far
as the capped stream reaches) and then follows it, folding each task event into a per-task
record and counting successes and failures per second for the throughput chart. Readers take
copies under a lock; nothing here writes to Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import redis

from engine import events as _events

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger("engine.dashboard")

#: tasks kept in memory (the oldest are forgotten first)
MAX_TASKS = 20000
#: seconds of per-second throughput kept for the chart
CHART_SECONDS = 300
#: events kept per task for its timeline
MAX_TIMELINE = 50

STATE_OF = {"task-received": "RECEIVED", "task-started": "STARTED",
            "task-succeeded": "SUCCESS", "task-failed": "FAILURE", "task-retried": "RETRY",
            "task-revoked": "REVOKED"}
STATES = ("RECEIVED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED")


class Monitor:
    def __init__(self, app: "Engine", *, max_tasks: int = MAX_TASKS) -> None:
        self.app = app
        self.stream = app.broker.keys.events
        self.max_tasks = max_tasks
        self.tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.per_second: dict[int, list[int]] = {}
        self.totals = {"succeeded": 0, "failed": 0}
        #: grows by one for each batch of task events folded in (pages refetch on change)
        self.version = 0
        self.caught_up = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the reader thread -------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dashboard-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        last_id = "0"
        while not self._stop.is_set():
            client = None
            try:
                client = self.app.new_client()
                while not self._stop.is_set():
                    response = client.xread({self.stream: last_id}, count=1000, block=500)
                    if not response:
                        self.caught_up.set()
                        continue
                    batch = []
                    for _, entries in response:
                        for entry_id, fields in entries:
                            last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                            batch.extend(_events.unpack(fields))
                    self.fold(batch)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("events stream unavailable (%s); retrying", exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("could not read the events stream; retrying")
                self._stop.wait(1.0)
            finally:
                if client is not None:
                    client.close()

    # -- folding events ----------------------------------------------------------------
    def fold(self, batch: list[dict[str, Any]]) -> None:
        changed = False
        with self._lock:
            for event in batch:
                kind = event.get("type")
                if kind in STATE_OF and event.get("id"):
                    self._fold_task(kind, event)
                    changed = True
            if changed:
                self.version += 1
                self._trim()

    def _fold_task(self, kind: str, event: dict[str, Any]) -> None:
        task_id = str(event["id"])
        ts = _num(event.get("ts")) or time.time()
        record = self.tasks.get(task_id)
        if record is None:
            record = self.tasks[task_id] = {
                "id": task_id, "name": str(event.get("task") or ""), "state": "RECEIVED",
                "worker": "", "queue": "", "received": None, "started": None, "ended": None,
                "runtime": None, "retries": 0, "exception": "", "message": "",
                "traceback": "", "args": None, "kwargs": None, "timeline": []}
        record["name"] = str(event.get("task") or record["name"])
        record["worker"] = str(event.get("worker") or record["worker"])
        record["state"] = STATE_OF[kind]
        record["updated"] = ts
        timeline = record["timeline"]
        if len(timeline) < MAX_TIMELINE:
            timeline.append({"type": kind, "ts": ts, "worker": record["worker"]})
        if kind == "task-received":
            record["received"] = record["received"] or ts
            record["queue"] = str(event.get("queue") or record["queue"])
            record["retries"] = int(event.get("retries") or record["retries"] or 0)
            for key in ("args", "kwargs"):   # capped repr text (engine.events)
                if key in event:
                    record[key] = event[key]
        elif kind == "task-started":
            record["started"] = ts
        elif kind == "task-retried":
            record["retries"] = int(event.get("retries") or record["retries"] or 0)
            record["exception"] = str(event.get("exception") or "")
            record["message"] = str(event.get("message") or "")
        elif kind in ("task-succeeded", "task-failed", "task-revoked"):
            record["ended"] = ts
            record["runtime"] = _num(event.get("runtime"))
            if kind == "task-failed":
                record["exception"] = str(event.get("exception") or "")
                record["message"] = str(event.get("message") or "")
                record["traceback"] = str(event.get("traceback") or "")
            elif kind == "task-revoked":
                record["message"] = str(event.get("reason") or "")
            if kind != "task-revoked":
                bucket = self.per_second.setdefault(int(ts), [0, 0])
                bucket[0 if kind == "task-succeeded" else 1] += 1
                self.totals["succeeded" if kind == "task-succeeded" else "failed"] += 1

    def _trim(self) -> None:
        while len(self.tasks) > self.max_tasks:
            self.tasks.popitem(last=False)
        horizon = int(time.time()) - CHART_SECONDS - 5
        if len(self.per_second) > CHART_SECONDS + 60:
            for second in [s for s in self.per_second if s < horizon]:
                del self.per_second[second]

    # -- reading -----------------------------------------------------------------------
    def throughput(self, *, seconds: int = CHART_SECONDS, now: float | None = None
                   ) -> dict[str, list]:
        """Succeeded and failed tasks per second for the last ``seconds`` whole seconds."""
        end = int(time.time() if now is None else now)   # the current second is still open
        times = list(range(end - seconds, end))
        with self._lock:
            counts = [self.per_second.get(t, (0, 0)) for t in times]
        return {"t": times, "succeeded": [c[0] for c in counts],
                "failed": [c[1] for c in counts]}

    def task_list(self, *, state: str = "", name: str = "", page: int = 1,
                  per_page: int = 50) -> dict[str, Any]:
        """Newest first, filtered by exact state and by a substring of the name."""
        name = name.strip().lower()
        with self._lock:
            rows = [r for r in reversed(self.tasks.values())
                    if (not state or r["state"] == state) and (not name or name in r["name"].lower())]
            total = len(rows)
            pages = max((total + per_page - 1) // per_page, 1)
            page = min(max(page, 1), pages)
            chosen = [_summary(r) for r in rows[(page - 1) * per_page:page * per_page]]
        return {"tasks": chosen, "total": total, "page": page, "pages": pages,
                "per_page": per_page, "version": self.version}

    def task(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self.tasks.get(task_id)
            if record is None:
                return None
            return {**record, "timeline": list(record["timeline"])}


#: characters of an exception's message in the task list (its page shows all of it)
SUMMARY_MESSAGE = 200


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    summary = {key: record[key] for key in ("id", "name", "state", "worker", "queue",
                                            "received", "started", "ended", "runtime",
                                            "retries", "exception")}
    message = record["message"] if record["exception"] else ""
    if len(message) > SUMMARY_MESSAGE:
        message = message[:SUMMARY_MESSAGE - 1] + "…"
    summary["message"] = message
    return summary


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
