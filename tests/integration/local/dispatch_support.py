"""Shared pieces of the dispatcher tests: a real HTTP processor, topics, manifests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition

from functions.adapters.kafka import KafkaPublisher, KafkaSettings
from functions.adapters.memory import MemoryPublisher
from functions.adapters.sqlite import SQLiteResultStore
from functions.app import App
from functions.bindings.cloudevents_http import sink_app
from functions.config import Settings
from functions.processor import process_records
from functions.wiring import Services, process_config
from handlers.model import Barrage, new_id
from handlers.ports import SystemClock
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


def write_manifest(path: Path, topic: str, group: str, ordering: str = "ordered", retry: int = 5) -> Path:
    document = {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "KafkaSource",
        "metadata": {"name": "barrage-source", "namespace": "default"},
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
    path.write_text(yaml.safe_dump(document))
    return path
