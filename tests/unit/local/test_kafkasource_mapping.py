"""Record -> event -> request, checked against eventing-kafka-broker's behaviour (PLATFORM.md section 5)."""

from __future__ import annotations

import base64
import json
import struct
import urllib.parse
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local.kafkasource.mapping import (
    EncodingError,
    Event,
    SourceContext,
    UnmappableRecord,
    attribute_name,
    batch_body,
    binary_request,
    canonical_time,
    fallback_event,
    java_double,
    java_float,
    java_time,
    key_attribute,
    percent_encode,
    to_event,
    to_structured,
)
from tests.golden import http_event

CONTEXT = SourceContext("/apis/v1/namespaces/default/kafkasources/barrage-source")
SOURCE = CONTEXT.source("barrage-info")


@dataclass(frozen=True)
class FakeRecord:
    topic: str = "barrage-info"
    partition: int = 2
    offset: int = 17
    timestamp_ms: int | None = 1_767_225_600_123
    key: bytes | None = b"room-1"
    value: bytes | None = b'{"a":1}'
    headers: dict[str, bytes] = field(default_factory=dict)


def binary_cloudevent(**extra: bytes) -> dict[str, bytes]:
    return {"ce_specversion": b"1.0", "ce_id": b"01ABC", "ce_type": b"barrage.sent",
            "ce_source": b"/barrage/homepage", **extra}


def test_plain_record_is_wrapped_with_partition_and_offset() -> None:
    event = to_event(FakeRecord(headers={"Trace-ID": b"abc", "content-type": b"Application/JSON"}), CONTEXT)
    assert event.attributes == {
        "specversion": "1.0",
        "id": "partition:2/offset:17",
        "source": SOURCE,
        "type": "dev.knative.kafka.event",
        "subject": "partition:2#17",
        "time": "2026-01-01T00:00:00.123Z",
        "partitionkey": "room-1",
        "key": "room-1",
        "kafkaheadertraceid": "abc",
        "knativekafkapartition": "2",
        "knativekafkaoffset": "17",
    }
    assert event.content_type == "application/json"  # EKB lower-cases the header
    headers, body = binary_request(event)
    assert headers["ce-id"] == "partition:2/offset:17" and headers["content-type"] == "application/json"
    assert headers["ce-knativekafkaoffset"] == "17" and body == b'{"a":1}'


def test_empty_and_missing_keys_are_no_key() -> None:
    for key in (None, b""):
        attributes = to_event(FakeRecord(key=key, timestamp_ms=None), CONTEXT).attributes
        assert "key" not in attributes and "partitionkey" not in attributes and "time" not in attributes


@pytest.mark.parametrize(
    ("header", "attribute"),
    [("Content_Length", "kafkaheadercontentlength"), ("x-B3-TraceId", "kafkaheaderxb3traceid"),
     ("ÄÖ9", "kafkaheader9")],
)
def test_header_names_are_normalised(header: str, attribute: str) -> None:
    assert attribute_name(header) == attribute


@pytest.mark.parametrize(
    ("key", "key_type", "rendered"),
    [
        (b"room-1", "string", "room-1"),
        (struct.pack(">i", -42), "int", "-42"),
        # EKB's int key is 4 bytes; anything else falls back to the string reading.
        (struct.pack(">q", 2**40), "int", struct.pack(">q", 2**40).decode("utf-8", "replace")),
        (b"ab", "int", "ab"),
        (struct.pack(">d", 1.5), "float", "1.5"),
        (struct.pack(">f", 0.1), "float", "0.1"),  # Float.toString, not the double's 0.10000000149...
        (struct.pack(">d", 1e7), "float", "1.0E7"),
        (b"abc", "float", "abc"),
        (b"\x00\xff", "byte-array", base64.b64encode(b"\x00\xff").decode()),
        (b"\xff", "string", "\ufffd"),
    ],
)
def test_key_types_and_their_fallback(key: bytes, key_type: str, rendered: str) -> None:
    assert key_attribute(key, key_type) == rendered
    context = SourceContext(CONTEXT.source_prefix, key_type)
    assert to_event(FakeRecord(key=key), context).attributes["key"] == rendered


def test_int_key_of_two_bytes_no_longer_fails() -> None:  # the stalled partition
    assert to_event(FakeRecord(key=b"\x00\x07"), SourceContext(CONTEXT.source_prefix, "int")).attributes["key"] == (
        "\x00\x07")


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.5, "1.5"), (1e7, "1.0E7"), (1234567.0, "1234567.0"), (0.001, "0.001"), (0.0001, "1.0E-4"),
     (-0.0, "-0.0"), (5e-324, "4.9E-324"), (float("inf"), "Infinity"), (float("nan"), "NaN"), (2e23, "2.0E23")],
)
def test_java_double_strings(value: float, text: str) -> None:
    assert java_double(value) == text


@pytest.mark.parametrize(
    ("value", "text"), [(1.4e-45, "1.4E-45"), (3.4028235e38, "3.4028235E38"), (1 / 3, "0.33333334")]
)
def test_java_float_strings(value: float, text: str) -> None:
    assert java_float(struct.unpack(">f", struct.pack(">f", value))[0]) == text


