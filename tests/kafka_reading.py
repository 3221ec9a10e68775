"""Reading back what a publisher wrote, through the production readers only (no decoder of our own).

- ``read_as_fc``: as FC's EventBridge Kafka trigger hands a record to the function
  (``functions.bindings.kafka_record.record_from_kafka``), then the processor's
  ``barrage_from_data``;
- ``read_as_dispatcher``: as the local KafkaSource dispatcher maps a record to the CloudEvent it
  delivers (``local.kafkasource.mapping.to_event``), then ``barrage_from_data``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from functions.bindings.kafka_record import record_from_kafka
from functions.processor import barrage_from_data
from functions.records import Record
from handlers.model import Barrage
from local.kafka_consumer import ConsumedRecord
from local.kafkasource.mapping import Event, SourceContext, to_event

HeaderItems = Mapping[str, bytes | str | None] | Sequence[tuple[str, bytes | str | None]]
SOURCE_CONTEXT = SourceContext("/apis/v1/namespaces/default/kafkasources/barrage-source")


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8")


def _header_items(headers: HeaderItems) -> list[tuple[str, bytes | str | None]]:
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


def fc_trigger_data(
    headers: HeaderItems, value: bytes | str | None, key: bytes | str | None = None, *,
    topic: str = "barrage-info", partition: int = 0, offset: int = 0,
) -> dict[str, Any]:
    """The record as the FC Kafka trigger passes it: text key and value, headers as ``{key, value}``."""
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "headers": [{"key": name, "value": _text(raw)} for name, raw in _header_items(headers) if raw is not None],
        "key": None if key is None else _text(key),
        "value": None if value is None else _text(value),
    }


def read_as_fc(
    headers: HeaderItems, value: bytes | str | None, key: bytes | str | None = None, **position: Any
) -> tuple[Record, Barrage]:
    """The event FC's trigger shape makes of the record, and the barrage the processor reads from it."""
    record = record_from_kafka(fc_trigger_data(headers, value, key, **position))
    return record, barrage_from_data(record.data)


def consumed(
    headers: HeaderItems, value: bytes | str | None, key: bytes | str | None = None, *,
    topic: str = "barrage-info", partition: int = 0, offset: int = 0,
) -> ConsumedRecord:
    """A record as the dispatcher's consumer holds it (bytes, headers without null values)."""
    as_bytes = {name: raw.encode("utf-8") if isinstance(raw, str) else raw
                for name, raw in _header_items(headers) if raw is not None}
    return ConsumedRecord(topic, partition, offset, None if key is None else _text(key).encode("utf-8"),
                          None if value is None else _text(value).encode("utf-8"), as_bytes, None)


def read_as_dispatcher(record: ConsumedRecord) -> tuple[Event, Barrage]:
    """The CloudEvent the dispatcher delivers for the record, and the barrage the processor reads from it."""
    event = to_event(record, SOURCE_CONTEXT)
    return event, barrage_from_data(event.data)
