"""EventBridge batches (the FC Kafka trigger) as records, with the golden payloads in tests/events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from functions.bindings import InvalidInvocation, parse_payload
from functions.bindings.fc_event import EventBridgeBatch, RetryBatch, answer
from functions.fc import context_from_headers
from functions.records import BatchReport, Record, Undecodable, ok, reject, retry

EVENTS = Path(__file__).resolve().parents[3] / "events"
CONTEXT = context_from_headers({"x-fc-request-id": "req-1"})


def golden(name: str) -> Any:
    return parse_payload((EVENTS / name).read_bytes())


def records(name: str) -> list[Any]:
    event = golden(name)
    assert EventBridgeBatch.infer(event, CONTEXT)
    return EventBridgeBatch.records(event, CONTEXT)


def test_binary_cloudevent_records_are_their_own_events() -> None:
    first = records("eventbridge_kafka_batch.json")[0]
    assert isinstance(first, Record)
    assert (first.id, first.type, first.source) == ("01JQ0000000000000000000001", "barrage.sent", "/barrage/homepage")
    assert first.traceparent == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert first.json()["room"] == "room-1"


def test_json_string_elements_are_the_same_records() -> None:
    assert records("eventbridge_kafka_batch_strings.json") == records("eventbridge_kafka_batch.json")[:2]


def test_plain_records_look_as_a_kafkasource_shows_them() -> None:
    plain = records("fc_kafka_batch.json")[0]
    assert isinstance(plain, Record)
    assert plain.id == "8e215af8-ca18-4249-8645-f96c1026e001" and plain.type == "alikafka:Topic:Message"
    assert plain.extensions["key"] == plain.extensions["partitionkey"] == "room-1"
    assert (plain.extensions["knativekafkapartition"], plain.extensions["knativekafkaoffset"]) == ("7", "25")
    assert plain.json()["text"] == "hello from kafka"


def test_rawdata_records_have_ids_from_partition_and_offset() -> None:
    raw = records("fc_kafka_rawdata.json")[0]
    assert isinstance(raw, Record)
    assert raw.id == "partition:7/offset:29" and raw.subject == "partition:7#29"


@pytest.mark.parametrize("name", ["eventbridge_kafka_headers_bytes.json", "eventbridge_kafka_headers_buffer.json"])
def test_header_values_as_byte_arrays_are_read(name: str) -> None:
    (record,) = records(name)
    assert isinstance(record, Record)
    assert record.type == "barrage.sent" and record.id.startswith("01JQ00000000000000000000B")


def test_header_values_in_every_form_become_kafkaheader_extensions() -> None:
    event = golden("fc_kafka_batch.json")[:1]
    signed = [b - 256 if b > 127 else b for b in "héllo".encode()]  # Java bytes are signed
    event[0]["data"]["headers"]["headers"] = [
        {"key": "Note", "value": signed}, {"key": "x-buf", "value": {"type": "Buffer", "data": list(b"buf")}},
        {"key": "plain", "value": "text"}, {"key": "skipped", "value": None},
    ]
    (record,) = EventBridgeBatch.records(event, CONTEXT)
    assert isinstance(record, Record)
    assert (record.extensions["kafkaheadernote"], record.extensions["kafkaheaderxbuf"],
            record.extensions["kafkaheaderplain"]) == ("héllo", "buf", "text")
    assert "kafkaheaderskipped" not in record.extensions


def test_an_element_that_is_no_record_is_undecodable_alone() -> None:
    event = golden("eventbridge_kafka_batch.json")
    event.insert(1, 42)
    event.insert(2, "not json")
    decoded = EventBridgeBatch.records(event, CONTEXT)
    assert isinstance(decoded[0], Record) and isinstance(decoded[3], Record)
    assert isinstance(decoded[1], Undecodable) and "neither a CloudEvent" in decoded[1].reason
    assert isinstance(decoded[2], Undecodable) and "not JSON" in decoded[2].reason


def test_a_record_claiming_to_be_a_cloudevent_without_an_id_is_undecodable() -> None:
    event = golden("eventbridge_kafka_batch.json")[:1]
    event[0]["data"]["headers"]["headers"] = [{"key": "ce_specversion", "value": "1.0"}]
    (decoded,) = EventBridgeBatch.records(event, CONTEXT)
    assert isinstance(decoded, Undecodable) and decoded.reason == "missing CloudEvent attribute id"


def test_retry_raises_so_the_trigger_retries_the_whole_batch() -> None:
    report = BatchReport.of([("a", ok()), ("b", retry("store busy"))])
    with pytest.raises(RetryBatch, match="1 of 2 record\\(s\\) to retry; first b: store busy"):
        answer(report, CONTEXT)


def test_rejects_are_reported_not_raised() -> None:
    report = answer(BatchReport.of([("a", ok()), ("b", reject("bad room"))]), CONTEXT)
    assert (report["ok"], report["reject"]) == (1, 1)
    assert report["results"][1] == {"id": "b", "status": "reject", "reason": "bad room"}
    assert report["batchItemFailures"] == []


def test_not_json_is_a_clear_error() -> None:
    with pytest.raises(InvalidInvocation, match="the event is not JSON"):
        parse_payload(b"\x00nope")
    with pytest.raises(InvalidInvocation, match="nested too deeply"):
        parse_payload(b"[" * 100_000)


def test_oversize_batches_are_refused() -> None:
    element = golden("fc_kafka_rawdata.json")[0]
    with pytest.raises(InvalidInvocation, match="at most 10000 records"):
        EventBridgeBatch.records([element] * 10_001, CONTEXT)


def test_golden_files_are_json() -> None:
    for path in EVENTS.glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
