"""``engine bench``: a real run against the test Redis; fields checked, timings never asserted."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_json_reports_every_figure_and_leaves_no_keys(env, redis_server):
    client = redis_server.client()
    before = {k for k in client.scan_iter(match="bench-*")}
    result = subprocess.run(
        [sys.executable, "-m", "engine", "bench", "-n", "500", "--pool", "threads", "-c", "4",
         "--json", "--broker", redis_server.url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout           # one JSON object, nothing else on stdout
    out = json.loads(lines[0])

    assert out["pool"] == "threads" and out["concurrency"] == 4
    assert out["kind"] == "noop" and out["tasks"] == 500 and out["failed"] == 0
    for key in ("tasks_per_s", "tasks_per_s_from_start", "enqueue_per_s", "enqueue_bulk_per_s"):
        assert isinstance(out[key], (int, float)) and out[key] > 0, key
    lat = out["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert 1 <= lat["samples"] <= 500
    worker = out["worker"]
    assert worker["rss_peak_mib"] > 0 and worker["cpu_s"] >= 0 and worker["processes"] >= 1
    assert out["key_prefix"].startswith("bench-")
    assert out["machine"]["cpus"] >= 1

    # its private prefix is gone, and no other bench prefix was left behind
    assert not list(client.scan_iter(match=f"{out['key_prefix']}:*"))
    assert {k for k in client.scan_iter(match="bench-*")} == before


def test_bench_human_output(env, redis_server):
    result = subprocess.run(
        [sys.executable, "-m", "engine", "bench", "-n", "200", "--pool", "solo",
         "--kind", "payload", "--payload-bytes", "256", "--broker", redis_server.url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    for word in ("tasks/s", "delay_many", "p50", "p99", "RSS"):
        assert word in result.stdout


def test_bench_processes_runs_a_fleet_and_splits_the_cpu(env, redis_server):
    # When the bench runs its worker as `engine run --processes 2` on prefork
    result = subprocess.run(
        [sys.executable, "-m", "engine", "bench", "-n", "3000", "--pool", "prefork", "-c", "1",
         "--processes", "2", "--json", "--broker", redis_server.url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    # Then every task ran, over the parent, two supervisors and their pool children
    assert out["processes"] == 2 and out["failed"] == 0 and out["tasks"] == 3000
    worker = out["worker"]
    # (the tree is sampled every 0.1 s: a short run may end before a sample sees every
    # pool child, but the parent and both supervisors are there from the start; and each
    # supervisor gets enough tasks to spend more than psutil's 10 ms tick of CPU)
    assert worker["processes"] >= 3
    # And its CPU is split between the supervisors and the pool children (both did work)
    assert worker["supervisor_cpu_us_per_task"] > 0 and worker["child_cpu_us_per_task"] > 0
    assert (worker["supervisor_cpu_us_per_task"] + worker["child_cpu_us_per_task"]
            <= worker["cpu_us_per_task"] + 0.2)   # rounding of three figures


def test_bench_events_off_and_on_read_by_the_monitor_model(env, redis_server):
    def bench(events):
        result = subprocess.run(
            [sys.executable, "-m", "engine", "bench", "-n", "400", "--pool", "threads",
             "-c", "2", "--events", events, "--json", "--broker", redis_server.url],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    # Events off: every task is still counted done, from the queue's depth, and no latency
    # is claimed
    off = bench("off")
    assert off["events"] is False and off["tasks"] == 400
    assert off["failed"] is None and off["dead_lettered"] == 0
    assert off["tasks_per_s"] > 0 and off["latency_ms"] is None
    assert "monitor_events" not in off
    # Events on: every task's events reached the monitor's model (received, started and
    # succeeded for each of the 400, plus the latency samples' and the worker's own)
    on = bench("on")
    assert on["events"] is True and on["latency_ms"]["p50"] > 0
    assert on["monitor_events"] >= 3 * 400


def test_bench_events_takes_on_or_off_only(env):
    result = subprocess.run([sys.executable, "-m", "engine", "bench", "--events", "maybe"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid choice: 'maybe'" in result.stderr and "Traceback" not in result.stderr


def test_bench_events_off_says_so_and_why_there_is_no_latency(env, redis_server):
    result = subprocess.run(
        [sys.executable, "-m", "engine", "bench", "-n", "100", "--pool", "solo", "--events",
         "off", "--broker", redis_server.url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "events off" in result.stdout and "tasks/s" in result.stdout
    assert "latency       not measured (--events off" in result.stdout
