"""The basic app with an OpenTelemetry SDK tracer provider that appends each finished span,
as one JSON line, to the file named by $ENGINE_TEST_SPANS (tests/integration/test_tracing.py)."""

import json
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tests.apps.basic import add, app


class JsonLinesExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans) -> SpanExportResult:
        with open(self.path, "a") as out:
            for span in spans:
                out.write(json.dumps({
                    "name": span.name, "kind": span.kind.name, "pid": os.getpid(),
                    "trace_id": format(span.context.trace_id, "032x"),
                    "span_id": format(span.context.span_id, "016x"),
                    "parent": format(span.parent.span_id, "016x") if span.parent else None,
                    "status": span.status.status_code.name,
                    "attributes": dict(span.attributes)}) + "\n")
        return SpanExportResult.SUCCESS


if os.environ.get("ENGINE_TEST_SPANS"):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ["ENGINE_TEST_SPANS"])))
    trace.set_tracer_provider(provider)


@app.task
def relay(x):
    """Sends a step of its own from inside its run: that send is a child of this run."""
    return add.delay(x, 1).id
