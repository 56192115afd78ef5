"""``engine bench --tracing``: the worker's runs are recorded by an SDK tracer provider (the
bench proves it with a task run inside one), the producer's sends too; no timing asserted."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_with_tracing_runs_every_task_in_a_recorded_span(env, redis_server):
    result = subprocess.run(
        [sys.executable, "-m", "engine", "bench", "-n", "300", "--pool", "prefork", "-c", "2",
         "--tracing", "--json", "--broker", redis_server.url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["tracing"]["worker"] == {"enabled": True, "recording": True,
                                        "provider": "TracerProvider"}
    # every task was sent by its own delay() in a send span (the latency ones too)
    assert out["enqueue_mode"] == "delay x300"
    assert out["tracing"]["producer_spans"] >= 300 + out["latency_ms"]["samples"]
    assert out["failed"] == 0


def test_bench_without_tracing_reports_none(env, redis_server):
    result = subprocess.run(
        [sys.executable, "-m", "engine", "bench", "-n", "100", "--pool", "threads", "-c", "2",
         "--json", "--broker", redis_server.url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "tracing" not in json.loads(result.stdout)
