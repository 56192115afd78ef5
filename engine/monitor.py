"""``engine events``: the live terminal view of the fleet, and ``--dump``.

Workers from their heartbeat snapshots (pool, concurrency, load, CPU and RSS measured by the
worker itself), queue depths from the broker, throughput and the latest failures from the
event stream (``engine.events``). ``--dump`` prints the events as JSON lines instead. rich is
imported only by the live view.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

import redis

from engine import events as _events
from engine.console import redact
from engine.wire import text as _s
from engine.worker.snapshot import read_fleet

if TYPE_CHECKING:
    from engine.app import Engine

#: redraws per second of the live view
REFRESH_PER_SECOND = 5
#: seconds between polls of worker snapshots and queue depths
POLL_INTERVAL = 0.5
#: seconds of events the throughput figure averages over
RATE_WINDOW = 5.0
#: failures kept on screen
FAILURES_SHOWN = 8
#: seconds a worker that said goodbye stays listed as offline
OFFLINE_SHOWN = 30.0


# -- fleet state -----------------------------------------------------------------------
class FleetState:
    """What the monitor knows, fed by events (``on_event``) and polls (``poll``)."""

    def __init__(self) -> None:
        self.workers: dict[str, dict[str, Any]] = {}
        self.offline: dict[str, float] = {}
        self.queues: dict[str, dict[str, int]] = {}
        self.counts: Counter[str] = Counter()
        self.finished: deque[float] = deque()
        self.failures: deque[dict[str, Any]] = deque(maxlen=FAILURES_SHOWN)
        self.last_event: float | None = None
        self.error: str | None = None
        self._cpu_seen: dict[str, tuple[float, float]] = {}   # worker -> (cpu s, at)
        self._cpu_last: dict[str, float] = {}

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "?")
        self.counts[kind] += 1
        ts = float(event.get("ts") or time.time())
        self.last_event = ts
        if kind in ("task-succeeded", "task-failed"):
            self.finished.append(ts)
        if kind == "task-failed":
            self.failures.appendleft(event)
        elif kind == "worker-offline":
            self.offline[event.get("worker", "?")] = ts
        elif kind == "worker-online":
            self.offline.pop(event.get("worker", "?"), None)

    def rate(self, now: float | None = None) -> float:
        """Tasks finished per second over the last RATE_WINDOW seconds."""
        now = time.time() if now is None else now
        while self.finished and self.finished[0] < now - RATE_WINDOW:
            self.finished.popleft()
        return sum(1 for ts in self.finished if ts <= now) / RATE_WINDOW

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
        now = time.time()
        for name, info in workers.items():
            self._cpu_percent(name, info)
        self.workers = workers
        self.offline = {n: ts for n, ts in self.offline.items()
                        if n not in workers and now - ts < OFFLINE_SHOWN}
        self.queues = {queue: broker.depth(queue) for queue in broker.known_queues()}
        self.error = None


# -- rendering (rich) ------------------------------------------------------------------
def render(state: FleetState, title: str) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    now = time.time()
    header = Text.assemble((" engine events ", "bold reverse"), f"  {title}  ",
                           (time.strftime("%H:%M:%S"), "dim"), "   Ctrl-C to quit")
    if state.error:
        header.append(f"   {state.error}", style="bold red")

    workers = Table(title="Workers", title_justify="left", expand=True, show_edge=False)
    for column in ("worker", "pool", "concurrency", "active", "load", "cpu", "rss",
                   "processed", "failed", "up", "status"):
        workers.add_column(column, justify="left" if column in ("worker", "pool", "status")
                           else "right", no_wrap=True)
    for name, info in sorted(state.workers.items()):
        lanes = info.get("lanes") or []
        workers.add_row(
            Text(name), Text(", ".join(f"{lane.get('name')}={lane.get('pool')}" for lane in lanes)),
            str(sum(int(lane.get("concurrency") or 0) for lane in lanes)),
            str(info.get("active", 0)), f"{float(info.get('load') or 0):.2f}",
            f"{info['cpu_percent']:.0f}%" if "cpu_percent" in info else "…",
            _mib(info.get("rss")), str(sum(int(lane.get("processed") or 0) for lane in lanes)),
            str(sum(int(lane.get("failed") or 0) for lane in lanes)),
            _duration(now - float(info.get("started") or now)),
            Text("online", style="green"))
        for lane in lanes if len(lanes) > 1 else ():
            pool_info = lane.get("pool_info") or {}
            where = f" (own process {pool_info.get('pid')}, {pool_info.get('state')})" \
                if pool_info.get("isolated") else ""
            workers.add_row(
                Text(f"  lane {lane.get('name')}", style="dim"),
                Text(f"{lane.get('pool')}{where}", style="dim"), str(lane.get("concurrency", "")),
                str(pool_info.get("active", pool_info.get("running", pool_info.get("busy", "")))),
                "", "", _mib(pool_info.get("rss")) if pool_info.get("isolated") else "",
                str(lane.get("processed", 0)), str(lane.get("failed", 0)), "", "")
    for name in sorted(state.offline):
        workers.add_row(Text(name), *[""] * 9, Text("offline", style="red"))
    if not state.workers and not state.offline:
        workers.add_row(Text("no live workers", style="dim"), *[""] * 10)

    queues = Table(title="Queues", title_justify="left", expand=True, show_edge=False)
    for column in ("queue", "waiting", "unacked", "delayed", "dead"):
        queues.add_column(column, justify="left" if column == "queue" else "right")
    for name, depth in sorted(state.queues.items()):
        queues.add_row(Text(name), str(depth["waiting"]), str(depth["unacked"]),
                       str(depth["delayed"]), Text(str(depth["dead"]),
                                                   style="red" if depth["dead"] else ""))
    if not state.queues:
        queues.add_row(Text("no queues", style="dim"), "", "", "", "")

    counts = state.counts
    throughput = Text.assemble(
        ("Throughput ", "bold"), f"{state.rate(now):.1f} tasks/s",
        (f" (last {RATE_WINDOW:g} s)", "dim"),
        f"   received {counts['task-received']}  succeeded {counts['task-succeeded']}  "
        f"failed {counts['task-failed']}  retried {counts['task-retried']}  "
        f"revoked {counts['task-revoked']}", (" since the monitor started", "dim"))

    failures = Table(title="Latest failures", title_justify="left", expand=True,
                     show_edge=False)
    for column in ("time", "task", "id", "exception", "worker"):
        failures.add_column(column, no_wrap=column != "exception", overflow="fold")
    for event in state.failures:
        exc = event.get("exception") or "?"
        message = event.get("message")
        failures.add_row(time.strftime("%H:%M:%S", time.localtime(float(event.get("ts") or 0))),
                         Text(str(event.get("task", "?"))), Text(str(event.get("id", "?"))),
                         Text(f"{exc.rsplit('.', 1)[-1]}: {message}" if message else exc,
                              style="red"),
                         Text(str(event.get("worker", "?"))))
    if not state.failures:
        failures.add_row(Text("none", style="dim"), "", "", "", "")

    return Group(header, Panel(workers, border_style="blue"), Panel(queues, border_style="blue"),
                 Panel(throughput, border_style="blue"), Panel(failures, border_style="blue"))


def live(app: "Engine", *, refresh: float = REFRESH_PER_SECOND) -> None:
    """Run the full-screen view until Ctrl-C."""
    from rich.console import Console
    from rich.live import Live

    state = FleetState()
    stream = app.broker.keys.events
    reader = app.new_client()
    title = f"{app.main} on {redact(app.broker_url)}"
    # the recent past fills the failures and counters at once
    last_id = "0"
    try:
        recent = reader.xrevrange(stream, count=200)
        for entry_id, fields in reversed(recent):
            for event in _events.unpack(fields):
                state.on_event(event)
        last_id = _s(recent[0][0]) if recent else "$"
        state.counts.clear()
        state.poll(app)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        state.error = f"Redis unavailable: {exc}"
        last_id = "$"
    console = Console()
    period = 1.0 / refresh
    next_poll = time.monotonic() + POLL_INTERVAL
    with Live(render(state, title), console=console, screen=True, auto_refresh=False,
              redirect_stderr=False) as view:
        while True:
            try:
                response = reader.xread({stream: last_id}, count=1000,
                                        block=max(int(period * 1000), 1))
                for _, entries in response or []:
                    for entry_id, fields in entries:
                        last_id = _s(entry_id)
                        for event in _events.unpack(fields):
                            state.on_event(event)
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + POLL_INTERVAL
                    state.poll(app)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                state.error = f"Redis unavailable: {exc}"
                time.sleep(period)
            view.update(render(state, title), refresh=True)


def dump(app: "Engine", *, since: str = "$", out=None) -> None:
    """Print every event from ``since`` on as one JSON object a line, until interrupted."""
    out = out or sys.stdout
    reader = app.new_client()
    for _, event in _events.read(reader, app.broker.keys.events, last_id=since or "$",
                                 block_ms=1000, count=1000):
        if event:
            out.write(json.dumps(event, default=str, sort_keys=True) + "\n")
            out.flush()


def command(args) -> int:
    """``engine events``: the live view, or ``--dump``."""
    from engine.app import load_app
    from engine.connection import probe
    app = load_app(args.app or "")
    probe(app.broker_url, transport_options=app.conf.get("broker_transport_options"))
    try:
        if args.dump:
            dump(app, since=args.since)
        else:
            live(app)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:   # ``engine events --dump | head``
        sys.stderr.close()
    return 0


def _mib(kib: Any) -> str:
    return f"{int(kib) / 1024:.1f} MiB" if kib else "?"


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
