"""What the comparison prints and draws from its runs: medians, the tables with the
engine's ratio on each row, the issues' bars as measured ratios (information, never
asserted) and the PNG charts (bench/compare/run.py calls them)."""
from __future__ import annotations

import os
import statistics
import sys

from matrix import ARDIQ_WIDE, ASYNC_PEERS, POOL_EQUIV

METRICS = ("tasks_per_s", "tasks_per_s_from_start", "first_to_last_s", "from_start_s",
           "start_to_last_s", "tasks_per_s_busy", "enqueue_per_s", "enqueue_bulk_per_s", "enqueue_total_per_s", "p50_ms", "p90_ms",
           "p99_ms", "mean_ms", "worker_rss_peak_mb", "worker_cpu_s", "startup_s",
           "push_per_s", "pop_per_s")


def summarize(runs):
    ok = [r for r in runs if "error" not in r]
    s = {"runs": len(runs), "ok": len(ok)}
    for m in METRICS:
        vals = [r[m] for r in ok if isinstance(r.get(m), (int, float))]
        if vals:
            s[m] = statistics.median(vals)
            s[m + "_min"] = min(vals)
            s[m + "_max"] = max(vals)
    if ok:
        s["version"] = ok[0].get("version")
    errs = [r["error"] for r in runs if "error" in r]
    if errs:
        s["errors"] = errs
    return s


def engine_peer(c, configs):
    """The engine row a rival row is compared with."""
    engines = [e for e in configs if e["system"] == "engine"]
    if not engines:
        return None
    if c["system"] in ASYNC_PEERS:
        # the engine's asyncio rows: the one with as many slots in all, else the first
        aio = [e for e in engines if e["pool"] == "asyncio"]
        for e in aio:
            if e["c"] * e["procs"] == c["c"] * c["procs"]:
                return e
        if aio:
            return aio[0]
    if c["system"] in ("dramatiq", "redis-py") and c["pool"] != "gevent":
        return engines[0]          # processes x threads: the issues compare with the first row
    pool = POOL_EQUIV.get(c["pool"], c["pool"])
    # ArdiQ's slots are per process: its 2x250 sleep row answers the engine's gevent -c 500;
    # with no engine row of as many slots it is compared with the first row (prefork -c 2)
    slots = c["c"] * c["procs"] if c["system"] == "ardiq" else c["c"]
    for e in engines:
        if e["pool"] == pool and e["c"] == slots:
            return e
    return engines[0]


def ratio(workload, eng, riv):
    """How many times better the engine is (>1: engine better)."""
    if not eng or not riv:
        return None
    if workload == "latency":
        a, b = riv.get("p50_ms"), eng.get("p50_ms")
    elif workload in ("sleep", "asleep"):
        a, b = riv.get("first_to_last_s"), eng.get("first_to_last_s")
    elif workload == "cpu":
        a, b = riv.get("start_to_last_s"), eng.get("start_to_last_s")
    else:
        a, b = eng.get("tasks_per_s"), riv.get("tasks_per_s")
    if not a or not b:
        return None
    return a / b


def fmt(v, spec=",.0f"):
    if v is None:
        return "-"
    return format(v, spec)


def print_tables(summary, matrix, workloads, out=sys.stdout):
    for w in workloads:
        configs = matrix[w]
        rows = summary.get(w, {})
        if not rows:
            continue
        print(f"\n== {w} ==", file=out)
        if w == "latency":
            head = f"{'configuration':28} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} " \
                   f"{'RSS MB':>7} {'engine x (p50)':>15}"
        else:
            span = "start-last s" if w == "cpu" else "first-last s"
            head = f"{'configuration':28} {'tasks/s':>9} {'from start':>10} {span:>12} " \
                   f"{'enqueue/s':>9} {'bulk/s':>8} {'RSS MB':>7} {'engine x':>9}"
        print(head, file=out)
        print("-" * len(head), file=out)
        for c in configs:
            s = rows.get(c["label"])
            if s is None:
                continue
            peer = engine_peer(c, configs) if c["system"] != "engine" else None
            r = ratio(w, rows.get(peer["label"]) if peer else None, s) if peer else None
            rt = f"{r:.2f}" if r else "-"
            if peer and r and c["system"] == "redis-py":
                # the engine's no-op rate as a share of the ceiling; on latency, the floor's
                # p50 as a share of the engine's
                rt = f"{r:.2f} share"
            elif peer and r:
                rt += f" ({peer['pool'][:3]} {peer['c']})"
            if s.get("ok", 0) == 0:
                print(f"{c['label']:28} FAILED: {(s.get('errors') or ['?'])[0][:100]}", file=out)
                continue
            if w == "latency":
                print(f"{c['label']:28} {fmt(s.get('p50_ms'), '.2f'):>8} "
                      f"{fmt(s.get('p90_ms'), '.2f'):>8} {fmt(s.get('p99_ms'), '.2f'):>8} "
                      f"{fmt(s.get('worker_rss_peak_mb'), '.0f'):>7} {rt:>15}", file=out)
            else:
                print(f"{c['label']:28} {fmt(s.get('tasks_per_s')):>9} "
                      f"{fmt(s.get('tasks_per_s_from_start')):>10} "
                      f"{fmt(s.get('start_to_last_s' if w == 'cpu' else 'first_to_last_s'), '.3f'):>12} "
                      f"{fmt(s.get('enqueue_per_s')):>9} {fmt(s.get('enqueue_bulk_per_s')):>8} "
                      f"{fmt(s.get('worker_rss_peak_mb'), '.0f'):>7} {rt:>9}", file=out)


