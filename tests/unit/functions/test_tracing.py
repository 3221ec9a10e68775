from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from functions.adapters.memory import MemoryResultStore
from functions.adapters.tracing import Tracing, context_from, current_traceparent, tracer_provider
from functions.adapters.tracing_export import is_otlp, make_exporter
from functions.config import TracingConfig
from functions.processor import handle
from handlers.process import ProcessConfig
from tests.golden import raw
from tests.unit.functions.decoding import decode_fc_event

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class FixedClock:
    def now_ms(self) -> int:
        return 1_767_225_700_000


def memory_tracing() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(TracingConfig(), provider), exporter


def test_no_endpoint_means_no_provider() -> None:
    assert tracer_provider(TracingConfig()) is None
    assert not Tracing(TracingConfig()).enabled


def test_exporter_follows_the_url() -> None:
    assert is_otlp("http://collector:4318/v1/traces")
    assert not is_otlp("http://tracing.aliyuncs.com/adapt_xxx/api/v2/spans")
    otlp, zipkin = make_exporter("http://127.0.0.1:1/v1/traces"), make_exporter("http://127.0.0.1:1/api/v2/spans")
    assert type(getattr(otlp, "inner", None)).__name__ == "OTLPSpanExporter"
    assert type(getattr(zipkin, "inner", None)).__name__ == "ZipkinExporter"


def test_traceparent_round_trip() -> None:
    tracing, _ = memory_tracing()
    with tracing.span("outer") as span:
        carrier = current_traceparent()
    context = span.get_span_context()
    assert carrier["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    parent = context_from(carrier["traceparent"])
    assert parent is not None
    assert trace.get_current_span(parent).get_span_context().span_id == context.span_id
    assert context_from("garbage") is None and context_from(None) is None


def test_fc_kafka_trigger_records_continue_their_traces() -> None:
    tracing, exporter = memory_tracing()
    events = decode_fc_event(raw("eventbridge_kafka_batch.json"))
    handle(events, MemoryResultStore(), FixedClock(), ProcessConfig(), tracing)
    process_spans = [s for s in exporter.get_finished_spans() if s.name == "process"]
    assert len(process_spans) == 2
    for span in process_spans:
        assert span.parent is not None
        assert f"{span.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
        assert span.attributes is not None and span.attributes["barrage.outcome"] == "stored"


def test_untraced_events_start_new_traces() -> None:
    tracing, exporter = memory_tracing()
    events = decode_fc_event(raw("direct_invoke_list.json"))
    handle(events, MemoryResultStore(), FixedClock(), ProcessConfig(), tracing)
    spans = [s for s in exporter.get_finished_spans() if s.name == "process"]
    assert len(spans) == 2 and all(s.parent is None for s in spans)
    batch = [s for s in exporter.get_finished_spans() if s.name == "process batch"]
    assert len(batch) == 1 and len(batch[0].links) == 1


def test_tracing_off_makes_no_spans_but_carries_a_callers_context() -> None:
    tracing = Tracing(TracingConfig())
    caller = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    with tracing.span("request", parent=context_from(caller)) as outer, tracing.span("inner") as inner:
        assert not outer.is_recording() and not inner.is_recording()
        # What the Kafka adapter stamps on the record: the caller's trace goes on.
        assert current_traceparent()["traceparent"].startswith("00-" + "a" * 32)
    assert current_traceparent() == {}
    with tracing.span("alone") as span:
        assert not span.get_span_context().is_valid and current_traceparent() == {}
