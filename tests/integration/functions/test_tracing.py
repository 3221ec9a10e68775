"""One barrage, one trace: through Kafka, the dispatcher and the processor; export to a collector."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.testclient import TestClient

from functions.adapters.kafka import publisher_from_config
from functions.adapters.memory import MemoryResultStore
from functions.adapters.sqlite import SQLiteResultStore
from functions.adapters.tracing import Tracing, TracingPublisher, TracingStore, current_traceparent, from_config
from functions.app import App
from functions.bindings.cloudevents_http import sink_app
from functions.config import KafkaConfig, Settings, TracingConfig
from functions.homepage import create_app
from functions.kafka import KafkaSettings
from functions.processor import handle, process_records
from functions.wiring import Services, process_config
from handlers.ports import SystemClock
from handlers.process import ProcessConfig
from local.broker import LocalBroker
from local.kafkasource.dispatcher import DispatchOptions
from local.kafkasource.manifest import load_manifest
from local.kafkasource.run import run_dispatchers
from tests.asgi_server import serving
from tests.golden import raw
from tests.integration.local.dispatch_support import write_manifest
from tests.unit.functions.decoding import decode_fc_event
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def memory_tracing(service: str) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(TracingConfig(service_name=service), provider), exporter


def by_name(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    matching = [s for s in spans if s.name == name]
    assert len(matching) == 1, [s.name for s in spans]
    return matching[0]


def assert_child(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.parent is not None, f"{child.name} has no parent"
    assert child.context.trace_id == parent.context.trace_id, f"{child.name} is in another trace"
    assert child.parent.span_id == parent.context.span_id, f"{child.name} is not a child of {parent.name}"


@pytest.mark.parametrize("batch_size", [0, 20])
def test_a_barrage_is_one_trace_from_send_to_store(kafka_broker: LocalBroker, tmp_path: Path, batch_size: int) -> None:
    topic = kafka_broker.new_topic(partitions=3, prefix="trace")
    # Three services, three tracers, as in three processes.
    sender, sender_spans = memory_tracing("barrage-homepage")
    dispatcher, dispatcher_spans = memory_tracing("barrage-dispatcher")
    processor, processor_spans = memory_tracing("barrage-processor")

    kafka = publisher_from_config(
        KafkaConfig((kafka_broker.bootstrap,), topic), extensions=lambda _b: current_traceparent()
    )
    publisher = TracingPublisher(kafka, sender, topic)
    homepage_settings = Settings.from_environ({"KAFKA_SERVER": kafka_broker.bootstrap, "KAFKA_TOPIC": topic})
    homepage_store = TracingStore(MemoryResultStore(), sender)
    homepage_app = create_app(
        Services(
            homepage_settings,
            homepage_store,
            publisher,
            SystemClock(),
            process_config(homepage_settings),
            tracing=sender,
        )
    )
    with TestClient(homepage_app) as homepage:
        response = homepage.post("/api/barrages", json={"room": "traced", "user": "u1", "text": "follow me"})
        assert response.status_code == 202, response.json()
        (accepted,) = response.json()["accepted"]
        assert homepage.get("/api/barrages?room=traced").status_code == 200
    kafka.close()

    settings = Settings.from_environ({})
    store = TracingStore(SQLiteResultStore(tmp_path / "store.db"), processor)
    services = Services(settings, store, publisher, SystemClock(), process_config(settings), tracing=processor)
    app: App[Services] = App("traced", module=__name__, dependencies=lambda _e, _k: services, environ={})
    sink = sink_app(app.event("processor", batch=True)(process_records), concurrency=0)
    with serving(sink) as base:
        manifest = write_manifest(tmp_path / "source.yaml", topic, f"g-{topic}")
        spec = load_manifest(manifest).with_bootstrap((kafka_broker.bootstrap,))
        options = DispatchOptions(sink_url=f"{base}/", batch_size=batch_size)
        until = threading.Event()
        thread = threading.Thread(
            target=run_dispatchers,
            args=(spec, options, KafkaSettings((kafka_broker.bootstrap,), topic), until, dispatcher),
        )
        thread.start()
        try:
            wait_for(lambda: store.count() == 1, 30, "the barrage to be stored")
        finally:
            until.set()
            thread.join(30)

    root = by_name(sender_spans.get_finished_spans(), "barrage-sender")
    send_span = by_name(sender_spans.get_finished_spans(), "sender")
    publish = by_name(sender_spans.get_finished_spans(), f"publish {topic}")
    deliver = by_name(dispatcher_spans.get_finished_spans(), f"deliver {topic}")
    process = by_name(processor_spans.get_finished_spans(), "process")
    store_span = by_name(processor_spans.get_finished_spans(), "store")
    assert_child(send_span, root)
    assert_child(publish, send_span)
    assert_child(deliver, publish)
    assert_child(process, deliver)
    assert_child(store_span, process)
    assert process.attributes is not None and process.attributes["barrage.id"] == accepted["id"]
    result_span = by_name(sender_spans.get_finished_spans(), "result")
    assert result_span.parent is None and result_span.attributes is not None


class Collector:
    def __init__(self) -> None:
        self.posts: list[tuple[str, str, Any]] = []
        self.event = threading.Event()


@pytest.fixture
def collector() -> Iterator[tuple[str, Collector]]:
    received = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received.posts.append((self.path, self.headers.get("content-type", ""), json.loads(body)))
            received.event.set()
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v2/spans", received
    finally:
        server.shutdown()


def test_spans_reach_a_zipkin_collector_as_v2_json(collector: tuple[str, Collector]) -> None:
    url, received = collector
    tracing = from_config(TracingConfig(endpoint=url, service_name="barrage-processor"))
    events = decode_fc_event(raw("eventbridge_kafka_batch.json"))
    handle(events, TracingStore(MemoryResultStore(), tracing), SystemClock(), ProcessConfig(), tracing)
    assert tracing.provider is not None
    assert tracing.provider.force_flush(5000)
    assert received.event.wait(5)
    spans = [span for _, _, body in received.posts for span in body]
    path, content_type, _ = received.posts[0]
    assert path == "/api/v2/spans" and content_type.startswith("application/json")
    names = {span["name"] for span in spans}
    assert {"process", "store", "process batch"} <= names
    for span in spans:
        assert len(span["traceId"]) == 32 and len(span["id"]) == 16
        assert span["localEndpoint"]["serviceName"] == "barrage-processor"
        assert isinstance(span["timestamp"], int) and isinstance(span["duration"], int)
    process = [s for s in spans if s["name"] == "process"]
    assert {s["traceId"] for s in process} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
    assert {s["parentId"] for s in process} == {"00f067aa0ba902b7"}
    tracing.shutdown()


def test_a_collector_that_is_down_fails_nothing() -> None:
    from local.supervisor import free_port

    url = f"http://127.0.0.1:{free_port()}/api/v2/spans"  # nothing listens there
    tracing = from_config(TracingConfig(endpoint=url, service_name="barrage-processor"))
    store = TracingStore(MemoryResultStore(), tracing)
    for _ in range(20):
        events = decode_fc_event(raw("direct_invoke_list.json"))
        outcomes = handle(events, store, SystemClock(), ProcessConfig(), tracing)
        assert {o.status.value for o in outcomes} <= {"stored", "duplicate"}
    assert tracing.provider is not None
    tracing.provider.force_flush(3000)  # an export that fails is dropped, not raised
    tracing.shutdown()
