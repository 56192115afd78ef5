"""The screen of ``engine events``: what goes where, for any width and height.

Top to bottom: a title bar, the workers, the queues, a throughput line, the task list
(newest first, the selected task highlighted) and the selected task's details. Each table
fits the width (``layout.fit``: the priorities below decide which columns go first when it
is narrow); the task list takes the rows the others leave.
"""

from __future__ import annotations

import time
from typing import Any

from engine.monitor.keys import HELP, Selection
from engine.monitor.layout import Column, Line, bar, cut, fields, rule, table
from engine.monitor.state import RATE_WINDOW, FleetState

# the priority of each column: 0 always shown, the highest number dropped first
WORKER_COLUMNS = (
    Column("worker", 0, flex=12), Column("pool", 5, flex=10),
    Column("concurrency", 7, short="conc", right=True), Column("active", 1, right=True),
    Column("load", 3, right=True), Column("cpu", 6, right=True), Column("rss", 2, right=True),
    Column("processed", 8, short="done", right=True), Column("failed", 9, short="fail",
                                                               right=True),
    Column("up", 10, right=True), Column("status", 0))
QUEUE_COLUMNS = (
    Column("queue", 0, flex=12), Column("waiting", 0, right=True),
    Column("unacked", 1, right=True), Column("delayed", 2, right=True),
    Column("dead", 3, right=True))
TASK_COLUMNS = (
    Column("time", 4), Column("id", 1, flex=8), Column("name", 0, flex=16, keep_end=True),
    Column("state", 0), Column("worker", 2, flex=8), Column("runtime", 3, right=True),
    Column("retries", 5, short="retry", right=True), Column("queue", 6, flex=8),
    Column("exception", 7, flex=16))
STATE_STYLE = {"succeeded": "green", "failed": "red", "retry": "yellow", "revoked": "yellow",
               "active": "bold", "reserved": ""}
#: lines the details pane may take at most (below 30 rows / from 30 rows)
DETAILS_LINES = (5, 9)


