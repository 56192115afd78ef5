"""Tracing with OpenTelemetry, on with ``ENGINE_TRACING=1`` (``pip install engine-tasks[otel]``).

A producer span ``send <task>`` (kind PRODUCER) around the enqueue, and a worker span
``run <task>`` (kind CONSUMER) around the task in the process that runs it, its child: the
W3C ``traceparent`` of the send span travels in the message body under ``tp``. Spans go to
the global tracer provider (configure it in your app module, or with
``opentelemetry-instrument``); attributes follow OpenTelemetry's messaging conventions.

Off (the default), this module imports only ``os`` and nothing else costs anything: the
callers test ``ENABLED`` (read once, at import) before they call in, and opentelemetry is
imported by the first call.
"""

from __future__ import annotations

import os
from typing import Any, Callable

ENABLED = os.environ.get("ENGINE_TRACING", "").strip().lower() in ("1", "true", "yes", "on")

#: the body key of the W3C traceparent (CONTRACT: Observability)
BODY_KEY = "tp"
SYSTEM = "engine"
TRACER = "engine"

#: the tracer: got once per process, by the first span (a proxy until the app sets the
#: global provider, which it then follows: getting one per span cost ~16 µs)
_tracer: Any = None


def _get_tracer() -> Any:
    global _tracer
    if _tracer is None:
        from opentelemetry import trace
        _tracer = trace.get_tracer(TRACER)
    return _tracer


class SendSpan:
    """``with SendSpan(task, task_id, queue, body) as body:`` enqueue the body it gives,
    which carries the span's traceparent."""

    __slots__ = ("task", "task_id", "queue", "body", "_span", "_scope")

    def __init__(self, task: str, task_id: str, queue: str, body: bytes | None) -> None:
        self.task, self.task_id, self.queue, self.body = task, task_id, queue, body

    def __enter__(self) -> Any:
        """The body with the traceparent under ``tp`` (a ``body`` None: the traceparent,
        for a caller that puts it in bodies of its own)."""
        from opentelemetry import propagate, trace
        from engine import message
        self._span = _get_tracer().start_span(
            f"send {self.task}", kind=trace.SpanKind.PRODUCER,
            attributes=_attributes(self.task, self.task_id, self.queue, "send"))
        self._scope = trace.use_span(self._span, end_on_exit=False)
        self._scope.__enter__()
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        traceparent = carrier.get("traceparent")
        if self.body is None:
            return traceparent
        return message.reencode(self.body, tp=traceparent) if traceparent else self.body

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            from opentelemetry.trace import Status, StatusCode
            self._span.record_exception(exc)
            self._span.set_status(Status(StatusCode.ERROR, str(exc)))
        self._scope.__exit__(kind, exc, tb)
        self._span.end()


class CanvasSpan(SendSpan):
    """``with CanvasSpan(name, result_id, outgoing):`` enqueue a canvas's first messages
    (``engine.canvas.plan.Outgoing``), each given the span's traceparent under ``tp``."""

    __slots__ = ("outgoing",)

    def __init__(self, task: str, task_id: str, outgoing: list) -> None:
        super().__init__(task, task_id, outgoing[0].queue if outgoing else "", None)
        self.outgoing = outgoing

    def __enter__(self) -> None:
        from engine import message
        traceparent = super().__enter__()
        for out in self.outgoing if traceparent else ():
            out.body = message.reencode(out.body, tp=traceparent)


def run_in_span(execute: Callable[..., Any], job: Any, *args: Any) -> Any:
    """``execute(job, *args)`` (a runner's) in a ``run <task>`` span whose parent is the producer's
    span (from the body's ``tp``), in the process that runs the task."""
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Status, StatusCode
    from engine import message
    from pools.base import FAILURE
    try:
        traceparent = message.loads(job.body).get(BODY_KEY)
    except Exception:   # a body the runner will refuse anyway: trace it unparented
        traceparent = None
    parent = (propagate.extract({"traceparent": traceparent})
              if isinstance(traceparent, str) else None)
    with _get_tracer().start_as_current_span(
            f"run {job.task}", context=parent, kind=trace.SpanKind.CONSUMER,
            attributes=_attributes(job.task, job.id, job.queue, "process"),
            record_exception=False, set_status_on_exception=False) as span:
        outcome = execute(job, *args)
        span.set_attribute("engine.task.state", outcome.state)
        span.set_attribute("engine.task.retries", job.retries)
        if outcome.state == FAILURE:
            span.set_status(Status(StatusCode.ERROR,
                                   f"{outcome.exc_type}: {outcome.exc_message}"))
        return outcome


def _attributes(task: str, task_id: str, queue: str, operation: str) -> dict[str, Any]:
    return {"messaging.system": SYSTEM, "messaging.operation.type": operation,
            "messaging.operation.name": operation, "messaging.destination.name": queue,
            "messaging.message.id": task_id, "engine.task.name": task}

