"""Kafka record -> CloudEvent HTTP request, with KafkaSource's exact attribute mapping.

A record that already is a CloudEvent (binary ``ce_`` headers, or a structured content
type) is forwarded as is, so its own attributes (``traceparent`` among them) reach the
sink. A plain record is wrapped: ``dev.knative.kafka.event`` with partition/offset ids,
its key as ``key``/``partitionkey`` and each Kafka header as ``kafkaheader<name>``.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

PLAIN_EVENT_TYPE = "dev.knative.kafka.event"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
KEY_TYPES = ("string", "int", "float", "byte-array")
_NOT_ATTRIBUTE_CHAR = re.compile(r"[^a-z0-9]")


class Record(Protocol):
    """What the dispatcher needs of a Kafka record (``ConsumedRecord`` has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp_ms(self) -> int | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Mapping[str, bytes]: ...


@dataclass(frozen=True)
class HttpEvent:
    headers: dict[str, str]
    body: bytes
    event_id: str


def attribute_name(header: str) -> str:
    """A Kafka header name as a CloudEvents extension: lower case, [a-z0-9] only."""
    return "kafkaheader" + _NOT_ATTRIBUTE_CHAR.sub("", header.lower())


def key_attribute(key: bytes, key_type: str = "string") -> str:
    """The record key as KafkaSource renders it for its key-type label."""
    if key_type == "int":
        if len(key) == 4:
            return str(struct.unpack(">i", key)[0])
        if len(key) == 8:
            return str(struct.unpack(">q", key)[0])
        raise ValueError(f"an int key has 4 or 8 bytes, got {len(key)}")
    if key_type == "float":
        if len(key) == 4:
            return repr(struct.unpack(">f", key)[0])
        if len(key) == 8:
            return repr(struct.unpack(">d", key)[0])
        raise ValueError(f"a float key has 4 or 8 bytes, got {len(key)}")
    if key_type == "byte-array":
        return base64.b64encode(key).decode()
    return key.decode("utf-8", "replace")


def _header_text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")


def rfc3339(timestamp_ms: int) -> str:
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_binary_cloudevent(record: Record) -> bool:
    return any(name.lower() == "ce_specversion" for name in record.headers)


def content_type(record: Record) -> str | None:
    for name, value in record.headers.items():
        if name.lower() == "content-type":
            return _header_text(value)
    return None


def to_http(
    record: Record, source: str, key_type: str = "string", extensions: Mapping[str, str] | None = None
) -> HttpEvent:
    """The binary-mode HTTP request a KafkaSource sends for ``record``."""
    body = record.value or b""
    record_content_type = content_type(record)
    if is_binary_cloudevent(record):
        headers = {
            "ce-" + name[3:].lower(): _header_text(value)
            for name, value in record.headers.items()
            if name.lower().startswith("ce_")
        }
        if record_content_type:
            headers["content-type"] = record_content_type
        headers.update({f"ce-{k}": v for k, v in (extensions or {}).items()})
        return HttpEvent(headers, body, headers.get("ce-id", f"partition:{record.partition}/offset:{record.offset}"))
    if record_content_type and record_content_type.split(";")[0].strip().lower() == STRUCTURED_CONTENT_TYPE:
        try:
            event_id = str(json.loads(body).get("id", ""))
        except (ValueError, AttributeError):
            event_id = ""
        return HttpEvent({"content-type": record_content_type}, body, event_id or f"{record.partition}/{record.offset}")
    event_id = f"partition:{record.partition}/offset:{record.offset}"
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": PLAIN_EVENT_TYPE,
        "ce-source": source,
        "ce-subject": f"partition:{record.partition}#{record.offset}",
    }
    if record.timestamp_ms is not None and record.timestamp_ms > 0:
        headers["ce-time"] = rfc3339(record.timestamp_ms)
    if record.key is not None:
        rendered = key_attribute(record.key, key_type)
        headers["ce-key"] = rendered
        headers["ce-partitionkey"] = rendered
    for name, value in record.headers.items():
        if name.lower() == "content-type":
            continue
        headers["ce-" + attribute_name(name)] = _header_text(value)
    if record_content_type:
        headers["content-type"] = record_content_type
    headers.update({f"ce-{k}": v for k, v in (extensions or {}).items()})
    return HttpEvent(headers, body, event_id)


def to_structured(event: HttpEvent) -> dict[str, object]:
    """One event of a batch (structured mode): attributes as members, data as JSON or base64."""
    content = event.headers.get("content-type", "")
    if content.split(";")[0].strip().lower() == STRUCTURED_CONTENT_TYPE:
        parsed = json.loads(event.body)
        if isinstance(parsed, dict):
            return parsed
    structured: dict[str, object] = {k[3:]: v for k, v in event.headers.items() if k.startswith("ce-")}
    if content:
        structured["datacontenttype"] = content
    try:
        structured["data"] = json.loads(event.body) if event.body else None
    except ValueError:
        structured["data_base64"] = base64.b64encode(event.body).decode()
    return structured


def batch_body(events: Sequence[HttpEvent]) -> bytes:
    return json.dumps([to_structured(e) for e in events], separators=(",", ":")).encode()
