"""The CloudEvents Kafka binary encoding of a barrage, and its reverse (pure, no broker)."""

from __future__ import annotations

import json

import pytest
from cloudevents.kafka import KafkaMessage, from_binary
from hypothesis import given
from hypothesis import strategies as st

from functions.adapters.kafka import (
    CONTENT_TYPE,
    DEFAULT_SOURCE,
    EVENT_TYPE,
    InvalidRecord,
    decode_barrage,
    encode_barrage,
    encode_barrage_sdk,
)
from handlers.model import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, Barrage

BARRAGE = Barrage(
    id="01J0000000000000000000000A",
    room="room-1",
    user="alice",
    text="hello 世界",
    sent_at=1_700_000_000_123,
    colour="#ff0000",
)


def test_binary_mode_headers_key_and_json_value() -> None:
    message = encode_barrage(BARRAGE)
    assert message.key == "room-1"
    assert message.headers["ce_specversion"] == b"1.0"
    assert message.headers["ce_type"] == EVENT_TYPE.encode()
    assert message.headers["ce_source"] == DEFAULT_SOURCE.encode()
    assert message.headers["ce_id"] == BARRAGE.id.encode()
    assert message.headers["ce_time"] == b"2023-11-14T22:13:20.123Z"
    assert message.headers["content-type"] == CONTENT_TYPE.encode()
    # partitionkey becomes the record key, not a header (CE Kafka binding).
    assert "ce_partitionkey" not in message.headers
    assert json.loads(message.value) == BARRAGE.to_dict()


def test_sdk_decodes_what_we_encode() -> None:
    message = encode_barrage(BARRAGE, source="/barrage/test", extensions={"traceparent": "00-abc-def-01"})
    event = from_binary(message)
    assert event.get_data() == BARRAGE.to_dict()
    assert event["id"] == BARRAGE.id
    assert event["type"] == EVENT_TYPE
    assert event["source"] == "/barrage/test"
    assert event["traceparent"] == "00-abc-def-01"
    assert event["partitionkey"] == "room-1"


def test_round_trip_with_extensions() -> None:
    message = encode_barrage(BARRAGE, extensions={"traceparent": "00-1-2-01", "tracestate": "x=1"})
    decoded = decode_barrage(message.headers, message.value, message.key)
    assert decoded.barrage == BARRAGE
    assert decoded.attributes["traceparent"] == "00-1-2-01"
    assert decoded.attributes["tracestate"] == "x=1"
    assert decoded.attributes["type"] == EVENT_TYPE
    assert decoded.attributes["id"] == BARRAGE.id
    assert decoded.attributes["partitionkey"] == "room-1"


def test_decode_accepts_client_header_lists_and_bytes_key() -> None:
    # confluent-kafka gives headers as a list of (name, bytes | None) and the key as bytes.
    message = encode_barrage(BARRAGE)
    header_list = [*message.headers.items(), ("unrelated", None)]
    decoded = decode_barrage(header_list, message.value, b"room-1")
    assert decoded.barrage == BARRAGE
    assert decoded.attributes["partitionkey"] == "room-1"


@pytest.mark.parametrize("name", ["TraceParent", "trace-parent", "a" * 21, "", "id", "source", "type", "partitionkey"])
def test_invalid_or_reserved_extension_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        encode_barrage(BARRAGE, extensions={name: "x"})


def test_plain_record_is_not_a_barrage_event() -> None:
    with pytest.raises(InvalidRecord, match="ce_specversion"):
        decode_barrage([], json.dumps(BARRAGE.to_dict()).encode(), b"room-1")


def test_wrong_event_type_is_rejected() -> None:
    message = encode_barrage(BARRAGE)
    headers = {**message.headers, "ce_type": b"dev.knative.kafka.event"}
    with pytest.raises(InvalidRecord, match="type"):
        decode_barrage(headers, message.value, message.key)


def test_invalid_json_is_rejected() -> None:
    message = encode_barrage(BARRAGE)
    with pytest.raises(InvalidRecord):
        decode_barrage(message.headers, b"{not json", message.key)


def test_invalid_barrage_is_rejected_with_field() -> None:
    message = encode_barrage(BARRAGE)
    data = {**BARRAGE.to_dict(), "text": "   "}
    with pytest.raises(InvalidRecord, match="text"):
        decode_barrage(message.headers, json.dumps(data).encode(), message.key)


def test_missing_value_is_rejected() -> None:
    message = encode_barrage(BARRAGE)
    with pytest.raises(InvalidRecord, match="no value"):
        decode_barrage(message.headers, None, message.key)


def test_event_id_must_match_barrage_id() -> None:
    message = encode_barrage(BARRAGE)
    headers = {**message.headers, "ce_id": b"someone-else"}
    with pytest.raises(InvalidRecord, match="id"):
        decode_barrage(headers, message.value, message.key)


_ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
_barrages = st.builds(
    Barrage,
    id=_ids,
    room=_ids,
    user=_ids,
    text=st.text(min_size=1, max_size=200).map(str.strip).filter(bool),
    sent_at=st.integers(MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS),
    colour=st.none() | st.from_regex(r"#[0-9a-f]{6}", fullmatch=True),
)


@given(_barrages)
def test_any_valid_barrage_round_trips(barrage: Barrage) -> None:
    message = encode_barrage(barrage)
    assert isinstance(message, KafkaMessage)
    assert isinstance(message.key, str)
    decoded = decode_barrage(list(message.headers.items()), message.value, message.key.encode())
    assert decoded.barrage == barrage
    assert decoded.attributes["subject"] == barrage.room


_extensions = st.dictionaries(
    st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True).filter(
        lambda n: (
            n not in {"specversion", "id", "source", "type", "time", "subject", "partitionkey"}
            and n not in {"datacontenttype", "dataschema", "data"}
        )
    ),
    st.text(max_size=40),
    max_size=3,
)


@given(_barrages, _extensions, st.sampled_from(["/barrage/homepage", "/barrage/ü"]))
def test_hand_written_encoding_equals_the_sdks_to_binary(barrage: Barrage, extensions, source: str) -> None:
    ours = encode_barrage(barrage, source=source, extensions=extensions)
    sdk = encode_barrage_sdk(barrage, source=source, extensions=extensions)
    assert ours == sdk
    assert list(ours.headers) == list(sdk.headers)
