"""Operator text: everything the engine prints for a person, in one place.

The worker banner, URL redaction, and the ``engine inspect`` / ``engine control`` commands
with the formatting of their replies. Library modules return data and never import this
module; the command line (``engine.cli``) and the worker's start-up log line do.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from engine import control, flow
from engine.connection import probe
from engine.app import load_app
from engine.urls import redact  # noqa: F401 (console.redact: every URL shown to a person)

if TYPE_CHECKING:
    from engine.worker.supervisor import Supervisor


def banner(supervisor: "Supervisor") -> str:
    """The text a worker prints as it starts."""
    from engine import __version__
    app = supervisor.app
    conf = supervisor.conf
    lanes = supervisor.lanes
    rows = [
        ("app", app.main),
        ("broker", redact(app.broker_url)),
        ("results", redact(conf.result_backend) if conf.result_backend else "the broker"),
        ("pool", "; ".join(f"{_pool_name(lane)} x {lane.spec.concurrency} "
                           f"(prefetch {lane.spec.prefetch})"
                           + (f" for {lane.name}" if len(lanes) > 1 else "") for lane in lanes)),
        ("queues", ", ".join(q for lane in lanes for q in lane.queues)),
        ("events", "on" if supervisor.events.enabled else "off"),
        ("beat", "embedded" if supervisor.beat else "off"),
        ("prefix", supervisor.keys.prefix),
        ("signing", _signing(app.signer)),
    ]
    names = app.tasks.names()
    width = max(len(k) for k, _ in rows)
    lines = [f"-------------- engine {__version__} worker {supervisor.name}"]
    lines += [f"  {k.ljust(width)} : {v}" for k, v in rows]
    lines.append(f"  [tasks] ({len(names)})")
    lines += [f"    . {name}" for name in names]
    return "\n".join(lines)


def _signing(signer: Any) -> str:
    """Whether messages are signed; never the keys."""
    if signer is None:
        return "off (unsigned messages are run)"
    n = len(signer.keys)
    return f"on ({n} key{'s' if n > 1 else ''}: unsigned messages are dead-lettered)"


def _pool_name(lane: Any) -> str:
    """The pool asked for, and the class that answered when the names differ (custom)."""
    cls = lane.pool_cls
    asked, actual = lane.spec.pool, getattr(cls, "name", "")
    if not actual or actual == asked:
        return asked
    return f"{asked} ({actual}: {cls.__module__}.{cls.__qualname__})"


def _destination(args) -> list[str] | None:
    names = [n.strip() for n in (getattr(args, "destination", None) or "").split(",")]
    return [n for n in names if n] or None


def inspect_command(args) -> int:
    """``engine inspect VERB``: exit 0 with replies, 1 when no worker answered."""
    app = load_app(args.app or "")
    probe(app.broker_url, transport_options=app.conf.get("broker_transport_options"))   # no broker: one line at once, not a traceback later
    dest = _destination(args)
    replies = control.broadcast(app, args.verb, destination=dest, timeout=args.timeout)
    if args.verb == "queues":
        data: Any = {"queues": control.queue_depths(app),
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
    app = load_app(args.app or "")
    probe(app.broker_url, transport_options=app.conf.get("broker_transport_options"))   # no broker: one line at once, not a traceback later
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
    elif args.verb == "rate-limit":
        rate = getattr(args, "value", None)
        if not args.argument or not rate:
            print("engine control: error: rate-limit needs a task name and a rate, e.g. "
                  "rate-limit tasks.add 50/s", file=sys.stderr)
            return 2
        try:
            flow.set_rate_limit(app, args.argument, rate)   # kept for workers started later
        except ValueError as exc:
            print(f"engine control: error: {exc}", file=sys.stderr)
            return 2
        arguments = {"task": args.argument, "rate": rate}
    elif args.verb in ("pause", "resume"):
        if not args.argument:
            print(f"engine control: error: {args.verb} needs a queue name", file=sys.stderr)
            return 2
        flow.set_paused(app, args.argument, args.verb == "pause")   # for later workers too
        arguments = {"queue": args.argument}
    replies = control.broadcast(app, args.verb, destination=dest, timeout=args.timeout,
                                **arguments)
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
    if args.verb in ("rate-limit", "pause", "resume") and not replies:
        print(f"{args.verb} {args.argument}: stored in Redis (no live worker answered; "
              f"workers that start later obey it)")
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
        lines = [f"{head}: {len(payload)} running"]
        for job in payload:
            runtime = f"{job['runtime']:.1f}s" if job.get("runtime") is not None else "waiting"
            lines.append(f"    * {job['task']}[{job['id']}] args={job['args']!r} "
                         f"kwargs={job['kwargs']!r} queue={job['queue']} {runtime}")
        return "\n".join(lines)
    if verb == "reserved":
        if not payload:
            return f"{head}: nothing reserved"
        lines = [f"{head}: {len(payload)} reserved (prefetched, not started)"]
        lines += [f"    * {job['task']}[{job['id']}] args={job['args']!r} "
                  f"kwargs={job['kwargs']!r} queue={job['queue']} in {job.get('where', '?')}"
                  for job in payload]
        return "\n".join(lines)
    if verb == "stats":
        lines = [f"{head}: pid {payload.get('pid')} on {payload.get('host')}, "
                 f"up {payload.get('uptime', 0):.0f}s, {payload.get('active', 0)} running, "
                 f"{payload.get('prefetched', 0)} prefetched, "
                 f"rss {_kib(payload.get('rss'))}, load {payload.get('load', 0):.2f}"]
        for lane in payload.get("lanes", []):
            lines.append(f"    lane {lane['name']}: {lane['pool']}:{lane['concurrency']} "
                         f"queues={','.join(lane['queues'])} processed={lane['processed']} "
                         f"failed={lane['failed']} buffered={lane['buffered']}")
            lines.append(f"        pool {json.dumps(lane.get('pool_info'), default=str)}")
        lines += _format_limits(payload.get("limits") or {})
        if payload.get("paused"):
            lines.append(f"    paused queues: {', '.join(payload['paused'])}")
        return "\n".join(lines)
    return f"{head}: {json.dumps(payload, default=str)}"


def _format_limits(limits: dict) -> list[str]:
    """``inspect stats``: one line per limited task (engine.flow.Limiter.describe)."""
    lines = []
    for task, limit in sorted(limits.items()):
        parts = []
        if limit.get("rate_limit"):
            parts.append(f"rate {limit['rate_limit']}")
        if limit.get("max_concurrency"):
            in_use = limit.get("in_use")
            parts.append(f"max_concurrency {limit['max_concurrency']} "
                         f"({'?' if in_use is None else in_use} in use in the fleet)")
        parts.append(f"{limit.get('waiting', 0)} waiting on it "
                     f"({limit.get('held_back', 0)} held back since start)")
        lines.append(f"    limit {task}: {', '.join(parts)}")
    return lines


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


def format_broker_status(info: dict) -> str:
    """``engine broker status`` as a small table: which broker, whether it runs, and what."""
    if info.get("configured"):
        rows = [("broker", f"{info['broker']} (configured: ENGINE_BROKER_URL)")]
    else:
        rows = [("broker", "the embedded Redis (no broker configured)"),
                ("socket", info.get("socket", "?")), ("home", info.get("home", "?"))]
    rows.append(("running", "yes" if info.get("running") else "no"))
    if info.get("running"):
        rows += [("version", str(info.get("version"))), ("pid", str(info.get("pid"))),
                 ("uptime", f"{info.get('uptime_s', 0)} s")]
    cluster = info.get("cluster")
    if cluster:
        for shard in cluster["masters"]:
            spans = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in shard["slots"])
            rows.append(("master", f"{shard['master']} slots {spans} replicas "
                                   f"{', '.join(shard['replicas']) or 'none'}"))
        for q in cluster["queues"]:
            unused = "" if q["used"] else " (not used yet)"
            rows.append(("queue", f"{q['queue']}: slot {q['slot']} on {q['master']}{unused}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)} : {v}" for k, v in rows)


def _fmt(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def format_bench(r: dict[str, Any]) -> str:
    """``engine bench``'s figures (``engine.benchmark.run``) for a person."""
    w = r["worker"]
    lat = r["latency_ms"]
    lines = [
        f"engine bench: {r['kind']} x{r['tasks']:,} on --pool {r['pool']} -c {r['concurrency']}"
        + (f" --processes {r['processes']}" if r["processes"] > 1 else "")
        + f" ({r['broker']}{', tracing on' if 'tracing' in r else ''}"
        + f"{'' if r.get('events', True) else ', events off'})",
        f"  throughput    {_fmt(r['tasks_per_s'])} tasks/s (first taken to last done; "
        f"{_fmt(r['tasks_per_s_from_start'])}/s from worker start)",
        f"  enqueue       {_fmt(r['enqueue_per_s'])}/s with delay(), "
        f"{_fmt(r['enqueue_bulk_per_s'])}/s with delay_many",
        (f"  latency       p50 {_fmt(lat['p50'], ' ms', 2)}  p90 {_fmt(lat['p90'], ' ms', 2)}  "
         f"p99 {_fmt(lat['p99'], ' ms', 2)}  (enqueue to completion, {lat['samples']} tasks sent "
         f"every {lat['send_interval_ms']:.1f} ms)") if lat else
        "  latency       not measured (--events off: it needs the completion events)",
        f"  worker        CPU {_fmt(w['cpu_percent'], '%')} ({_fmt(w['cpu_us_per_task'], ' µs')}/task:"
        f" supervisors {_fmt(w['supervisor_cpu_us_per_task'], ' µs')}, pool children "
        f"{_fmt(w['child_cpu_us_per_task'], ' µs')}), RSS peak "
        f"{_fmt(w['rss_peak_mib'], ' MiB', 1)} over {w['processes']} process(es)",
    ]
    if r.get("redis_cpu_us_per_task") is not None:
        lines.append(f"  redis         CPU {_fmt(r['redis_cpu_us_per_task'], ' µs')}/task")
    if r.get("failed"):
        lines.append(f"  failed        {r['failed']} task(s)")
    return "\n".join(lines)