@given(st.binary(min_size=4, max_size=4))
def test_java_float_reads_back_as_the_same_float(raw: bytes) -> None:
    value = struct.unpack(">f", raw)[0]
    text = java_float(value)
    if text != "NaN":
        assert struct.pack(">f", float(text.replace("Infinity", "inf"))) == raw


@pytest.mark.parametrize(
    ("millis", "text"),
    [(1_767_225_600_000, "2026-01-01T00:00:00Z"), (1_767_225_600_120, "2026-01-01T00:00:00.12Z"),
     (0, "1970-01-01T00:00:00Z"), (-1, "1969-12-31T23:59:59.999Z")],
)
def test_record_time_as_the_java_sdk_writes_it(millis: int, text: str) -> None:
    assert java_time(millis) == text


def test_timestamp_beyond_year_9999_is_unmappable() -> None:
    with pytest.raises(UnmappableRecord, match="outside years"):
        to_event(FakeRecord(timestamp_ms=2**62), CONTEXT)


def test_binary_cloudevent_is_forwarded_with_its_own_attributes() -> None:
    record = FakeRecord(headers={**binary_cloudevent(ce_traceparent=b"00-aa-bb-01",
                                                     ce_time=b"2026-01-01T08:00:00.500+08:00"),
                                 "content-type": b"application/json", "other": b"x"})
    event = to_event(record, CONTEXT)
    assert event.attributes == {
        "specversion": "1.0", "id": "01ABC", "type": "barrage.sent", "source": "/barrage/homepage",
        "traceparent": "00-aa-bb-01", "time": "2026-01-01T08:00:00.5+08:00",
        "knativekafkapartition": "2", "knativekafkaoffset": "17",
    }
    assert event.content_type == "application/json" and event.event_id == "01ABC"


@pytest.mark.parametrize(
    "headers",
    [
        binary_cloudevent(ce_specversion=b"2.0"),
        {k: v for k, v in binary_cloudevent().items() if k != "ce_id"},
        binary_cloudevent(ce_time=b"yesterday"),
        binary_cloudevent(ce_source=b"/has space"),
        binary_cloudevent(**{"ce_bad-name": b"x"}),
    ],
    ids=["spec-version", "no-id", "bad-time", "bad-source", "bad-extension-name"],
)
def test_invalid_binary_cloudevent_is_wrapped_like_a_plain_record(headers: dict[str, bytes]) -> None:
    event = to_event(FakeRecord(headers=headers), CONTEXT)
    assert event.attributes["type"] == "dev.knative.kafka.event"
    assert event.attributes["kafkaheadercespecversion"] == headers["ce_specversion"].decode()


def test_structured_record_is_resent_in_binary_mode() -> None:
    body = json.dumps({"specversion": "1.0", "id": "e1", "type": "barrage.sent", "source": "/s",
                       "datacontenttype": "application/json", "traceparent": "00-aa-bb-01", "count": 3,
                       "data": {"text": "弹幕"}}).encode()
    event = to_event(FakeRecord(value=body, headers={"content-type": b"application/cloudevents+json"}), CONTEXT)
    headers, sent = binary_request(event)
    assert headers["ce-id"] == "e1" and headers["ce-traceparent"] == "00-aa-bb-01" and headers["ce-count"] == "3"
    assert headers["content-type"] == "application/json"
    assert json.loads(sent) == {"text": "弹幕"}
    assert headers["ce-knativekafkapartition"] == "2"


def test_structured_data_base64_and_text() -> None:
    base = {"specversion": "1.0", "id": "e1", "type": "t", "source": "/s"}
    as_base64 = {**base, "data_base64": base64.b64encode(b"\x00\x01").decode()}
    text = {**base, "datacontenttype": "text/plain", "data": "hello"}
    for document, data in ((as_base64, b"\x00\x01"), (text, b"hello")):
        record = FakeRecord(value=json.dumps(document).encode(),
                            headers={"content-type": b"application/cloudevents+json"})
        assert to_event(record, CONTEXT).data == data


def test_invalid_structured_record_is_wrapped() -> None:
    record = FakeRecord(value=b"not json", headers={"content-type": b"application/cloudevents+json; charset=utf-8"})
    event = to_event(record, CONTEXT)
    assert event.attributes["type"] == "dev.knative.kafka.event" and event.data == b"not json"
    assert event.content_type == "application/cloudevents+json; charset=utf-8"


def test_null_value_is_a_cloudevent_only_if_its_headers_are() -> None:
    assert to_event(FakeRecord(value=None, headers=binary_cloudevent()), CONTEXT).data is None
    with pytest.raises(UnmappableRecord, match="no value"):
        to_event(FakeRecord(value=None), CONTEXT)
    with pytest.raises(UnmappableRecord, match="no value"):
        to_event(FakeRecord(value=None, headers=binary_cloudevent(ce_specversion=b"9")), CONTEXT)


