"""What ``engine events`` knows: the fleet from polls, the tasks from the event stream.

Workers come from their heartbeat snapshots (pool, concurrency, load, CPU and RSS measured
by the worker itself), queue depths from the broker, throughput and the tasks from the event
stream (``engine.events``). Events carry no arguments, so the arguments of the selected
task, while it is in flight, are asked of the workers (``inspect active`` / ``reserved``)
now and then. Nothing here draws or prints.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict, deque
from itertools import groupby
from typing import TYPE_CHECKING, Any, Callable

import redis

from engine import control
from engine import events as _events
from engine.wire import text as _s
from engine.worker.snapshot import read_fleet

if TYPE_CHECKING:
    from engine.app import Engine

#: seconds between polls of worker snapshots and queue depths
POLL_INTERVAL = 0.5
#: seconds between asking the workers for the arguments of tasks in flight
ARGS_INTERVAL = 2.0
#: seconds a worker has to answer that question (the view waits this long at most)
ARGS_TIMEOUT = 0.3
#: seconds of events the throughput figure averages over
RATE_WINDOW = 5.0
#: tasks kept (the oldest are forgotten first)
MAX_TASKS = 1000
#: seconds a worker that said goodbye stays listed as offline
OFFLINE_SHOWN = 30.0
#: entries of the stream read at start (the recent past: tasks and failures at once)
BACKLOG = 200

#: the state a task event leaves a task in: "reserved" is prefetched and not started,
#: "active" started and not finished (the words of ``engine inspect``)
STATE_OF = {"task-received": "reserved", "task-started": "active",
            "task-succeeded": "succeeded", "task-failed": "failed", "task-retried": "retry",
            "task-revoked": "revoked"}
IN_FLIGHT = ("reserved", "active")
_NO_FIELDS: dict[str, Any] = {}


def _first(item: Any) -> Any:
    return item[0]


def _is_row(unit: tuple) -> bool:
    return unit[1]


def _row_id(row: list) -> str:
    return row[0] if type(row[0]) is str else str(row[0])


def _event_id(entry: list) -> str | None:
    """The task whose record a single event folds into (``FleetState._one``), if any."""
    kind, job_id = entry[0], entry[2]
    if not job_id or kind not in STATE_OF:
        return None
    return job_id if type(job_id) is str else str(job_id)


class FleetState:
    """What the monitor knows, fed by events (``on_event``) and polls (``poll``). The poller
    thread changes it under ``lock``, which the view holds while it draws."""

    def __init__(self, *, max_tasks: int = MAX_TASKS) -> None:
        self.lock = threading.RLock()
        self.workers: dict[str, dict[str, Any]] = {}
        self.offline: dict[str, float] = {}
        self.queues: dict[str, dict[str, int]] = {}
        self.counts: Counter[str] = Counter()
        self.finished: deque[float] = deque()
        #: task id -> record, oldest first
        self.tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.max_tasks = max_tasks
        self.last_event: float | None = None
        self.error: str | None = None
        self._cpu_seen: dict[str, tuple[float, float]] = {}   # worker -> (cpu s, at)
        self._cpu_last: dict[str, float] = {}

    # -- events ------------------------------------------------------------------------
    def on_event(self, event: dict[str, Any]) -> None:
        """Fold one event map (``engine.events.unpack``)."""
        self._one(event.get("type", "?"), event.get("ts"), event.get("worker"),
                  event.get("id"), event.get("task"), event)

    def on_entry(self, fields: dict) -> int:
        """Fold every event of one stream entry (``engine.events.entries``: no map made of
        each); returns how many. The same as ``on_event`` of each of ``unpack(fields)``."""
        return self.on_batch(_events.decode(fields))

    def on_batch(self, batch: Any) -> int:
        """``on_entry`` of a batch already decoded (``engine.events.decode``)."""
        seen = 0
        one = self._one
        if type(batch) is dict and batch.get("t"):
            single, rows = batch.get("e") or (), batch["t"]
            # a task's whole short life folds at once, when no task of the batch also has
            # single events (a second copy, an event after its end): those keep their order.
            # Rows and single events go in the order of their first event, so that the task
            # list's order (newest first) is the one the events give
            if not {entry[2] for entry in single}.intersection(row[0] for row in rows):
                return self._fold_units(batch.get("w"), single, rows)
        for kind, ts, worker, job_id, task, extra in _events.flat(batch):
            one(kind or "?", ts, worker, job_id, task, extra or _NO_FIELDS)
            seen += 1
        return seen

    def _fold_units(self, worker: Any, single: Any, rows: list) -> int:
        """A batch's rows and single events (none of them of a row's task), folded in the
        order of their first event, from the cut on (``_cut``): before it, rows are only
        counted."""
        units = [(entry[1], False, entry) for entry in single]
        units += [(row[5], True, row) for row in rows]
        units.sort(key=_first)
        seen = 0
        cut = self._cut([_row_id(item) if is_row else _event_id(item)
                         for _, is_row, item in units])
        if cut:
            # in order, runs of rows at once: finish times keep the order of the fold
            for is_row, run in groupby(units[:cut], key=_is_row):
                if is_row:
                    seen += self._count_rows([item for _, _, item in run])
                else:
                    for _, _, item in run:
                        seen += self._fold_single(worker, item)
            self.tasks.clear()      # what the units before the cut made goes too
            units = units[cut:]
        fold_row = self._row_folder(worker)
        for _, is_row, item in units:
            seen += fold_row(item) if is_row else self._fold_single(worker, item)
        return seen

    def _fold_single(self, worker: Any, entry: list) -> int:
        kind, ts, job_id, task, extra = entry
        self._one(kind or "?", ts, worker, job_id, task, extra or _NO_FIELDS)
        return 1

    def _cut(self, ids: list) -> int:
        """Where a batch's fold may begin, given the task id of each of its rows and single
        events in fold order (None for an event that makes no task record); 0 for the
        whole batch. From the cut on, at least ``max_tasks`` tasks fold that are new here
        and not seen before the cut, so every record known before and every one made
        before the cut would be pushed out of the ``max_tasks`` kept by the end of the
        batch: the rows before the cut need only be counted (``_count_rows``). A busy
        fleet's batch holds thousands of rows against the thousand tasks kept: most of
        their records would be built only to be forgotten."""
        max_tasks = self.max_tasks
        cut = len(ids)
        if cut <= max_tasks:
            return 0
        later: set = set()
        while cut > 0 and len(later) < max_tasks:
            cut -= 1
            if ids[cut] is not None:
                later.add(ids[cut])
        if cut == 0 or len(later) < max_tasks or not later.isdisjoint(self.tasks) \
                or not later.isdisjoint(ids[:cut]):
            return 0
        return cut

    def _count_rows(self, rows: list) -> int:
        """What rows leave but their records: the counts, the finish times and the last
        event's time. Returns how many events they stood for."""
        counts, finished = self.counts, self.finished
        started = sum(1 for row in rows if row[6] is not None)
        ends = [float(row[7]) for row in rows]
        counts["task-received"] += len(rows)
        counts["task-succeeded"] += len(rows)
        if started:
            counts["task-started"] += started
        finished.extend(ends)
        last = max(ends)
        if self.last_event is None or last > self.last_event:
            self.last_event = last
        return 2 * len(rows) + started

    def _row_folder(self, worker: Any) -> Callable[[list], int]:
        """What received, started (when there was a start) and succeeded leave in a task's
        record, for one row (``engine.events``): the three folds' end state in one update.
        Returns how many events the row stood for."""
        tasks, finished, max_tasks, counts = self.tasks, self.finished, self.max_tasks, \
            self.counts
        worker = str(worker) if worker else None

        def fold_row(row: list) -> int:
            job_id, task, queue, retries, body, received, started, ended, runtime = row
            if type(job_id) is not str:
                job_id = str(job_id)
            record = tasks.get(job_id)
            if record is None and task and queue is not None and retries is not None:
                # a task first seen in its row (nearly every one): its record in one go
                ended = float(ended)
                tasks[job_id] = record = {
                    "id": job_id, "received": float(received), "retries": retries,
                    "name": str(task), "worker": worker or "?", "queue": queue,
                    "state": "succeeded", "at": ended, "ended": ended}
                if body is not None:
                    record["m"] = body
                if runtime is not None:
                    record["runtime"] = runtime
                if len(tasks) > max_tasks:
                    tasks.popitem(last=False)
                finished.append(ended)
                if self.last_event is None or ended > self.last_event:
                    self.last_event = ended
                counts["task-received"] += 1
                counts["task-succeeded"] += 1
                if started is None:
                    return 2
                record["started"] = float(started)
                counts["task-started"] += 1
                return 3
            if record is None:
                record = tasks[job_id] = {"id": job_id, "received": float(received),
                                          "retries": 0, "name": "?", "worker": "?"}
                if len(tasks) > max_tasks:
                    tasks.popitem(last=False)
            if task:
                record["name"] = str(task)
            if worker:
                record["worker"] = worker
            if queue is not None:
                record["queue"] = queue
            if retries is not None:
                record["retries"] = retries
            if body is not None:
                record["m"] = body
                record.pop("args", None)
            events = 2
            counts["task-received"] += 1
            if started is not None:
                record["started"] = float(started)
                counts["task-started"] += 1
                events = 3
            else:
                record.pop("started", None)
            ended = float(ended)
            counts["task-succeeded"] += 1
            record["state"] = "succeeded"
            record["at"] = record["ended"] = ended
            if runtime is not None:
                record["runtime"] = runtime
            record.pop("exception", None)
            record.pop("message", None)
            finished.append(ended)
            if self.last_event is None or ended > self.last_event:
                self.last_event = ended
            return events
        return fold_row

    def _one(self, kind: str, ts: Any, worker: Any, task_id: Any, name: Any,
             fields: dict[str, Any]) -> None:
        self.counts[kind] += 1
        ts = float(ts or time.time())
        if self.last_event is None or ts > self.last_event:
            self.last_event = ts
        if kind == "task-succeeded" or kind == "task-failed":
            self.finished.append(ts)
        if task_id and kind in STATE_OF:
            self._fold(kind, ts, task_id, name, worker, fields)
        elif kind == "worker-offline":
            self.offline[worker or "?"] = ts
        elif kind == "worker-online":
            self.offline.pop(worker or "?", None)

    def _fold(self, kind: str, ts: float, task_id: Any, name: Any, worker: Any,
              fields: dict[str, Any]) -> None:
        # on the event reader's thread, for every task event of the fleet: kept to a few
        # dict operations (the common events carry only their own fields)
        if type(task_id) is not str:
            task_id = str(task_id)
        tasks = self.tasks
        record = tasks.get(task_id)
        if record is None:
            record = tasks[task_id] = {"id": task_id, "received": ts, "retries": 0,
                                       "name": "?", "worker": "?"}
            if len(tasks) > self.max_tasks:
                tasks.popitem(last=False)
        if name:
            record["name"] = str(name)
        if worker:
            record["worker"] = str(worker)
        record["state"] = STATE_OF[kind]
        record["at"] = ts
        if kind == "task-started":
            record["started"] = ts
            return
        get = fields.get
        if kind == "task-succeeded":
            record["ended"] = ts
            runtime = get("runtime")
            if runtime is not None:
                record["runtime"] = runtime
            record.pop("exception", None)
            record.pop("message", None)
            return
        for field in ("queue", "retries", "runtime", "exception", "message"):
            value = get(field)
            if value is not None:
                record[field] = value
        if kind == "task-received":
            record.pop("started", None)
            record.pop("ended", None)
            if "m" in fields:      # the message itself (events.unpack(arguments=False))
                record["m"] = fields["m"]
                record.pop("args", None)
            elif isinstance(get("args"), str):   # text made by the worker
                record["args"], record["kwargs"] = fields["args"], str(get("kwargs", ""))
                record.pop("m", None)
        elif kind in ("task-failed", "task-revoked"):
            record["ended"] = ts
            if kind == "task-revoked" and get("reason"):
                record["message"] = str(fields["reason"])

    def arguments(self, task_id: str) -> tuple[str, str] | None:
        """(args, kwargs) text of a listed task, when known: from its received event (the
        message, shown now) or asked of its worker (``poll_arguments``)."""
        record = self.tasks.get(task_id)
        if record is None:
            return None
        if "args" not in record and "m" in record:
            shown = _events.arguments({"m": record.pop("m")})
            if shown is not None:
                record["args"], record["kwargs"] = shown
        if "args" in record:
            return record["args"], record["kwargs"]
        return None

    def task_ids(self) -> list[str]:
        """Task ids, newest first: the order of the task list."""
        return list(reversed(self.tasks))

    def in_flight(self) -> Counter[str]:
        return Counter(r["state"] for r in self.tasks.values() if r["state"] in IN_FLIGHT)

    def rate(self, now: float | None = None) -> float:
        """Tasks finished per second over the last RATE_WINDOW seconds."""
        now = time.time() if now is None else now
        while self.finished and self.finished[0] < now - RATE_WINDOW:
            self.finished.popleft()
        return sum(1 for ts in self.finished if ts <= now) / RATE_WINDOW

    # -- polls -------------------------------------------------------------------------
    def _cpu_percent(self, name: str, info: dict[str, Any]) -> None:
        """Sets ``info["cpu_percent"]`` from this and the previous snapshot of the worker."""
        cpu, at = info.get("cpu"), info.get("at")
        previous = self._cpu_seen.get(name)
        if cpu is None or at is None:
            return
        if previous and at > previous[1]:
            self._cpu_last[name] = max(cpu - previous[0], 0.0) / (at - previous[1]) * 100
        if not previous or at > previous[1]:
            self._cpu_seen[name] = (cpu, at)
        if name in self._cpu_last:
            info["cpu_percent"] = self._cpu_last[name]

    def poll(self, app: "Engine") -> None:
        broker = app.broker
        workers = {}
        for name, _, snapshot in read_fleet(app):
            # a lane process shows in its supervisor's row
            if snapshot is not None and not snapshot.parent:
                workers[name] = snapshot.as_dict()
        queues = {queue: broker.depth(queue) for queue in broker.known_queues()}
        now = time.time()
        with self.lock:
            for name, info in workers.items():
                self._cpu_percent(name, info)
            self.workers, self.queues, self.error = workers, queues, None
            self.offline = {n: ts for n, ts in self.offline.items()
                            if n not in workers and now - ts < OFFLINE_SHOWN}

    def wants_arguments(self, task_id: str | None) -> bool:
        """Whether the task (the one selected) is in flight with its arguments unknown."""
        record = self.tasks.get(task_id) if task_id else None
        return (record is not None and record["state"] in IN_FLIGHT and "args" not in record
                and "m" not in record)

    def poll_arguments(self, app: "Engine", timeout: float = ARGS_TIMEOUT) -> None:
        """Ask the workers which tasks they hold (with their arguments) and remember them."""
        replies = [r for verb in ("active", "reserved")
                   for r in control.broadcast(app, verb, timeout=timeout)]
        with self.lock:
            for reply in replies:
                jobs = reply.get("reply")
                for job in jobs if isinstance(jobs, list) else ():
                    record = self.tasks.get(str(job.get("id"))) if isinstance(job, dict) else None
                    if record is not None:
                        record["args"] = repr(job.get("args"))
                        record["kwargs"] = repr(job.get("kwargs"))


