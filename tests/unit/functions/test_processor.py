"""Barrage's processor function on the records every binding delivers (golden payloads, in-process)."""

from __future__ import annotations

import pytest

from functions.adapters.memory import MemoryResultStore
from functions.app import Invocation, OutcomeKind, Record
from functions.bindings import InvalidInvocation
from functions.bindings.cloudevents_http import BadDelivery, decode
from functions.config import Settings
from functions.processor import DecodedEvent, handle, process_records
from functions.wiring import Services, process_config
from handlers.model import Barrage
from handlers.process import OutcomeStatus, ProcessConfig
from tests.golden import http_event, raw
from tests.unit.functions.decoding import decode_fc_event, decode_http

NOW = 1_767_225_700_000
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class FixedClock:
    def now_ms(self) -> int:
        return NOW


def test_kafkasource_plain_record() -> None:
    headers, body = http_event("kafkasource_binary_plain.json")
    events, batch = decode_http(headers, body)
    assert not batch
    (event,) = events
    assert event.event_id == "partition:1/offset:42"
    assert event.barrage == Barrage("01JQ0000000000000000000001", "room-1", "alice", "hello barrage", 1767225600000)
    (record,), _ = decode({k.lower(): v for k, v in headers.items()}, body)
    assert isinstance(record, Record)
    assert record.extensions["key"] == "room-1" and record.extensions["kafkaheaderorigin"] == "seed"


def test_kafkasource_forwarded_cloudevent_keeps_traceparent() -> None:
    (event,), _ = decode_http(*http_event("kafkasource_binary_forwarded.json"))
    assert event.barrage is not None and event.barrage.id == event.event_id
    assert event.traceparent == TRACEPARENT


def test_structured_event() -> None:
    (event,), batch = decode_http(*http_event("structured.json"))
    assert not batch and event.barrage is not None
    assert event.barrage.colour == "#ff0000" and event.traceparent == TRACEPARENT


def test_batch_with_base64_data_and_an_invalid_member() -> None:
    events, batch = decode_http(*http_event("batch.json"))
    assert batch
    assert [e.barrage is not None for e in events] == [True, True, False]
    assert events[1].barrage is not None and events[1].barrage.user == "bob"
    assert events[2].error == "sent_at: is required"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("broken_unsupported_type.json", "unsupported event type 'com.example.other'"),
        ("broken_invalid_barrage.json", "room: must match"),
        ("broken_data_not_json.json", "data: is not JSON"),
        ("broken_missing_attribute.json", "missing CloudEvent attribute id"),
    ],
)
def test_broken_single_events_carry_a_permanent_reason(name: str, reason: str) -> None:
    (event,), _ = decode_http(*http_event(name))
    assert event.barrage is None
    assert event.error is not None and reason in event.error


@pytest.mark.parametrize(
    ("name", "message"),
    [("broken_batch_not_array.json", "JSON array"), ("broken_not_cloudevent.json", "not a CloudEvent")],
)
def test_unusable_requests_are_bad_requests(name: str, message: str) -> None:
    with pytest.raises(BadDelivery, match=message):
        decode_http(*http_event(name))


def test_structured_body_that_is_not_json() -> None:
    with pytest.raises(BadDelivery, match="not valid JSON"):
        decode_http({"Content-Type": "application/cloudevents+json"}, b"\xff")


@pytest.mark.parametrize(
    "name", ["eventbridge_kafka_batch.json", "eventbridge_kafka_batch_strings.json", "eventbridge_kafka_rawdata.json"]
)
def test_fc_kafka_trigger_shapes(name: str) -> None:
    events = decode_fc_event(raw(name))
    assert [e.barrage.id if e.barrage else None for e in events] == [
        "01JQ0000000000000000000001",
        "01JQ0000000000000000000002",
    ]
    assert events[0].traceparent == TRACEPARENT


def test_fc_kafka_trigger_poison_records_are_marked_not_raised() -> None:
    events = decode_fc_event(raw("eventbridge_kafka_batch_with_poison.json"))
    assert events[0].barrage is not None
    assert [e.error is not None for e in events] == [False, True, True, True]


def test_fc_direct_invocation_stamps_ids() -> None:
    events = decode_fc_event(raw("direct_invoke_list.json"))
    first, second = (e.barrage for e in events)
    assert first is not None and first.sent_at == NOW and len(first.id) == 26
    assert second is not None and second.id == "direct-2"


def test_fc_event_not_json() -> None:
    with pytest.raises(InvalidInvocation):
        decode_fc_event(b"\x00garbage")


def test_handle_gives_one_outcome_per_event_and_is_idempotent() -> None:
    store = MemoryResultStore()
    events, _ = decode_http(*http_event("batch.json"))
    outcomes = handle(events, store, FixedClock(), ProcessConfig())
    assert [o.status for o in outcomes] == [OutcomeStatus.STORED, OutcomeStatus.STORED, OutcomeStatus.REJECTED]
    again = handle(events, store, FixedClock(), ProcessConfig())
    assert [o.status for o in again][:2] == [OutcomeStatus.DUPLICATE, OutcomeStatus.DUPLICATE]
    assert store.count() == 2


def services(store: MemoryResultStore) -> Services:
    settings = Settings.from_environ({"BARRAGE_BUS": "memory"})
    return Services(settings, store, None, FixedClock(), process_config(settings))  # type: ignore[arg-type]


def test_the_function_maps_every_status_to_an_outcome() -> None:
    store = MemoryResultStore()
    delivered, _ = decode({"content-type": "application/cloudevents-batch+json"}, http_event("batch.json")[1])
    records = [d for d in delivered if isinstance(d, Record)]
    invocation = Invocation(services(store), "processor", "test", batch=True)
    first = process_records(records, invocation)
    assert [o.kind for o in first] == [OutcomeKind.OK, OutcomeKind.OK, OutcomeKind.REJECT]
    assert first[0].detail["barrage_id"] == "01JQ0000000000000000000001"
    assert first[2].reason == "sent_at: is required"
    again = process_records(records, invocation)
    assert [o.kind for o in again][:2] == [OutcomeKind.DUPLICATE, OutcomeKind.DUPLICATE]


def test_a_record_of_an_unknown_type_is_rejected() -> None:
    record = Record(id="x", source="/s", type="com.example.other", data=b"{}")
    (outcome,) = process_records([record], Invocation(services(MemoryResultStore()), "processor", "test"))
    assert outcome.kind is OutcomeKind.REJECT and "unsupported event type" in outcome.reason


def test_deeply_nested_data_is_rejected_not_a_crash() -> None:
    record = Record(id="x", source="/s", type="barrage.sent", data=b"[" * 50_000)
    (outcome,) = process_records([record], Invocation(services(MemoryResultStore()), "processor", "test"))
    assert outcome.kind is OutcomeKind.REJECT and "nested too deeply" in outcome.reason


def test_decoded_event_defaults() -> None:
    assert DecodedEvent("x").traceparent is None