def test_ce_overrides_come_last() -> None:
    context = SourceContext(CONTEXT.source_prefix, extensions={"team": "danmaku", "knativekafkaoffset": "x"})
    attributes = to_event(FakeRecord(), context).attributes
    assert attributes["team"] == "danmaku" and attributes["knativekafkaoffset"] == "x"


def test_header_values_are_percent_encoded() -> None:
    assert percent_encode("room-1") == "room-1"
    assert percent_encode('a b"%弹') == "a%20b%22%25%E5%BC%B9"
    event = to_event(FakeRecord(key="弹幕 room".encode(), headers={"x": b"line\r\nbreak"}), CONTEXT)
    headers, _ = binary_request(event)
    assert urllib.parse.unquote(headers["ce-key"]) == "弹幕 room"
    assert headers["ce-kafkaheaderx"] == "line%0D%0Abreak"
    assert all(value.isascii() and value.isprintable() for value in headers.values())


def test_content_type_that_cannot_be_a_header_is_an_encoding_error() -> None:
    event = to_event(FakeRecord(headers={"content-type": b"text/plain\r\nX-Evil: 1"}), CONTEXT)
    with pytest.raises(EncodingError, match="datacontenttype"):
        binary_request(event)
    fallback = fallback_event(FakeRecord(), CONTEXT)
    assert binary_request(fallback)[0]["ce-id"] == "partition:2/offset:17"


def test_time_canonical_form() -> None:
    assert canonical_time("2026-01-01T00:00:00.000+00:00") == "2026-01-01T00:00:00Z"
    assert canonical_time("2026-02-30T00:00:00Z") == "2026-02-28T00:00:00Z"  # java.time clamps the day
    for bad in ("2026-01-01 00:00:00Z", "2026-01-01T00:00:00z", "2026-13-01T00:00:00Z", "2026-01-01T00:00Z"):
        with pytest.raises(ValueError):
            canonical_time(bad)


def test_batch_members_are_structured() -> None:
    plain = to_event(FakeRecord(headers={"content-type": b"application/json"}), CONTEXT)
    binary_data = to_event(FakeRecord(value=b"\x00\x01"), CONTEXT)
    batch = json.loads(batch_body([to_structured(plain), to_structured(binary_data)]))
    assert batch[0]["id"] == "partition:2/offset:17" and batch[0]["data"] == {"a": 1}
    assert batch[0]["datacontenttype"] == "application/json"
    assert base64.b64decode(batch[1]["data_base64"]) == b"\x00\x01"
    assert to_structured(Event({"id": "x"}))["id"] == "x"


header_names = st.one_of(
    st.sampled_from(["content-type", "ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time",
                     "ce_datacontenttype", "Content-Type", "ce_"]),
    st.text(max_size=12),
)
header_values = st.one_of(st.sampled_from([b"1.0", b"application/cloudevents+json", b"/s", b"t",
                                           b"2026-01-01T00:00:00Z"]), st.binary(max_size=24))
records = st.builds(
    FakeRecord,
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
    timestamp_ms=st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    key=st.one_of(st.none(), st.binary(max_size=9)),
    value=st.one_of(st.none(), st.binary(max_size=64), st.sampled_from([b"{}", b'{"specversion":"1.0"}', b"[]"])),
    headers=st.dictionaries(header_names, header_values, max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(records, st.sampled_from(["string", "int", "float", "byte-array"]))
def test_every_record_maps_to_a_sendable_event_or_names_why_not(record: FakeRecord, key_type: str) -> None:
    context = SourceContext(CONTEXT.source_prefix, key_type)
    try:
        event = to_event(record, context)
    except UnmappableRecord as exc:
        assert str(exc)
        event = fallback_event(record, context)
    try:
        headers, body = binary_request(event)
    except EncodingError as exc:
        assert str(exc)
        event = fallback_event(record, context)
        headers, body = binary_request(event)
    assert all(name.isascii() and value.isascii() and value.isprintable() for name, value in headers.items())
    assert headers["ce-knativekafkapartition"] == str(record.partition)
    assert headers["ce-knativekafkaoffset"] == str(record.offset)
    assert body == (event.data or b"")
    json.loads(batch_body([to_structured(event)]))


def test_the_golden_kafkasource_deliveries_are_what_the_dispatcher_sends() -> None:
    golden_headers, golden_body = http_event("kafkasource_binary_plain.json")
    plain = FakeRecord(partition=1, offset=42, timestamp_ms=1_767_225_600_000, key=b"room-1", value=golden_body,
                       headers={"origin": b"seed", "content-type": b"application/json"})
    assert binary_request(to_event(plain, CONTEXT)) == (golden_headers, golden_body)
    golden_headers, golden_body = http_event("kafkasource_binary_forwarded.json")
    forwarded = FakeRecord(partition=1, offset=42, value=golden_body, headers={
        **{"ce_" + name[3:]: value.encode() for name, value in golden_headers.items()
           if name.startswith("ce-") and not name.startswith("ce-knativekafka")},
        "content-type": b"application/json",
    })
    assert binary_request(to_event(forwarded, CONTEXT)) == (golden_headers, golden_body)
