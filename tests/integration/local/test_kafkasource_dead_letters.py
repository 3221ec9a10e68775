"""The dispatcher's mapping and dead letters as eventing-kafka-broker's KafkaSource behaves,
against the real broker and real HTTP sinks (PLATFORM.md section 5)."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from functions.kafka import KafkaSettings
from local.broker import LocalBroker
from local.kafkasource.dispatcher import DispatchOptions
from local.kafkasource.manifest import load_manifest
from local.kafkasource.run import KafkaDeadLetterProducer
from local.supervisor import free_port
from tests.integration.local.dispatch_support import (
    Answer,
    committed_offsets,
    ends_of,
    produce_records,
    read_topic,
    running_dispatcher,
    running_sink,
    write_manifest,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
YEAR_10000_MS = 253_402_300_800_000  # past what an RFC 3339 time can say


def produce(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> int:
    """Each record into partition 0, in order; the offset after the last."""
    (end,) = ends_of(produce_records(bootstrap, topic, [{"partition": 0, **r} for r in records]), 1)
    return end


def reached(bootstrap: str, group: str, topic: str, end: int) -> bool:
    return committed_offsets(bootstrap, group, topic, 1) == [end]


def test_records_map_as_ekb_maps_them(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    topic = kafka_broker.new_topic(partitions=1, prefix="ekb-map")
    structured = {"specversion": "1.0", "id": "s-1", "type": "barrage.sent", "source": "/homepage",
                  "datacontenttype": "application/json", "data": {"text": "hi"}}
    end = produce(kafka_broker.bootstrap, topic, [
        {"key": struct.pack(">i", 42), "value": b'{"n":0}'},
        {"key": b"\x00\x07", "value": b'{"n":1}'},  # with --key-type int this used to stall the partition
        {"key": struct.pack(">q", 7), "value": b'{"n":2}'},  # 8 bytes: EKB's int is 4, so a string
        {"key": b"", "value": b'{"n":3}'},
        {"key": None, "value": b'{"n":4}'},
        {"value": json.dumps(structured).encode(), "headers": [("content-type", b"application/cloudevents+json")]},
        {"key": b"k", "value": None},  # a tombstone that is no CloudEvent: unmappable
        {"key": b"k", "value": b'{"n":7}', "timestamp": YEAR_10000_MS},  # unmappable time
        {"key": b"k", "value": b"reject"},
    ])

    def answer(headers: dict[str, str], body: bytes) -> Answer:
        if body == b"reject":
            return 422, [("kne-testerror", "hello"), ("content-type", "text/plain")], b"bad bad things"
        return 202, [], b""

    group = f"g-{topic}"
    with running_sink(answer) as sink, running_sink() as dead_letters:
        manifest = write_manifest(tmp_path / "source.yaml", topic, group, retry=1, dead_letter_uri=dead_letters.url,
                                  key_type="int")
        with running_dispatcher(kafka_broker.bootstrap, load_manifest(manifest),
                                DispatchOptions(sink_url=sink.url, dead_letter_url=dead_letters.url)) as dispatcher:
            wait_for(lambda: len(dead_letters.received()) >= 3 and reached(kafka_broker.bootstrap, group, topic, end),
                     45, "every record delivered or dead-lettered and committed")
        received = {int(h["ce-knativekafkaoffset"]): (h, body) for h, body in sink.received()}
        dead = {int(h["ce-knativekafkaoffset"]): (h, body) for h, body in dead_letters.received()}
    assert set(received) == {0, 1, 2, 3, 4, 5, 8} and set(dead) == {6, 7, 8}
    assert dispatcher.stats.unmappable == 2 and dispatcher.stats.dead_lettered == 3 and dispatcher.stats.dropped == 0
    keys = {offset: received[offset][0].get("ce-key") for offset in range(5)}
    assert keys == {0: "42", 1: "%00%07", 2: "%00%00%00%00%00%00%00%07", 3: None, 4: None}
    assert received[0][0]["ce-partitionkey"] == "42" and received[0][0]["ce-id"] == "partition:0/offset:0"
    # The structured record is re-sent in binary mode with its own attributes.
    headers, body = received[5]
    assert headers["ce-id"] == "s-1" and headers["ce-source"] == "/homepage"
    assert headers["content-type"] == "application/json" and json.loads(body) == {"text": "hi"}
    # Unmappable records: the plain wrapper, the reason as error data, no code (nothing answered).
    for offset, reason in ((6, b"no value"), (7, b"outside years")):
        headers, _ = dead[offset]
        assert headers["ce-type"] == "dev.knative.kafka.event" and "ce-knativeerrorcode" not in headers
        assert reason in base64.b64decode(headers["ce-knativeerrordata"])
        assert headers["ce-knativeerrordest"] == sink.url
    # A sink's answer: its code, its body and its kne-* headers; no invented reason.
    headers, body = dead[8]
    assert headers["ce-knativeerrorcode"] == "422" and headers["ce-testerror"] == "hello"
    assert base64.b64decode(headers["ce-knativeerrordata"]) == b"bad bad things" and body == b"reject"
    assert not any(name.startswith("ce-knativeerrorreason") for name in headers)


def test_transport_errors_carry_only_the_destination(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    topic = kafka_broker.new_topic(partitions=1, prefix="ekb-refused")
    end = produce(kafka_broker.bootstrap, topic, [{"key": b"k", "value": b'{"n":0}'}])
    refused = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    group = f"g-{topic}"
    with running_sink() as dead_letters:
        manifest = write_manifest(tmp_path / "source.yaml", topic, group, retry=2, dead_letter_uri=dead_letters.url)
        with running_dispatcher(kafka_broker.bootstrap, load_manifest(manifest),
                                DispatchOptions(sink_url=refused, dead_letter_url=dead_letters.url)) as dispatcher:
            wait_for(lambda: dead_letters.received() and reached(kafka_broker.bootstrap, group, topic, end),
                     45, "the dead letter")
    ((headers, body),) = dead_letters.received()
    assert headers["ce-knativeerrordest"] == refused and body == b'{"n":0}'
    assert not any(name in headers for name in ("ce-knativeerrorcode", "ce-knativeerrordata"))
    assert dispatcher.stats.retries == 2  # the delivery's retry policy, then the dead letter


@pytest.mark.parametrize("dead_letter_sink", ["failing", "none"])
def test_a_record_the_dead_letter_sink_will_not_take_is_dropped_and_committed(
    kafka_broker: LocalBroker, tmp_path: Path, dead_letter_sink: str
) -> None:
    topic = kafka_broker.new_topic(partitions=1, prefix="ekb-drop")
    end = produce(kafka_broker.bootstrap, topic, [{"value": b"reject"}, {"value": b"reject"}, {"value": b'{"n":2}'}])

    def answer(_headers: dict[str, str], body: bytes) -> Answer:
        return (400, [], b"no") if body == b"reject" else (202, [], b"")

    group = f"g-{topic}"
    with running_sink(answer) as sink, running_sink(lambda _h, _b: (503, [], b"down")) as dead_letters:
        dls = dead_letters.url if dead_letter_sink == "failing" else None
        manifest = write_manifest(tmp_path / "source.yaml", topic, group, retry=2, dead_letter_uri=dls)
        with running_dispatcher(kafka_broker.bootstrap, load_manifest(manifest),
                                DispatchOptions(sink_url=sink.url, dead_letter_url=dls)) as dispatcher:
            wait_for(lambda: reached(kafka_broker.bootstrap, group, topic, end), 45, "the offsets to reach the end")
        assert sink.positions() == {(0, 0), (0, 1), (0, 2)}  # the partition moved on after each drop
        assert dispatcher.stats.dropped == 2 and dispatcher.stats.dead_lettered == 0
        assert dispatcher.stats.delivered == 1
        # The dead-letter sink had the delivery's policy: 1 + 2 retries for each record.
        assert len(dead_letters.received()) == (6 if dls else 0)


def test_dead_letter_topic_gets_unmappable_records_with_the_reason(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    topic = kafka_broker.new_topic(partitions=1, prefix="ekb-dlq")
    kafka_broker.create_topics([f"{topic}.dlq"], partitions=3)
    end = produce(kafka_broker.bootstrap, topic, [{"key": b"k", "value": None, "headers": [("origin", b"test")]},
                                            {"key": b"k", "value": b'{"n":1}'}])
    group = f"g-{topic}"
    dead_letters = KafkaDeadLetterProducer(KafkaSettings(servers=(kafka_broker.bootstrap,), topic=topic))
    with running_sink() as sink:
        manifest = write_manifest(tmp_path / "source.yaml", topic, group, retry=1)
        options = DispatchOptions(sink_url=sink.url, dead_letter_topic=f"{topic}.dlq")
        with running_dispatcher(kafka_broker.bootstrap, load_manifest(manifest), options, dead_letters):
            wait_for(lambda: reached(kafka_broker.bootstrap, group, topic, end), 45, "the offsets to reach the end")
        dead_letters.close()
        assert sink.positions() == {(0, 1)}
    ((headers, value),) = read_topic(kafka_broker.bootstrap, f"{topic}.dlq", 1)
    assert value == b"" and headers["origin"] == b"test"  # the original record
    assert b"no value" in base64.b64decode(headers["knativeerrordata"])
    assert headers["knativekafkapartition"] == b"0" and headers["knativekafkaoffset"] == b"0"
    assert "knativeerrorcode" not in headers