class EventFeed:
    """Follows ``P:events`` without blocking: ``backlog`` once, then ``pump`` each turn."""

    def __init__(self, app: "Engine") -> None:
        self.app = app
        self.stream = app.broker.keys.events
        self.reader = app.new_client()
        self.last_id = "0"

    def backlog(self, state: FleetState, entries: int = BACKLOG) -> None:
        """The recent past: its tasks are listed, its counts are not (they are "since the
        monitor started")."""
        recent = self.reader.xrevrange(self.stream, count=entries)
        with state.lock:
            for _, fields in reversed(recent):
                state.on_entry(fields)
            state.counts.clear()
            state.finished.clear()
        self.last_id = _s(recent[0][0]) if recent else "0"

    def pump(self, state: FleetState) -> int:
        """Fold in what arrived since the last call; returns how many events."""
        seen = 0
        response = self.reader.xread({self.stream: self.last_id}, count=1000)
        with state.lock:
            for _, entries in response or []:
                for entry_id, fields in entries:
                    self.last_id = _s(entry_id)
                    seen += state.on_entry(fields)
        return seen


class Poller:
    """Keeps ``state`` fresh: events every turn (the recent past first), snapshots every
    POLL_INTERVAL, and every ARGS_INTERVAL the arguments of the ``selected`` task while it
    is in flight; a lost broker shows as ``state.error`` until it answers again. ``run`` is
    the thread that does it, so that a slow or lost broker never holds up the keys."""

    def __init__(self, app: "Engine", state: FleetState) -> None:
        self.app, self.state = app, state
        self.feed = EventFeed(app)
        self.selected: str | None = None
        self._caught_up = False
        self._next_poll = self._next_args = 0.0

    def run(self, stop: threading.Event, period: float) -> None:
        while not stop.is_set():
            self.turn(self.selected)
            stop.wait(period)

    def turn(self, selected: str | None = None) -> None:
        state, now = self.state, time.monotonic()
        try:
            if not self._caught_up:
                self.feed.backlog(state)
                self._caught_up = True
            self.feed.pump(state)
            if now >= self._next_poll:
                self._next_poll = now + POLL_INTERVAL
                state.poll(self.app)
            with state.lock:
                wanted = state.wants_arguments(selected)
            if now >= self._next_args and wanted:
                self._next_args = now + ARGS_INTERVAL
                state.poll_arguments(self.app)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            state.error = f"Redis unavailable: {exc}"
