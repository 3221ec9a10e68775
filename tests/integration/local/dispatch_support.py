"""Shared pieces of the dispatcher tests: a real HTTP processor, topics, manifests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from werkzeug.serving import BaseWSGIServer, make_server

from functions.adapters.kafka import KafkaPublisher
from functions.adapters.memory import MemoryPublisher
from functions.adapters.sqlite import SQLiteResultStore
from functions.app import App
from functions.bindings.cloudevents_http import sink_app
from functions.config import Settings
from functions.kafka import KafkaSettings
from functions.processor import process_records
from functions.wiring import Services, process_config
from handlers.model import Barrage, new_id
from handlers.ports import SystemClock
from local.kafkasource.dispatcher import DeadLetterProducer, Dispatcher, DispatchOptions
from local.kafkasource.manifest import KafkaSourceSpec
from local.kafkasource.run import kafka_consumer_factory
from tests.asgi_server import serving

BASE_MS = 1_767_225_600_000


@dataclass
class Recorder:
    """ASGI middleware: records deliveries, and can fail chosen attempts (503) for tests."""

    app: Any
    fail_first: int = 0  # answer 503 to the first N attempts of each event
    arrivals: list[str] = field(default_factory=list)  # event ids of successful deliveries, in order
    attempts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        event_id = next((v.decode() for k, v in scope["headers"] if k == b"ce-id"), "")
        with self.lock:
            seen = self.attempts.get(event_id, 0)
            self.attempts[event_id] = seen + 1
        if event_id and seen < self.fail_first:
            body = b'{"error": {"status": 503, "message": "injected"}}'
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        statuses: list[int] = []

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, recording_send)
        if statuses and 200 <= statuses[0] < 300 and event_id:
            with self.lock:
                self.arrivals.append(event_id)


@dataclass
class Processor:
    url: str
    store: SQLiteResultStore
    recorder: Recorder


@contextmanager
def running_processor(db: Path, fail_first: int = 0) -> Iterator[Processor]:
    """Barrage's processor function as a real HTTP CloudEvents sink (uvicorn), on a SQLite file."""
    settings = Settings.from_environ({})
    store = SQLiteResultStore(db)
    services = Services(settings, store, MemoryPublisher(), SystemClock(), process_config(settings))
    app: App[Services] = App("processor-under-test", module=__name__, dependencies=lambda _env, _keys: services,
                             environ={})
    function = app.event("processor", batch=True)(process_records)
    recorder = Recorder(sink_app(function, concurrency=0), fail_first=fail_first)
    with serving(recorder) as base:
        yield Processor(f"{base}/", store, recorder)
    store.close()


def make_barrages(count: int, rooms: int = 30) -> list[Barrage]:
    return [
        Barrage(new_id(BASE_MS + i), f"room-{i % rooms}", f"user-{i % 7}", f"barrage number {i}", BASE_MS + i)
        for i in range(count)
    ]


def publish(bootstrap: str, topic: str, barrages: list[Barrage]) -> None:
    with KafkaPublisher(KafkaSettings(servers=(bootstrap,), topic=topic)) as publisher:
        for start in range(0, len(barrages), 500):
            publisher.publish_many(barrages[start : start + 500])


def header_map(message: Any) -> dict[str, bytes]:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {str(k): v.encode() if isinstance(v, str) else bytes(v or b"") for k, v in pairs}


