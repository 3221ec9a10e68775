"""The dispatcher against the real broker and a real HTTP processor."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from functions.kafka import KafkaSettings
from local.broker import LocalBroker
from local.kafkasource.dispatcher import DispatchOptions
from local.kafkasource.manifest import load_manifest
from local.kafkasource.run import run_dispatchers
from tests.integration.local.dispatch_support import (
    Processor,
    make_barrages,
    offsets_by_id,
    publish,
    read_topic,
    running_processor,
    write_manifest,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


@contextmanager
def dispatching(broker: LocalBroker, manifest: Path, options: DispatchOptions) -> Iterator[None]:
    spec = load_manifest(manifest).with_bootstrap((broker.bootstrap,))
    settings = KafkaSettings(servers=(broker.bootstrap,), topic=spec.topics[0])
    until = threading.Event()
    thread = threading.Thread(target=run_dispatchers, args=(spec, options, settings, until), daemon=True)
    thread.start()
    try:
        yield
    finally:
        until.set()
        thread.join(30)
        assert not thread.is_alive(), "dispatcher did not stop"


def stored_ids(processor: Processor) -> list[str]:
    rows = processor.store._connection().execute("SELECT id FROM barrages").fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize("ordering", ["ordered", "unordered"])
def test_every_barrage_arrives_exactly_once(kafka_broker: LocalBroker, tmp_path: Path, ordering: str) -> None:
    topic = kafka_broker.new_topic(partitions=3, prefix="dispatch")
    barrages = make_barrages(3000)
    publish(kafka_broker.bootstrap, topic, barrages)
    positions = offsets_by_id(kafka_broker.bootstrap, topic, 3, len(barrages))
    assert len(positions) == 3000
    manifest = write_manifest(tmp_path / "source.yaml", topic, f"g-{topic}", ordering)
    with running_processor(tmp_path / "store.db") as processor:
        with dispatching(kafka_broker, manifest, DispatchOptions(sink_url=processor.url)):
            wait_for(lambda: processor.store.count() >= 3000, 90, "3000 stored barrages")
        ids = stored_ids(processor)
        assert len(ids) == 3000 and set(ids) == {b.id for b in barrages}
        if ordering == "ordered":
            last: dict[int, int] = {}
            for event_id in processor.recorder.arrivals:
                partition, offset = positions[event_id]
                assert offset > last.get(partition, -1), f"partition {partition} out of order at {offset}"
                last[partition] = offset
            assert len(last) == 3


def test_transient_503s_are_retried_and_nothing_is_lost(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    topic = kafka_broker.new_topic(partitions=3, prefix="retry")
    barrages = make_barrages(300)
    publish(kafka_broker.bootstrap, topic, barrages)
    manifest = write_manifest(tmp_path / "source.yaml", topic, f"g-{topic}", "unordered", retry=5)
    with running_processor(tmp_path / "store.db", fail_first=2) as processor:
        with dispatching(kafka_broker, manifest, DispatchOptions(sink_url=processor.url)):
            wait_for(lambda: processor.store.count() >= 300, 60, "300 stored barrages")
        assert sorted(stored_ids(processor)) == sorted(b.id for b in barrages)
        assert all(processor.recorder.attempts[b.id] == 3 for b in barrages)


@pytest.mark.parametrize("batch_size", [0, 50])
def test_poison_record_goes_to_the_dlq_with_its_reason(
    kafka_broker: LocalBroker, tmp_path: Path, batch_size: int
) -> None:
    from confluent_kafka import Producer

    topic = kafka_broker.new_topic(partitions=3, prefix="poison")
    kafka_broker.create_topics([f"{topic}.dlq"], partitions=3)
    good = make_barrages(200)
    publish(kafka_broker.bootstrap, topic, good[:100])
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    producer.produce(
        topic, key=b"room-1", value=b'{"this": "is not a barrage"}', headers=[("content-type", b"application/json")]
    )
    assert producer.flush(10) == 0
    publish(kafka_broker.bootstrap, topic, good[100:])
    manifest = write_manifest(tmp_path / "source.yaml", topic, f"g-{topic}", "ordered", retry=2)
    with running_processor(tmp_path / "store.db") as processor:
        options = DispatchOptions(sink_url=processor.url, dead_letter_topic=f"{topic}.dlq", batch_size=batch_size)
        with dispatching(kafka_broker, manifest, options):
            wait_for(lambda: processor.store.count() >= 200, 60, "200 stored barrages")
            dead = read_topic(kafka_broker.bootstrap, f"{topic}.dlq", 1)
        assert sorted(stored_ids(processor)) == sorted(b.id for b in good)
        processor_url = processor.url
    assert len(dead) == 1
    headers, value = dead[0]
    assert value == b'{"this": "is not a barrage"}'  # the original record, with EKB's dead-letter extensions
    assert headers["knativeerrorcode"] == b"400"
    reply = base64.b64decode(headers["knativeerrordata"])
    assert b"sent_at: is required" in reply or b"id: is required" in reply
    assert headers["knativeerrordest"] == processor_url.encode()
    assert {"knativekafkapartition", "knativekafkaoffset"} <= set(headers)
    assert "knativeerrorreason" not in headers


def test_dead_letter_sink_url_receives_the_event(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    topic = kafka_broker.new_topic(partitions=3, prefix="dls")
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    producer.produce(topic, key=b"k", value=b"garbage", headers=[("content-type", b"text/plain")])
    assert producer.flush(10) == 0
    manifest = write_manifest(tmp_path / "source.yaml", topic, f"g-{topic}", "ordered", retry=1)
    with running_processor(tmp_path / "store.db") as processor, running_processor(tmp_path / "dls.db") as dls:
        # The dead-letter sink here is a second recorder; it answers 400 (not a barrage) but records headers.
        received: list[dict[str, str]] = []
        original = dls.recorder.app

        async def capture(scope, receive, send):
            received.append({"HTTP_" + k.decode().upper().replace("-", "_"): v.decode()
                             for k, v in scope["headers"] if k.startswith(b"ce-")})
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        dls.recorder.app = capture
        options = DispatchOptions(sink_url=processor.url, dead_letter_url=dls.url)
        with dispatching(kafka_broker, manifest, options):
            wait_for(lambda: len(received) >= 1, 30, "a dead letter")
        dls.recorder.app = original
    (headers,) = received
    assert headers["HTTP_CE_KNATIVEERRORCODE"] == "400"
    assert headers["HTTP_CE_KNATIVEERRORDEST"] == processor.url
    assert headers["HTTP_CE_TYPE"] == "dev.knative.kafka.event"
    assert b"not JSON" in base64.b64decode(headers["HTTP_CE_KNATIVEERRORDATA"])  # the processor's 400 reply
    assert headers["HTTP_CE_KNATIVEKAFKAOFFSET"] == "0"
    assert "HTTP_CE_KNATIVEERRORREASON" not in headers


def test_batch_delivery_exactly_once(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    topic = kafka_broker.new_topic(partitions=3, prefix="batch")
    barrages = make_barrages(3000)
    publish(kafka_broker.bootstrap, topic, barrages)
    manifest = write_manifest(tmp_path / "source.yaml", topic, f"g-{topic}", "ordered")
    with running_processor(tmp_path / "store.db") as processor:
        with dispatching(kafka_broker, manifest, DispatchOptions(sink_url=processor.url, batch_size=100)):
            wait_for(lambda: processor.store.count() >= 3000, 60, "3000 stored barrages")
        assert sorted(stored_ids(processor)) == sorted(b.id for b in barrages)


def start_dispatch_process(broker: LocalBroker, manifest: Path, sink: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.cli",
            "dispatch",
            "--manifest",
            str(manifest),
            "--sink",
            sink,
            "--bootstrap",
            broker.bootstrap,
        ],
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_sigkill_mid_stream_then_restart_stores_everything_once(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    topic = kafka_broker.new_topic(partitions=3, prefix="kill")
    barrages = make_barrages(3000)
    publish(kafka_broker.bootstrap, topic, barrages)
    manifest = write_manifest(tmp_path / "source.yaml", topic, f"g-{topic}", "ordered")
    log = tmp_path / "dispatch.log"
    with running_processor(tmp_path / "store.db") as processor:
        first = start_dispatch_process(kafka_broker, manifest, processor.url, log)
        try:
            wait_for(lambda: processor.store.count() >= 600, 60, "the first 600 barrages")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        killed_at = processor.store.count()
        assert killed_at < 3000, "the dispatcher finished before it could be killed"
        second = start_dispatch_process(kafka_broker, manifest, processor.url, log)
        try:
            wait_for(lambda: processor.store.count() >= 3000, 90, "all 3000 after the restart")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        ids = stored_ids(processor)
        assert len(ids) == 3000 == len(set(ids))
        assert set(ids) == {b.id for b in barrages}
        # Redelivery after the kill shows as duplicates at the processor, never as a second row.
        print(json.dumps({"killed_at": killed_at, "stored": len(ids)}))


def test_graceful_stop_commits_what_was_delivered(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    topic = kafka_broker.new_topic(partitions=3, prefix="drain")
    barrages = make_barrages(500)
    publish(kafka_broker.bootstrap, topic, barrages)
    manifest = write_manifest(tmp_path / "source.yaml", topic, f"g-{topic}", "unordered")
    with running_processor(tmp_path / "store.db") as processor:
        with dispatching(kafka_broker, manifest, DispatchOptions(sink_url=processor.url)):
            wait_for(lambda: processor.store.count() >= 500, 60, "500 stored")
        attempts_before = sum(processor.recorder.attempts.values())
        # A second run of the same group finds everything committed: nothing is delivered again.
        with dispatching(kafka_broker, manifest, DispatchOptions(sink_url=processor.url)):
            time.sleep(5)  # the group join takes ~3 s; give it time to (not) deliver
        assert sum(processor.recorder.attempts.values()) == attempts_before
