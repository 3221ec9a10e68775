"""The CloudEvents Kafka binary encoding of a barrage (pure, no broker).

The hand-written ``encode_barrage`` stays only because it is faster than the SDK's ``to_binary``
(bench/kafka_encode.py); the property tests hold it to the SDK's output, header order included.
What it writes is read back by the production readers (tests/kafka_reading.py).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage, from_binary, to_binary
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.adapters.kafka import CONTENT_TYPE, DEFAULT_SOURCE, EVENT_TYPE, encode_barrage, encode_barrage_sdk
from handlers.model import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, Barrage
from tests.kafka_reading import consumed, read_as_dispatcher, read_as_fc

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


def test_fc_trigger_and_dispatcher_read_the_barrage_and_extensions() -> None:
    message = encode_barrage(BARRAGE, extensions={"traceparent": "00-1-2-01", "tracestate": "x=1"})
    record, barrage = read_as_fc(message.headers, message.value, message.key)
    assert barrage == BARRAGE
    assert record.id == BARRAGE.id
    assert record.type == EVENT_TYPE
    assert record.datacontenttype == CONTENT_TYPE
    assert record.extensions["traceparent"] == "00-1-2-01"
    assert record.extensions["tracestate"] == "x=1"

    event, barrage = read_as_dispatcher(consumed(message.headers, message.value, message.key, offset=7))
    assert barrage == BARRAGE
    assert event.attributes["id"] == BARRAGE.id
    assert event.attributes["type"] == EVENT_TYPE
    assert event.attributes["traceparent"] == "00-1-2-01"
    assert event.attributes["knativekafkaoffset"] == "7"


@pytest.mark.parametrize("name", ["TraceParent", "trace-parent", "a" * 21, "", "id", "source", "type", "partitionkey"])
def test_invalid_or_reserved_extension_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        encode_barrage(BARRAGE, extensions={name: "x"})


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
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
def test_any_valid_barrage_reads_back_through_fc_and_the_dispatcher(barrage: Barrage) -> None:
    message = encode_barrage(barrage)
    assert isinstance(message, KafkaMessage)
    assert message.key == barrage.room
    record, read = read_as_fc(message.headers, message.value, message.key)
    assert read == barrage
    assert (record.id, record.subject) == (barrage.id, barrage.room)
    event, read = read_as_dispatcher(consumed(message.headers, message.value, message.key))
    assert read == barrage
    assert event.attributes["subject"] == barrage.room


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


_sources = st.sampled_from(["/barrage/homepage", "/barrage/ü"]) | st.from_regex(r"/[a-z0-9/ü-]{0,30}", fullmatch=True)


@settings(max_examples=500)
@given(_barrages, _extensions, _sources)
def test_hand_written_encoding_equals_the_sdks_to_binary(
    barrage: Barrage, extensions: dict[str, str], source: str
) -> None:
    ours = encode_barrage(barrage, source=source, extensions=extensions)
    sdk = encode_barrage_sdk(barrage, source=source, extensions=extensions)
    assert ours == sdk
    assert list(ours.headers) == list(sdk.headers)
    # And the SDK fed from the barrage alone, not from the adapter's attribute builder.
    event = CloudEvent(
        {
            "specversion": "1.0", "type": EVENT_TYPE, "source": source, "id": barrage.id,
            "time": (EPOCH + timedelta(milliseconds=barrage.sent_at)).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "subject": barrage.room, "datacontenttype": CONTENT_TYPE, "partitionkey": barrage.room, **extensions,
        },
        barrage.to_dict(),
    )
    independent = to_binary(
        event, data_marshaller=lambda data: json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert ours == independent
