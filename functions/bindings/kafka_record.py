"""A Kafka record as FC's EventBridge trigger shows it, as a ``Record`` (shared by the FC event shapes).

The record (``{topic, partition, offset, timestamp, headers, key, value}``) is read the way a
Knative KafkaSource reads one, so an event function sees the same record on both platforms:

- ``ce_*`` headers (CloudEvents' Kafka binary binding): the record *is* that event;
- a ``content-type: application/cloudevents+json`` header: the value is a structured event;
- anything else: ``data`` is the value, the key is the ``key``/``partitionkey`` extension and each
  header a ``kafkaheader<name>`` extension (PLATFORM.md §5).

Header values arrive as strings or as byte arrays (JSON lists of numbers, signed as Java bytes,
or ``{"data": [...]}`` buffers); each becomes text (UTF-8, invalid bytes replaced).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from functions.records import CONTEXT_ATTRIBUTES, Record, RecordError, record_from_attributes, record_from_structured

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
_EXTENSION_NAME = re.compile(r"[^a-z0-9]")


def _bytes(value: Any) -> bytes | None:
    if isinstance(value, Mapping) and isinstance(value.get("data"), list):
        value = value["data"]
    if isinstance(value, list) and all(isinstance(b, int) and -128 <= b <= 255 for b in value):
        return bytes(b & 0xFF for b in value)
    return None


def header_text(value: Any) -> str | None:
    """One header value as text, whatever form it came in; None when it is no value at all."""
    if isinstance(value, str):
        return value
    raw = _bytes(value)
    if raw is not None:
        return raw.decode("utf-8", "replace")
    if isinstance(value, (int, float, bool)):
        return json.dumps(value)
    return None


def record_headers(raw: Any) -> list[tuple[str, str]]:
    """Headers in order, from a list of ``{key, value}``, ``{"headers": [...]}`` or a plain mapping."""
    if isinstance(raw, Mapping) and "headers" in raw and isinstance(raw.get("headers"), (list, Mapping)):
        raw = raw["headers"]
    items: list[tuple[Any, Any]]
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = [(item.get("key"), item.get("value")) for item in raw if isinstance(item, Mapping)]
    else:
        return []
    headers = []
    for key, value in items:
        text = header_text(value)
        if isinstance(key, str) and text is not None:
            headers.append((key, text))
    return headers


def value_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    raw = _bytes(value)
    if raw is not None:
        return raw
    return json.dumps(value, ensure_ascii=False).encode("utf-8")  # a value EventBridge parsed as JSON


def record_from_kafka(data: Mapping[str, Any], envelope: Mapping[str, Any] | None = None) -> Record:
    """The record as an event; ``envelope`` is EventBridge's CloudEvent around it (absent for RawData).

    Raises ``RecordError`` when the record claims to be a CloudEvent and is not a valid one.
    """
    headers = record_headers(data.get("headers"))
    value = value_bytes(data.get("value"))
    lowered = [(k.lower(), v) for k, v in headers]
    content_type = next((v for k, v in lowered if k == "content-type"), None)
    if any(k.startswith("ce_") for k, _ in lowered):
        attributes = {k[3:]: v for k, v in lowered if k.startswith("ce_")}
        if content_type:
            attributes.setdefault("datacontenttype", content_type)
        return record_from_attributes(attributes, value)
    if content_type and content_type.split(";")[0].strip().lower() == STRUCTURED_CONTENT_TYPE:
        try:
            document = json.loads((value or b"").decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise RecordError("a structured CloudEvent record whose value is not JSON") from None
        return record_from_structured(document)
    topic, partition, offset = data.get("topic"), data.get("partition"), data.get("offset")
    extensions: dict[str, str] = {}
    key = header_text(data.get("key"))
    if key:
        extensions["key"] = extensions["partitionkey"] = key
    extensions["knativekafkapartition"] = str(partition)
    extensions["knativekafkaoffset"] = str(offset)
    for name, text in headers:
        extension = "kafkaheader" + _EXTENSION_NAME.sub("", name.lower())
        if extension not in CONTEXT_ATTRIBUTES:
            extensions[extension] = text
    env = envelope or {}
    return Record(
        id=str(env.get("id") or f"partition:{partition}/offset:{offset}"),
        source=str(env.get("source") or f"kafka:{topic}"),
        type=str(env.get("type") or "alikafka:Topic:Message"),
        subject=str(env.get("subject") or f"partition:{partition}#{offset}"),
        time=str(env["time"]) if env.get("time") else None,
        datacontenttype=content_type,
        data=value,
        extensions=extensions,
    )