def offsets_by_id(bootstrap: str, topic: str, partitions: int, expected: int) -> dict[str, tuple[int, int]]:
    """Read the topic directly: barrage id (the CloudEvent id header) -> (partition, offset)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    found: dict[str, tuple[int, int]] = {}
    deadline = time.monotonic() + 30
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error():
                    continue
                found[header_map(message)["ce_id"].decode()] = (message.partition() or 0, message.offset() or 0)
    finally:
        consumer.close()
    return found


def write_manifest(
    path: Path, topic: str, group: str, ordering: str = "ordered", retry: int = 5, *,
    dead_letter_uri: str | None = None, key_type: str | None = None,
) -> Path:
    metadata: dict[str, Any] = {"name": "barrage-source", "namespace": "default"}
    if key_type is not None:
        metadata["labels"] = {"kafkasources.sources.knative.dev/key-type": key_type}
    document: dict[str, Any] = {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "KafkaSource",
        "metadata": metadata,
        "spec": {
            "consumerGroup": group,
            "bootstrapServers": ["ignored:9092"],
            "topics": [topic],
            "initialOffset": "earliest",
            "ordering": ordering,
            "delivery": {"retry": retry, "backoffPolicy": "linear", "backoffDelay": "PT0.01S", "timeout": "PT10S"},
            "sink": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "barrage-process"}},
        },
    }
    if dead_letter_uri is not None:
        document["spec"]["delivery"]["deadLetterSink"] = {"uri": dead_letter_uri}
    path.write_text(yaml.safe_dump(document))
    return path


Answer = tuple[int, list[tuple[str, str]], bytes]


@dataclass
class Sink:
    """A recording HTTP sink: every request's headers (lower-case names) and body, and its answer."""

    url: str
    requests: list[tuple[dict[str, str], bytes]]
    lock: threading.Lock

    def received(self) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return list(self.requests)

    def positions(self) -> set[tuple[int, int]]:
        """(partition, offset) of every event received, from the knativekafka* extensions."""
        return {(int(h["ce-knativekafkapartition"]), int(h["ce-knativekafkaoffset"])) for h, _ in self.received()}


@contextmanager
def running_sink(answer: Callable[[dict[str, str], bytes], Answer] | None = None) -> Iterator[Sink]:
    """A sink on 127.0.0.1 answering ``answer(headers, body)`` (default 202, no body)."""
    requests: list[tuple[dict[str, str], bytes]] = []
    lock = threading.Lock()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = {key[5:].lower().replace("_", "-"): str(value) for key, value in environ.items()
                   if key.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        status, reply_headers, reply = answer(headers, body) if answer else (202, [], b"")
        with lock:
            requests.append((headers, body))
        start_response(f"{status} X", reply_headers)
        return [reply]

    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Sink(f"http://127.0.0.1:{server.server_port}/", requests, lock)
    finally:
        server.shutdown()
        thread.join(5)


@contextmanager
def running_dispatcher(
    bootstrap: str, spec: KafkaSourceSpec, options: DispatchOptions,
    dead_letter_producer: DeadLetterProducer | None = None,
) -> Iterator[Dispatcher]:
    """One Dispatcher of ``spec``'s group on the real broker, until the block ends."""
    spec = spec.with_bootstrap((bootstrap,))
    settings = KafkaSettings(servers=(bootstrap,), topic=spec.topics[0])
    dispatcher = Dispatcher(spec, options, kafka_consumer_factory(spec, settings), dead_letter_producer)
    until = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(until,), daemon=True)
    thread.start()
    try:
        yield dispatcher
    finally:
        until.set()
        thread.join(30)
        assert not thread.is_alive(), "dispatcher did not stop"


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    """The group's committed next-offset per partition (0 where nothing is committed)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return [max(c.offset, 0) for c in committed]


def produce_records(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Produce ``records`` (keyword arguments of ``Producer.produce``) in order; their (partition, offset).

    The positions come from the delivery reports: Tansu's high watermark lags after a batch of
    several records, so the end of a partition is taken from what was written, not from the broker.
    """
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    positions: list[tuple[int, int] | None] = [None] * len(records)

    def report(index: int) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, message: Any) -> None:
            if err is None:
                positions[index] = (message.partition(), message.offset())
        return on_delivery

    for index, record in enumerate(records):
        producer.produce(topic, on_delivery=report(index), **record)
    assert producer.flush(15) == 0
    assert all(p is not None for p in positions), "a record was not acknowledged"
    return [p for p in positions if p is not None]


def ends_of(positions: Iterable[tuple[int, int]], partitions: int) -> list[int]:
    """Per partition, the offset after the last of ``positions`` (0 where there is none)."""
    ends = [0] * partitions
    for partition, offset in positions:
        ends[partition] = max(ends[partition], offset + 1)
    return ends


Delivered = tuple[dict[str, bytes], bytes]


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 20) -> list[Delivered]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"dlq-{topic}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    found: list[Delivered] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                if not message.error():
                    found.append((header_map(message), message.value() or b""))
    finally:
        consumer.close()
    return found
