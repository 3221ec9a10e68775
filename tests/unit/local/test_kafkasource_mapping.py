from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field

import pytest

from local.kafkasource.mapping import (
    attribute_name,
    batch_body,
    key_attribute,
    to_http,
    to_structured,
)

SOURCE = "/apis/v1/namespaces/default/kafkasources/barrage-source#barrage-info"


@dataclass(frozen=True)
class FakeRecord:
    topic: str = "barrage-info"
    partition: int = 2
    offset: int = 17
    timestamp_ms: int | None = 1_767_225_600_123
    key: bytes | None = b"room-1"
    value: bytes | None = b'{"a":1}'
    headers: dict[str, bytes] = field(default_factory=dict)


def test_plain_record_gets_kafkasource_attributes() -> None:
    event = to_http(FakeRecord(headers={"Trace-ID": b"abc", "content-type": b"application/json"}), SOURCE)
    assert event.headers == {
        "ce-specversion": "1.0",
        "ce-id": "partition:2/offset:17",
        "ce-type": "dev.knative.kafka.event",
        "ce-source": SOURCE,
        "ce-subject": "partition:2#17",
        "ce-time": "2026-01-01T00:00:00.123Z",
        "ce-key": "room-1",
        "ce-partitionkey": "room-1",
        "ce-kafkaheadertraceid": "abc",
        "content-type": "application/json",
    }
    assert event.body == b'{"a":1}'
    assert event.event_id == "partition:2/offset:17"


def test_plain_record_without_key_time_or_content_type() -> None:
    event = to_http(FakeRecord(key=None, timestamp_ms=None), SOURCE)
    assert "ce-key" not in event.headers and "ce-time" not in event.headers
    assert "content-type" not in event.headers


@pytest.mark.parametrize(
    ("header", "attribute"),
    [
        ("Content_Length", "kafkaheadercontentlength"),
        ("x-B3-TraceId", "kafkaheaderxb3traceid"),
        ("ÄÖ9", "kafkaheader9"),
    ],
)
def test_header_names_are_normalised(header: str, attribute: str) -> None:
    assert attribute_name(header) == attribute


@pytest.mark.parametrize(
    ("key", "key_type", "rendered"),
    [
        (b"room-1", "string", "room-1"),
        (struct.pack(">i", -42), "int", "-42"),
        (struct.pack(">q", 2**40), "int", str(2**40)),
        (struct.pack(">d", 1.5), "float", "1.5"),
        (b"\x00\xff", "byte-array", base64.b64encode(b"\x00\xff").decode()),
    ],
)
def test_key_types(key: bytes, key_type: str, rendered: str) -> None:
    assert key_attribute(key, key_type) == rendered


def test_bad_int_key_is_an_error() -> None:
    with pytest.raises(ValueError):
        key_attribute(b"abc", "int")


def test_binary_cloudevent_record_is_forwarded_as_is() -> None:
    record = FakeRecord(
        headers={
            "ce_specversion": b"1.0",
            "ce_id": b"01ABC",
            "ce_type": b"barrage.sent",
            "ce_source": b"/barrage/homepage",
            "ce_traceparent": b"00-aa-bb-01",
            "content-type": b"application/json",
            "other": b"x",
        }
    )
    event = to_http(record, SOURCE)
    assert event.headers == {
        "ce-specversion": "1.0",
        "ce-id": "01ABC",
        "ce-type": "barrage.sent",
        "ce-source": "/barrage/homepage",
        "ce-traceparent": "00-aa-bb-01",
        "content-type": "application/json",
    }
    assert event.event_id == "01ABC"


def test_structured_cloudevent_record_is_forwarded_as_is() -> None:
    body = json.dumps({"specversion": "1.0", "id": "e1", "type": "barrage.sent", "source": "/s", "data": {}}).encode()
    event = to_http(FakeRecord(value=body, headers={"content-type": b"application/cloudevents+json"}), SOURCE)
    assert event.headers == {"content-type": "application/cloudevents+json"}
    assert event.body == body and event.event_id == "e1"


def test_ce_overrides_add_extensions() -> None:
    event = to_http(FakeRecord(), SOURCE, extensions={"team": "danmaku"})
    assert event.headers["ce-team"] == "danmaku"


def test_batch_members_are_structured() -> None:
    plain = to_http(FakeRecord(headers={"content-type": b"application/json"}), SOURCE)
    binary_data = to_http(FakeRecord(value=b"\x00\x01"), SOURCE)
    batch = json.loads(batch_body([plain, binary_data]))
    assert batch[0]["id"] == "partition:2/offset:17" and batch[0]["data"] == {"a": 1}
    assert batch[0]["datacontenttype"] == "application/json"
    assert base64.b64decode(batch[1]["data_base64"]) == b"\x00\x01"
    assert to_structured(plain)["type"] == "dev.knative.kafka.event"