def render(state: FleetState, selection: Selection, width: int, height: int, title: str,
           now: float | None = None, where: str = "") -> list[Line]:
    """The whole screen: at most ``height`` lines of at most ``width`` characters (``title``
    the app, ``where`` its broker)."""
    if width <= 0 or height <= 0:
        return []
    now = time.time() if now is None else now
    top = bar([(" engine events ", "title", 0), (title, "bold", 2),
               (f"on {where}" if where else "", "", 5),
               (time.strftime("%H:%M:%S", time.localtime(now)), "dim", 4), (HELP, "dim", 1),
               (cut(state.error or "", width - 17), "red", 0)], width)
    w_rows, w_styles = _worker_rows(state, now)
    q_rows = _queue_rows(state)
    ids = state.task_ids()
    selected = selection.selected(ids)
    if selected:
        state.arguments(selected)   # the selected task's arguments as text, made now
    details = _details(state.tasks.get(selected) if selected else None, now)

    # rows: 6 fixed (title bar, three table headers, throughput, details rule), then the
    # details, workers and queues (two rows each at least, when they have them) and the
    # task list the rest
    free = max(height - 6, 0)
    d_lines = fields(details, width, min(DETAILS_LINES[height >= 30], max(free - 3, 1)))
    left = free - len(d_lines)
    w_count = min(len(w_rows), max(2, (left - 2) // 3))
    q_count = min(len(q_rows), max(2, (left - 1 - w_count) // 3))
    t_count = max(left - w_count - q_count, 0)

    t_rows = [_task_row(state.tasks[i], now) for i in ids]
    first = selection.window(ids, t_count)
    t_styles = ["selected" if i == selected else "" for i in ids]
    screen = [top]
    screen += table(WORKER_COLUMNS, _more(w_rows, w_count, 11), width, row_styles=w_styles)
    screen += table(QUEUE_COLUMNS, _more(q_rows, q_count, 5), width)
    screen.append(_throughput(state, now, width))
    if t_rows:
        screen += table(TASK_COLUMNS, t_rows, width, row_styles=t_styles, limit=t_count,
                        first=first)
    else:
        screen += table(TASK_COLUMNS, [], width)
        if t_count:
            screen.append([("no task events yet", "dim")])
    if selected:
        screen.append(rule(f"{state.tasks[selected]['name']}  {ids.index(selected) + 1} of "
                           f"{len(ids)}", width))
    else:
        screen.append(rule("no task selected", width))
    screen += d_lines
    return screen[:height]


def _more(rows: list[list[Any]], count: int, columns: int) -> list[list[Any]]:
    """``rows`` cut to ``count``, the last one saying how many are not shown."""
    if len(rows) <= count:
        return rows
    return rows[:count - 1] + [[(f"+{len(rows) - count + 1} more", "dim")] + [""] * (columns - 1)]


def _worker_rows(state: FleetState, now: float) -> tuple[list[list[Any]], list[str]]:
    rows: list[list[Any]] = []
    styles: list[str] = []
    for name, info in sorted(state.workers.items()):
        lanes = info.get("lanes") or []
        rows.append([
            name, _pools(lanes),
            str(sum(int(lane.get("concurrency") or 0) for lane in lanes)),
            str(info.get("active", 0)), f"{float(info.get('load') or 0):.2f}",
            f"{info['cpu_percent']:.0f}%" if "cpu_percent" in info else "-",
            _mib(info.get("rss")), str(sum(int(lane.get("processed") or 0) for lane in lanes)),
            str(sum(int(lane.get("failed") or 0) for lane in lanes)),
            _duration(now - float(info.get("started") or now)), ("online", "green")])
        styles.append("")
        for lane in lanes if len(lanes) > 1 else ():
            pool_info = lane.get("pool_info") or {}
            where = f" (own process {pool_info.get('pid')}, {pool_info.get('state')})" \
                if pool_info.get("isolated") else ""
            rows.append([
                f"  lane {lane.get('name')}", f"{lane.get('pool')}{where}",
                str(lane.get("concurrency", "")),
                str(pool_info.get("active", pool_info.get("running", pool_info.get("busy", "")))),
                "", "", _mib(pool_info.get("rss")) if pool_info.get("isolated") else "",
                str(lane.get("processed", 0)), str(lane.get("failed", 0)), "", ""])
            styles.append("dim")
    for name in sorted(state.offline):
        rows.append([name] + [""] * 9 + [("offline", "red")])
        styles.append("")
    if not rows:
        rows.append([("no live workers", "dim")] + [""] * 10)
        styles.append("")
    return rows, styles


def _pools(lanes: list[dict[str, Any]]) -> str:
    """The pool, or with lanes besides the default one, ``lane=pool`` for each."""
    if len(lanes) == 1 and lanes[0].get("name") == "default":
        return str(lanes[0].get("pool"))
    return ", ".join(f"{lane.get('name')}={lane.get('pool')}" for lane in lanes)


def _queue_rows(state: FleetState) -> list[list[Any]]:
    rows: list[list[Any]] = [
        [name, str(depth["waiting"]), str(depth["unacked"]), str(depth["delayed"]),
         (str(depth["dead"]), "red" if depth["dead"] else "")]
        for name, depth in sorted(state.queues.items())]
    return rows or [[("no queues", "dim"), "", "", "", ""]]


def _throughput(state: FleetState, now: float, width: int) -> Line:
    counts, flight = state.counts, state.in_flight()
    return bar([(f"{state.rate(now):.1f} tasks/s", "bold", 0),
                (f"(last {RATE_WINDOW:g} s)", "dim", 4),
                (f"active {flight['active']}", "", 1),
                (f"reserved {flight['reserved']}", "", 1),
                (f"succeeded {counts['task-succeeded']}", "green", 2),
                (f"failed {counts['task-failed']}", "red" if counts["task-failed"] else "", 2),
                (f"retried {counts['task-retried']}", "", 3),
                (f"revoked {counts['task-revoked']}", "", 3),
                (f"received {counts['task-received']}", "", 3)], width)


def _runtime(record: dict[str, Any], now: float) -> str:
    if record.get("runtime") is not None and record["state"] not in ("active", "reserved"):
        return _seconds(float(record["runtime"]))
    if record["state"] == "active" and record.get("started"):
        return _seconds(now - record["started"])
    return ""


def _seconds(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.1f}s" if seconds < 600 else _duration(seconds)


def _exception(record: dict[str, Any]) -> str:
    exc = record.get("exception")
    if not exc:
        return record.get("message", "") if record["state"] == "revoked" else ""
    message = record.get("message")
    short = str(exc).rsplit(".", 1)[-1]
    return f"{short}: {message}" if message else short


def _task_row(record: dict[str, Any], now: float) -> list[Any]:
    state = record["state"]
    return [time.strftime("%H:%M:%S", time.localtime(record["received"])), record["id"],
            record["name"], (state, STATE_STYLE.get(state, "")), record.get("worker", "?"),
            _runtime(record, now), str(record.get("retries", 0)), record.get("queue", ""),
            (_exception(record), "red")]


def _details(record: dict[str, Any] | None, now: float) -> list[tuple[str, str, str]]:
    """The details pane's ``(label, value, style)`` items for the selected task."""
    if record is None:
        return [("", "tasks appear here as workers report them (workers started with "
                 "--no-events report none)", "dim")]
    task_state = record["state"]
    items = [("id", record["id"], "bold"), ("name", record["name"], ""),
             ("state", task_state, STATE_STYLE.get(task_state, "")),
             ("worker", record.get("worker", "?"), ""), ("queue", record.get("queue", "?"), ""),
             ("retries", str(record.get("retries", 0)), "")]
    runtime = _runtime(record, now)
    items.append(("runtime", (runtime + (" so far" if task_state == "active" else ""))
                  if runtime else "not started" if task_state == "reserved" else "?", ""))
    if "args" in record:
        items += [("args", record["args"], ""), ("kwargs", record["kwargs"], "")]
    elif task_state in ("active", "reserved"):
        items.append(("args", "asking the worker…", "dim"))
    else:
        items.append(("args", "not known (the worker no longer holds it)", "dim"))
    exception = _exception(record)
    if exception:
        label = "reason" if task_state == "revoked" else "exception"
        items.append((label, f"{record.get('exception') or ''}: {record.get('message', '')}"
                      if record.get("exception") else exception, "red"))
    return items


def _mib(kib: Any) -> str:
    return f"{int(kib) / 1024:.1f} MiB" if kib else "?"


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
