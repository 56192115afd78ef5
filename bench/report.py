"""Markdown tables from the JSON the benchmarks write (for docs/performance.md).

    python bench/report.py [bench/results/compare.json] [bench/results/cost_curve.json]

Standard library only; runs with any Python.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _f(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


def compare_tables(doc: dict) -> str:
    out = []
    summary, runs = doc["summary"], doc["runs"]

    def cpu_us(label, workload):
        xs = [r["worker_cpu_s"] / r["n"] * 1e6 for r in runs
              if r.get("label") == label and r.get("workload") == workload
              and r.get("worker_cpu_s") and "error" not in r]
        return statistics.median(xs) if xs else None

    for w, rows in summary.items():
        if w == "latency":
            out.append(f"\n**{w}** (500 sequential `delay().get()` on an idle worker; ms)\n")
            out.append("| configuration | p50 | p90 | p99 | p50 range (min-max) |")
            out.append("|---|---:|---:|---:|---:|")
            for label, s in rows.items():
                out.append(f"| {label} | {_f(s.get('p50_ms'), 2)} | {_f(s.get('p90_ms'), 2)} | "
                           f"{_f(s.get('p99_ms'), 2)} | {_f(s.get('p50_ms_min'), 2)}-"
                           f"{_f(s.get('p50_ms_max'), 2)} |")
            continue
        out.append(f"\n**{w}** (median of {max(s.get('runs', 0) for s in rows.values())}; "
                   "tasks/s from first to last completion)\n")
        out.append("| configuration | tasks/s | range (min-max) | enqueue, 1 call/task | "
                   "enqueue, bulk | worker CPU µs/task | worker RSS MiB |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for label, s in rows.items():
            out.append(f"| {label} | {_f(s.get('tasks_per_s'))} | {_f(s.get('tasks_per_s_min'))}-"
                       f"{_f(s.get('tasks_per_s_max'))} | {_f(s.get('enqueue_per_s'))} | "
                       f"{_f(s.get('enqueue_bulk_per_s'))} | {_f(cpu_us(label, w))} | "
                       f"{_f(s.get('worker_rss_peak_mb'), 1)} |")
    if doc.get("targets"):
        out.append("\n**The issues' bars, measured in this run**\n")
        out.append("| bar | measured | target | met |")
        out.append("|---|---:|---:|:---:|")
        for t in doc["targets"]:
            v = t["value"]
            out.append(f"| {t['target']} | {v:,.3f} | {t['bar']} | {'yes' if t['met'] else 'no'} |"
                       if v < 100 else
                       f"| {t['target']} | {v:,.0f} | {t['bar']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(out)


def cost_tables(doc: dict) -> str:
    out = ["\n**Backlog** (no-op tasks queued before the worker starts; "
           f"{doc.get('window_s')} s measured per size)\n",
           "| backlog | tasks/s | worker RSS peak MiB | RSS at end MiB | delay_many enqueue/s | "
           "Redis used MiB |", "|---:|---:|---:|---:|---:|---:|"]
    for r in doc["backlog"]:
        out.append(f"| {r['backlog']:,} | {_f(r['tasks_per_s'])} | {r['rss_peak_mib']} | "
                   f"{r['rss_end_mib']} | {_f(r['enqueue_bulk_per_s'])} | "
                   f"{r['redis_used_memory_mib']} |")
    if doc.get("rss_ratio"):
        out.append(f"\nRSS peak at the largest backlog / at the smallest: **{doc['rss_ratio']:.3f}**")
    out += ["\n**Concurrency** (20,000 no-op tasks per point)\n",
            "| pool | -c | tasks/s | worker RSS peak MiB | processes | never finished |",
            "|---|---:|---:|---:|---:|---:|"]
    for r in doc["concurrency"]:
        out.append(f"| {r['pool']} | {r['concurrency']} | {_f(r['tasks_per_s'])} | "
                   f"{r['rss_peak_mib']} | {r['processes']} | {r.get('stuck', 0)} |")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv] or [ROOT / "bench/results/compare.json",
                                        ROOT / "bench/results/cost_curve.json"]
    for path in paths:
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        print(f"<!-- from {path.name} -->")
        print(cost_tables(doc) if "backlog" in doc else compare_tables(doc))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
