"""The tasks ``engine bench`` runs: shipped in the package so that a user needs no tasks
module of their own. The worker is started as ``engine run -A engine.bench_tasks``; broker and
key prefix come from the environment the benchmark gives it (``ENGINE_BROKER_URL``,
``ENGINE_KEY_PREFIX``), so a run never touches a user's queues.
"""

from __future__ import annotations

import asyncio
import os
import time

from engine.app import Engine

app = Engine("engine.bench_tasks")

#: ``engine bench --tracing`` sets it in the worker's environment (with ENGINE_TRACING=1)
TRACING_ENV = "ENGINE_BENCH_TRACING"
#: spans the no-op exporter of this process was handed (``install_tracing``)
exported = [0]


def install_tracing() -> None:
    """An OpenTelemetry SDK tracer provider whose exporter drops every span (it only counts
    them), behind the SDK's BatchSpanProcessor: what tracing costs short of the network.
    ImportError without opentelemetry-sdk."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (BatchSpanProcessor, SpanExporter,
                                                SpanExportResult)

    class NoopExporter(SpanExporter):
        def export(self, spans):
            exported[0] += len(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NoopExporter()))
    trace.set_tracer_provider(provider)


if os.environ.get(TRACING_ENV):
    install_tracing()


@app.task(ignore_result=True)
def noop() -> None:
    pass


@app.task(ignore_result=True, rate_limit="1000000/s")
def noop_limited() -> None:
    """A no-op under a fleet rate limit that never binds: what the limit itself costs."""


@app.task(ignore_result=True)
def sleep(seconds: float) -> None:
    time.sleep(seconds)


@app.task(ignore_result=True)
async def asleep(seconds: float) -> None:
    """``sleep`` as a coroutine: on ``--pool asyncio`` thousands wait at once on one loop."""
    await asyncio.sleep(seconds)


@app.task(ignore_result=True)
def cpu(iters: int) -> int:
    return burn(iters)


@app.task(ignore_result=True)
def payload(data: str) -> int:
    return len(data)


@app.task
def tracing_state() -> dict:
    """Whether this run is inside a recording span of an SDK provider (``--tracing``)."""
    from engine import tracing
    state = {"enabled": tracing.ENABLED, "recording": False}
    if tracing.ENABLED:
        from opentelemetry import trace
        state["recording"] = trace.get_current_span().is_recording()
        state["provider"] = type(trace.get_tracer_provider()).__name__
    return state


@app.task
def echo(x):
    """Result stored: for round trips (``delay().get()``)."""
    return x


def burn(iters: int) -> int:
    """Pure-Python CPU work (holds the GIL): ``calibrate`` picks ``iters`` for a duration."""
    x = 0
    for i in range(iters):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x


def calibrate(target_ms: float = 20.0) -> int:
    """Iterations of ``burn`` taking about ``target_ms`` of CPU here (best of a few tries;
    CPU time, not wall time, so that a busy machine does not shorten the task)."""
    iters = 50000
    best = None
    for _ in range(5):
        t = time.thread_time()
        burn(iters)
        dt = time.thread_time() - t
        best = dt if best is None else min(best, dt)
    return max(1000, int(iters * (target_ms / 1000.0) / best))