def targets(summary):
    """The issues' bars, as measured ratios (printed, never asserted)."""
    g = lambda w, label, m: (summary.get(w, {}).get(label) or {}).get(m)  # noqa: E731
    t = []

    def add(name, value, bar, ok):
        if value is not None:
            t.append({"target": name, "value": value, "bar": bar,
                      "met": None if ok is None else bool(ok)})

    e2 = g("noop", "engine prefork -c 2", "tasks_per_s")
    c2 = g("noop", "celery prefork -c 2", "tasks_per_s")
    dq = g("noop", "dramatiq threads 2x8", "tasks_per_s")
    hu = g("noop", "huey process -c 2", "tasks_per_s")
    ceil = g("noop", "redis-py ceiling", "tasks_per_s")
    if e2 and c2:
        add("noop prefork -c 2: engine / celery", e2 / c2, ">= 10", e2 / c2 >= 10)
    best = max([x for x in (dq, hu) if x] or [0])
    if e2 and best:
        add("noop prefork -c 2: engine / max(dramatiq, huey)", e2 / best, ">= 3", e2 / best >= 3)
    if e2 and c2:
        add("noop prefork -c 2: engine / celery (issue 22)", e2 / c2, ">= 20", e2 / c2 >= 20)
    if e2 and best:
        add("noop prefork -c 2: engine / max(dramatiq, huey) (issue 22)", e2 / best, ">= 5",
            e2 / best >= 5)
    aq = g("noop", f"ardiq async 2x{ARDIQ_WIDE}", "tasks_per_s")
    if e2 and aq:
        add("noop prefork -c 2: engine / ardiq", e2 / aq, "-", None)
    for pool, c in (("threads", 8), ("gevent", 100), ("prefork", 8)):
        e = g("noop", f"engine {pool} -c {c}", "tasks_per_s")
        r = g("noop", f"celery {pool} -c {c}", "tasks_per_s")
        if e and r:
            bar = 10 if pool == "prefork" else 5
            add(f"noop {pool} -c {c}: engine / celery", e / r, f">= {bar}", e / r >= bar)
    for c in (2, 8):
        e = g("stored", f"engine prefork -c {c}", "tasks_per_s")
        r = g("stored", f"celery prefork -c {c}", "tasks_per_s")
        if e and r:
            add(f"no-op, results stored, prefork -c {c}: engine / celery", e / r, ">= 5",
                e / r >= 5)
    if e2 and ceil:
        add("noop: engine prefork -c 2 share of the redis-py ceiling", e2 / ceil, ">= 0.20",
            e2 / ceil >= 0.2)
    ee = g("noop", "engine prefork -c 2", "enqueue_per_s")
    ce = g("noop", "celery prefork -c 2", "enqueue_per_s")
    if ee and ce:
        add("enqueue, one delay() per call: engine / celery", ee / ce, ">= 3", ee / ce >= 3)
    eb = g("noop", "engine prefork -c 2", "enqueue_bulk_per_s")
    add("enqueue delay_many (tasks/s)", eb, ">= 50,000", eb and eb >= 50000)
    el = g("latency", "engine prefork -c 2", "p50_ms")
    cl = g("latency", "celery prefork -c 2", "p50_ms")
    add("latency p50 (ms), engine prefork -c 2", el, "<= 0.75", el and el <= 0.75)
    if el and cl:
        add("latency p50: engine / celery", el / cl, "<= 0.333", el / cl <= 1 / 3)
    if el:
        add("latency p50 (ms), engine prefork -c 2 (issue 22)", el, "<= 0.35", el <= 0.35)
    hl = g("latency", "huey process -c 2", "p50_ms")
    if el and hl:
        add("latency p50: engine / huey (issue 22)", el / hl, "<= 0.25", el / hl <= 0.25)
    fl = g("latency", "redis-py floor", "p50_ms")
    if el and fl:
        # no bar: what the engine's worker adds above the least a round trip takes here
        add("latency p50: engine / the redis-py floor", el / fl, "-", None)
        add("latency p50 (ms), the redis-py floor (issue 22 asks the engine for <= 0.35)", fl,
            "-", None)
    g1000 = g("sleep", "engine gevent -c 1000", "first_to_last_s")
    add("sleep 2000x50ms gevent -c 1000, first to last (s)", g1000, "<= 0.5",
        g1000 and g1000 <= 0.5)
    g500 = g("sleep", "engine gevent -c 500", "first_to_last_s")
    rivals = [g("sleep", x, "first_to_last_s") for x in
              ("celery gevent -c 500", "dramatiq gevent 1x500", "huey greenlet -c 500")]
    rivals = [x for x in rivals if x]
    if g500 and rivals:
        add("sleep gevent -c 500: engine / best rival at 500 (time)", g500 / min(rivals),
            "<= 0.5", g500 / min(rivals) <= 0.5)
    t100 = g("sleep", "engine threads -c 100", "first_to_last_s")
    add("sleep threads -c 100, first to last (s)", t100, "<= 1.5", t100 and t100 <= 1.5)
    # issue 19: the asyncio pool against the asyncio-native queues
    aio = {w: {lb: v for lb, v in summary.get(w, {}).items()} for w in ("noop", "latency", "asleep")}
    ea = next((v for lb, v in aio["noop"].items() if lb.startswith("engine asyncio")), None)
    peers = [v.get("tasks_per_s") for lb, v in aio["noop"].items()
             if lb.split()[0] in ASYNC_PEERS and v.get("tasks_per_s")]
    if ea and ea.get("tasks_per_s") and peers:
        r = ea["tasks_per_s"] / max(peers)
        add("noop asyncio: engine / fastest of taskiq, saq, arq", r, ">= 3", r >= 3)
    el = next((v.get("p50_ms") for lb, v in aio["latency"].items()
               if lb.startswith("engine asyncio")), None)
    peers = [v.get("p50_ms") for lb, v in aio["latency"].items()
             if lb.split()[0] in ASYNC_PEERS and v.get("p50_ms")]
    if el and peers:
        r = el / min(peers)
        add("latency p50 asyncio: engine / lowest of taskiq, saq, arq", r, "<= 0.5", r <= 0.5)
    es = next((v.get("first_to_last_s") for lb, v in aio["asleep"].items()
               if lb.startswith("engine asyncio")), None)
    peers = [v.get("first_to_last_s") for lb, v in aio["asleep"].items()
             if lb.split()[0] in ASYNC_PEERS and v.get("first_to_last_s")]
    if es and peers:
        r = es / min(peers)
        add("asleep 10,000 x 50 ms at 1,000: engine time / best peer time", r, "<= 1", r <= 1)
    cp = g("cpu", "engine prefork -c 2", "start_to_last_s")
    cs = g("cpu", "engine solo -c 1", "start_to_last_s")
    if cp and cs:
        add("cpu 200x20ms: prefork -c 2 time / solo time", cp / cs, "<= 0.55", cp / cs <= 0.55)
    for w, bar in (("chord", 10), ("chain", 5)):     # canvas (issue 15): send to result
        e = g(w, "engine prefork -c 2", "first_to_last_s")
        r = g(w, "celery prefork -c 2", "first_to_last_s")
        if e and r:
            add(f"{w} prefork -c 2: celery time / engine time", r / e, f">= {bar}", r / e >= bar)
    return t


# --------------------------------------------------------------------------- charts

COLORS = {"engine": "#1f77b4", "celery": "#2ca02c", "dramatiq": "#ff7f0e", "huey": "#9467bd",
          "ardiq": "#d62728", "taskiq": "#17becf", "saq": "#bcbd22", "arq": "#e377c2",
          "redis-py": "#7f7f7f"}


def charts(summary, runs, matrix, workloads, outdir):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"(no charts: {e})")
        return []
    written = []
    panels = [(w, m, t) for w, m, t in (
        ("noop", "tasks_per_s", "no-op tasks/s (results ignored)"),
        ("stored", "tasks_per_s", "no-op tasks/s, results stored"),
        ("payload", "tasks_per_s", "10 KiB payload tasks/s"),
        ("cpu", "start_to_last_s", "200 x 20 ms CPU: first start to last end, s (lower is better)"),
        ("sleep", "first_to_last_s", "2,000 x 50 ms sleep: first to last, s (lower is better)"),
        ("asleep", "first_to_last_s",
         "10,000 x await asyncio.sleep(0.05), 1,000 at once: first to last, s (lower is better)"),
    ) if w in workloads and summary.get(w)]
    if panels:
        fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
        for ax, (w, m, title) in zip(axes[:, 0], panels):
            labels, vals, lo, hi, cols = [], [], [], [], []
            for c in matrix[w]:
                s = summary[w].get(c["label"])
                if not s or s.get(m) is None:
                    continue
                labels.append(c["label"])
                vals.append(s[m])
                lo.append(s[m] - s[m + "_min"])
                hi.append(s[m + "_max"] - s[m])
                cols.append(COLORS.get(c["system"], "k"))
            y = range(len(labels))
            ax.barh(list(y), vals, xerr=[lo, hi], color=cols, capsize=3)
            ax.set_yticks(list(y))
            ax.set_yticklabels(labels, fontsize=8)
            ax.invert_yaxis()
            ax.set_title(title + "  (median; bars: min-max)", fontsize=10)
            if m == "tasks_per_s" and vals and max(vals) / max(min(vals), 1e-9) > 30:
                ax.set_xscale("log")
            for yi, v in zip(y, vals):
                ax.text(v, yi, f" {v:,.0f}" if m == "tasks_per_s" else f" {v:.2f}",
                        va="center", fontsize=7)
        fig.tight_layout()
        path = os.path.join(outdir, "compare_throughput.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if "latency" in workloads and summary.get("latency"):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
        for c in matrix["latency"]:
            samples = [x for r in runs if r.get("workload") == "latency"
                       and r.get("label") == c["label"] for x in r.get("latencies_ms", [])]
            if not samples:
                continue
            s = sorted(samples)
            ys = [(i + 1) / len(s) for i in range(len(s))]
            ax1.plot(s, ys, label=c["label"], color=COLORS.get(c["system"]))
        ax1.set_xscale("log")
        ax1.set_xlabel("delay().get() round trip, ms (log)")
        ax1.set_ylabel("fraction of calls")
        ax1.set_title("sequential round-trip latency, CDF (all repeats)", fontsize=10)
        ax1.grid(True, which="both", alpha=0.3)
        ax1.legend(fontsize=8)
        labels = [c["label"] for c in matrix["latency"] if c["label"] in summary["latency"]
                  and summary["latency"][c["label"]].get("p50_ms")]
        width = 0.27
        for i, (m, alpha) in enumerate((("p50_ms", 1.0), ("p90_ms", 0.7), ("p99_ms", 0.45))):
            vals = [summary["latency"][lb].get(m) or 0 for lb in labels]
            cols = [COLORS.get(lb.split()[0], "k") for lb in labels]
            ax2.bar([x + (i - 1) * width for x in range(len(labels))], vals, width,
                    color=cols, alpha=alpha, label=m.replace("_ms", ""))
        ax2.set_xticks(range(len(labels)))
        ax2.set_xticklabels(labels, fontsize=8, rotation=15)
        ax2.set_ylabel("ms")
        ax2.set_title("p50 / p90 / p99 (median of repeats)", fontsize=10)
        ax2.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(outdir, "compare_latency.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if "noop" in workloads and summary.get("noop"):
        labels, vals, cols = [], [], []
        for c in matrix["noop"]:
            s = summary["noop"].get(c["label"])
            if not s or not s.get("enqueue_per_s") or c["system"] == "redis-py":
                continue
            if c["system"] == "engine" and labels and any(x.startswith("engine") for x in labels):
                continue
            labels.append(f"{c['system']}: one call")
            vals.append(s["enqueue_per_s"])
            cols.append(COLORS.get(c["system"]))
            if s.get("enqueue_bulk_per_s"):
                labels.append(f"{c['system']}: delay_many")
                vals.append(s["enqueue_bulk_per_s"])
                cols.append(COLORS.get(c["system"]))
        ceil = summary["noop"].get("redis-py ceiling", {}).get("push_per_s")
        if ceil:
            labels.append("redis-py pipelined XADD")
            vals.append(ceil)
            cols.append(COLORS["redis-py"])
        seen = {}
        for lb, v, col in zip(labels, vals, cols):
            seen.setdefault(lb, (v, col))
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.barh(list(seen), [v for v, _ in seen.values()], color=[c for _, c in seen.values()])
        ax.invert_yaxis()
        ax.set_title("enqueue rate, tasks/s (no-op, median)", fontsize=10)
        for i, (v, _) in enumerate(seen.values()):
            ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
        fig.tight_layout()
        path = os.path.join(outdir, "compare_enqueue.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
