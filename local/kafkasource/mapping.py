"""Kafka record -> CloudEvent -> HTTP request, as eventing-kafka-broker's KafkaSource does it.

The steps follow EKB's dispatcher (PLATFORM.md section 5):

- A record is read as a CloudEvent in the Kafka binding: *structured* when its exact
  ``content-type`` header names the JSON event format, else *binary* when it has a
  ``ce_specversion`` header. A record that is neither, or that fails to parse as one (unknown
  spec version, a required attribute missing, a bad ``time`` or ``source``, an invalid extension
  name), is *wrapped*: ``dev.knative.kafka.event`` with partition/offset ids, its key as
  ``key``/``partitionkey`` (by the source's key type, falling back to a string; an empty key is
  no key), each Kafka header as ``kafkaheader<name>`` and the raw value as data.
- Every event gets ``knativekafkapartition`` and ``knativekafkaoffset``, then the source's
  ``ceOverrides`` extensions.
- Every event is re-sent in binary mode, a structured record included: attributes as ``ce-``
  headers, ``datacontenttype`` as ``Content-Type``, data as the body.

Header values are percent-encoded as the CloudEvents HTTP binding (1.0.2, section 3.1.3.2)
requires (space, ``"``, ``%`` and anything outside printable ASCII), so any attribute value can
travel; EKB's Java SDK writes them raw, which is the same for printable ASCII.

A record no event can be made of raises ``UnmappableRecord`` naming the reason: EKB discards
such records (a tombstone that is not a CloudEvent, a timestamp out of range); the dispatcher
dead-letters them instead, as ``fallback_event`` describes.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import json
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Protocol

PLAIN_EVENT_TYPE = "dev.knative.kafka.event"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
KEY_TYPES = ("string", "int", "float", "byte-array")
KEY_TYPE_LABEL = "kafkasources.sources.knative.dev/key-type"
PARTITION_EXTENSION = "knativekafkapartition"
OFFSET_EXTENSION = "knativekafkaoffset"
SPEC_VERSIONS = ("1.0", "0.3")  # what the Java SDK parses; anything else is not a CloudEvent
CONTENT_TYPE_HEADER = "content-type"  # the Kafka binding's header, matched exactly (as the Java SDK does)
REQUIRED_ATTRIBUTES = ("id", "source", "type")
_NOT_ATTRIBUTE_CHAR = re.compile(r"[^a-z0-9]")
_EXTENSION_NAME = re.compile(r"[a-z0-9]+")
# Characters the HTTP binding lets through unencoded: printable ASCII but space, '"' and '%'.
_NEEDS_PERCENT = re.compile(r"[^\x21\x23\x24\x26-\x7e]")
_SAFE_BYTES = frozenset(range(0x21, 0x7F)) - {0x22, 0x25}
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")  # an HTTP field value: printable ASCII, space, tab
# The Java SDK's timestamp format: yyyy-MM-dd'T'HH:mm:ss, 0-9 fraction digits, Z or +HH:MM[:ss].
_TIME = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})T(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
    r"(?:\.(?P<fraction>\d{1,9}))?(?:(?P<zulu>Z)|(?P<sign>[+-])(?P<oh>\d{2}):(?P<om>\d{2})(?::(?P<os>\d{2}))?)"
)
# A URI reference as Java's URI.create accepts it, roughly: no whitespace, controls or the
# characters RFC 3986 excludes, and well-formed percent escapes.
_URI_REJECTED = re.compile(r"[\x00-\x20\x7f\"<>\\^`{|}]|%(?![0-9A-Fa-f]{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class UnmappableRecord(ValueError):
    """A record no CloudEvent can be made of; the message is the reason."""


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
class Event:
    """A CloudEvent: context attributes as canonical strings, data as bytes.

    ``attributes`` holds every attribute (``specversion`` first) except ``datacontenttype``,
    which is ``content_type``: in binary mode it travels as the HTTP ``Content-Type``.
    """

    attributes: Mapping[str, str]
    data: bytes | None = None
    content_type: str | None = None

    @property
    def event_id(self) -> str:
        return self.attributes.get("id", "")

    def with_extensions(self, extensions: Mapping[str, str]) -> Event:
        return Event({**self.attributes, **extensions}, self.data, self.content_type)


@dataclass(frozen=True)
class SourceContext:
    """What a KafkaSource adds to each event: its ``source`` attribute, key type, overrides."""

    source_prefix: str  # "/apis/v1/namespaces/<ns>/kafkasources/<name>"; "#<topic>" is appended
    key_type: str = "string"
    extensions: Mapping[str, str] = field(default_factory=dict)

    def source(self, topic: str) -> str:
        return f"{self.source_prefix}#{topic}"


# ---------------------------------------------------------------------------------- values


def attribute_name(header: str) -> str:
    """A Kafka header name as a CloudEvents extension: lower case, [a-z0-9] only."""
    return "kafkaheader" + _NOT_ATTRIBUTE_CHAR.sub("", header.lower())


def _text(value: bytes | None) -> str:
    """Bytes as Java's ``new String(bytes, UTF_8)``: malformed sequences become U+FFFD."""
    return (value or b"").decode("utf-8", "replace")


def _as_float32(value: float) -> float | None:
    try:
        return float(struct.unpack(">f", struct.pack(">f", value))[0])
    except OverflowError:  # beyond the largest float
        return None


def _java_shortest(magnitude: float, reads_back: Callable[[Decimal], bool]) -> str:
    """The decimal Java's ``toString`` picks (JDK 19+) for a positive finite ``magnitude``.

    The shortest decimals that read back as the same value, with two-digit ones considered too
    when one digit suffices; of those, the closest.
    """
    exact = Decimal(magnitude)
    found: list[Decimal] = []
    for precision in range(1, 18):
        rounded = Decimal(f"{magnitude:.{precision - 1}e}")
        step = Decimal(1).scaleb(rounded.adjusted() - precision + 1)
        # The nearest decimal of this length and its neighbours: where the rounding interval is
        # lopsided (next to a power of two) a neighbour may read back when the nearest does not.
        found += [c for c in (rounded, rounded - step, rounded + step) if c > 0 and reads_back(c)]
        if found and precision >= 2:
            break
    best = min(found, key=lambda c: abs(c - exact))
    digits = "".join(map(str, best.as_tuple().digits)).rstrip("0") or "0"
    exponent = best.adjusted()
    if -3 <= exponent < 7:
        if exponent >= 0:
            whole = digits[: exponent + 1].ljust(exponent + 1, "0")
            fraction = digits[exponent + 1 :] or "0"
        else:
            whole, fraction = "0", "0" * (-exponent - 1) + digits
        return f"{whole}.{fraction}"
    return f"{digits[0]}.{digits[1:] or '0'}E{exponent}"


def _java_special(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    return None


def java_double(value: float) -> str:
    """Java's ``Double.toString(value)``."""
    special = _java_special(value)
    if special is not None:
        return special
    magnitude = abs(value)
    text = _java_shortest(magnitude, lambda candidate: float(candidate) == magnitude)
    return "-" + text if value < 0 else text


def java_float(value: float) -> str:
    """Java's ``Float.toString`` for ``value``, a 32-bit float."""
    special = _java_special(value)
    if special is not None:
        return special
    magnitude = abs(value)
    text = _java_shortest(magnitude, lambda candidate: _as_float32(float(candidate)) == magnitude)
    return "-" + text if value < 0 else text


def key_attribute(key: bytes, key_type: str = "string") -> str:
    """The record key as EKB's KeyDeserializer reads it, written as its canonical string.

    int: 4 bytes, big-endian; float: 4 or 8 bytes; byte-array: base64 (a Binary attribute);
    any other length, and the string type, read the bytes as UTF-8.
    """
    if key_type == "int" and len(key) == 4:
        return str(struct.unpack(">i", key)[0])
    if key_type == "float" and len(key) == 4:
        return java_float(struct.unpack(">f", key)[0])
    if key_type == "float" and len(key) == 8:
        return java_double(struct.unpack(">d", key)[0])
    if key_type == "byte-array":
        return base64.b64encode(key).decode("ascii")
    return _text(key)


def java_time(timestamp_ms: int) -> str:
    """A record timestamp as the Java SDK writes a UTC time: no fraction when it is zero."""
    seconds, millis = divmod(timestamp_ms, 1000)
    try:
        moment = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise UnmappableRecord(f"record timestamp {timestamp_ms} ms is outside years 1-9999") from None
    fraction = f".{millis:03d}".rstrip("0") if millis else ""
    return moment.replace(tzinfo=None).isoformat(timespec="seconds") + fraction + "Z"


def canonical_time(text: str) -> str:
    """A ``time`` attribute parsed and re-written as the Java SDK does; ValueError if invalid."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"time {text!r} is not an RFC 3339 timestamp")
    parts = match.groupdict()
    year, month, day = int(parts["year"]), int(parts["month"]), int(parts["day"])
    if not 1 <= month <= 12 or not 1 <= day <= 31 or year == 0:
        raise ValueError(f"time {text!r} is not a date")
    day = min(day, calendar.monthrange(year, month)[1])  # java.time's SMART resolver clamps the day
    if int(parts["hour"]) > 23 or int(parts["minute"]) > 59 or int(parts["second"]) > 59:
        raise ValueError(f"time {text!r} is not a time of day")
    offset = "Z"
    if not parts["zulu"]:
        hours, minutes, secs = int(parts["oh"]), int(parts["om"]), int(parts["os"] or 0)
        if hours > 18 or minutes > 59 or secs > 59:
            raise ValueError(f"time {text!r} has no valid offset")
        if hours or minutes or secs:
            offset = f"{parts['sign']}{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")
    fraction = (parts["fraction"] or "").rstrip("0")
    return (f"{year:04d}-{month:02d}-{day:02d}T{parts['hour']}:{parts['minute']}:{parts['second']}"
            + (f".{fraction}" if fraction else "") + offset)


def _check_uri(name: str, value: str) -> None:
    if _URI_REJECTED.search(value):
        raise ValueError(f"{name} {value!r} is not a URI reference")


def percent_encode(value: str) -> str:
    """An attribute value as an HTTP header value (CloudEvents HTTP binding 3.1.3.2)."""
    if not _NEEDS_PERCENT.search(value):
        return value
    return "".join(chr(b) if b in _SAFE_BYTES else f"%{b:02X}" for b in value.encode("utf-8"))


# ---------------------------------------------------------------------------------- reading


def _validated(attributes: dict[str, str]) -> dict[str, str]:
    """The attribute checks the Java SDK's builder makes; ValueError names the first failure."""
    for name in REQUIRED_ATTRIBUTES:
        if name not in attributes:
            raise ValueError(f"CloudEvent attribute {name} is missing")
    _check_uri("source", attributes["source"])
    for name in ("dataschema", "schemaurl"):
        if name in attributes:
            _check_uri(name, attributes[name])
    if "time" in attributes:
        attributes["time"] = canonical_time(attributes["time"])
    for name in attributes:
        if not _EXTENSION_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid CloudEvent attribute name")
    return attributes


def _ordered(spec_version: str, attributes: Mapping[str, str]) -> dict[str, str]:
    return {"specversion": spec_version, **{k: v for k, v in attributes.items() if k != "specversion"}}


def _read_binary(record: Record) -> Event:
    """A record in the Kafka binary binding; ValueError when it is not a valid CloudEvent."""
    headers = record.headers
    spec_version = _text(headers.get("ce_specversion"))
    if spec_version not in SPEC_VERSIONS:
        raise ValueError(f"unknown CloudEvents spec version {spec_version!r}")
    attributes: dict[str, str] = {}
    content_type = None
    for name, value in headers.items():
        if name == CONTENT_TYPE_HEADER:
            content_type = _text(value)
        elif len(name) > 3 and name.startswith("ce_"):
            attribute = name[3:].lower()
            if attribute == "datacontenttype":  # the SDK takes it from either; the later one wins
                content_type = _text(value)
            elif attribute != "specversion":
                attributes[attribute] = _text(value)
    return Event(_ordered(spec_version, _validated(attributes)), record.value or None, content_type)


def _json_attribute(value: Any) -> str:
    """A structured event's extension value as the Java SDK's JSON reader keeps it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return java_double(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def is_json_content_type(content_type: str | None) -> bool:
    """The JSON event format's rule: absent, */json or */*+json means data is JSON."""
    if content_type is None:
        return True
    media = content_type.split(";")[0].strip().lower()
    return media.endswith("/json") or media.endswith("+json")


def _read_structured(value: bytes | None) -> Event:
    """A record in the Kafka structured binding (JSON event format); ValueError when invalid."""
    try:
        document = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"structured CloudEvent is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError("structured CloudEvent is not a JSON object")
    spec_version = document.get("specversion")
    if spec_version not in SPEC_VERSIONS:
        raise ValueError(f"unknown CloudEvents spec version {spec_version!r}")
    attributes: dict[str, str] = {}
    for name, member in document.items():
        if name in ("data", "data_base64", "specversion") or member is None:
            continue
        if name in ("id", "source", "type", "subject", "time", "datacontenttype", "dataschema"):
            if not isinstance(member, str):
                raise ValueError(f"CloudEvent attribute {name} is not a string")
            attributes[name] = member
        else:
            attributes[name] = _json_attribute(member)
    content_type = attributes.pop("datacontenttype", None)
    if "data" in document and "data_base64" in document:
        raise ValueError("structured CloudEvent has both data and data_base64")
    data: bytes | None = None
    if isinstance(document.get("data_base64"), str):
        try:
            data = base64.b64decode(document["data_base64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"data_base64 is not base64: {exc}") from None
    elif document.get("data") is not None:
        raw = document["data"]
        if isinstance(raw, str) and not is_json_content_type(content_type):
            data = raw.encode("utf-8")
        else:
            data = json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Event(_ordered(str(spec_version), _validated(attributes)), data, content_type)


def _wrapped(record: Record, context: SourceContext) -> Event:
    """A record that is not a CloudEvent, as EKB's InvalidCloudEventInterceptor builds one."""
    if record.value is None:
        # EKB reads a null value as a header-only CloudEvent; when it is none, it discards it.
        raise UnmappableRecord("record has no value and its headers are not a CloudEvent")
    attributes = {
        "specversion": "1.0",
        "id": f"partition:{record.partition}/offset:{record.offset}",
        "source": context.source(record.topic),
        "type": PLAIN_EVENT_TYPE,
        "subject": f"partition:{record.partition}#{record.offset}",
    }
    if record.timestamp_ms is not None:
        attributes["time"] = java_time(record.timestamp_ms)
    if record.key:  # an empty key deserializes to null: no key
        rendered = key_attribute(record.key, context.key_type)
        attributes["partitionkey"] = rendered
        attributes["key"] = rendered
    content_type = None
    for name, value in record.headers.items():
        if name.lower() == CONTENT_TYPE_HEADER:
            content_type = _text(value).lower()
            continue
        attributes[attribute_name(name)] = _text(value)
    return Event(attributes, record.value or None, content_type)


def _read(record: Record, context: SourceContext) -> Event:
    content_type = record.headers.get(CONTENT_TYPE_HEADER)
    try:
        if content_type is not None and _text(content_type).split(";")[0].strip() == STRUCTURED_CONTENT_TYPE:
            return _read_structured(record.value)
        if "ce_specversion" in record.headers:
            return _read_binary(record)
    except ValueError as exc:
        if record.value is None:
            # A null value is read from the headers alone; EKB discards it when they fail.
            raise UnmappableRecord(f"record has no value and is not a valid CloudEvent: {exc}") from None
        # Not a valid CloudEvent: EKB wraps it like any plain record.
    return _wrapped(record, context)


def to_event(record: Record, context: SourceContext) -> Event:
    """The event EKB's KafkaSource sends for ``record``; ``UnmappableRecord`` when there is none."""
    event = _read(record, context)
    return event.with_extensions({
        PARTITION_EXTENSION: str(record.partition),
        OFFSET_EXTENSION: str(record.offset),
        **context.extensions,
    })


def fallback_event(record: Record, context: SourceContext) -> Event:
    """The plain wrapper with nothing but the record's coordinates and value: always sendable.

    What a dead letter carries when the record's own event could not be made or encoded.
    """
    return Event({
        "specversion": "1.0",
        "id": f"partition:{record.partition}/offset:{record.offset}",
        "source": context.source(record.topic),
        "type": PLAIN_EVENT_TYPE,
        "subject": f"partition:{record.partition}#{record.offset}",
        PARTITION_EXTENSION: str(record.partition),
        OFFSET_EXTENSION: str(record.offset),
    }, record.value or None)


# ---------------------------------------------------------------------------------- writing


class EncodingError(ValueError):
    """An event that cannot be written as an HTTP request; the message is the reason."""


def binary_request(event: Event) -> tuple[dict[str, str], bytes]:
    """The binary-mode HTTP request: ``ce-`` headers (percent-encoded), Content-Type, body."""
    headers = {f"ce-{name}": percent_encode(value) for name, value in event.attributes.items()}
    if event.content_type is not None:
        # Content-Type is an ordinary HTTP header: it cannot be percent-encoded, only refused.
        if not _HEADER_VALUE.fullmatch(event.content_type):
            raise EncodingError(f"datacontenttype {event.content_type!r} is not a valid HTTP header value")
        headers["content-type"] = event.content_type
    return headers, event.data or b""


def to_structured(event: Event) -> dict[str, object]:
    """The event in the JSON event format (a batch member): data as JSON when it is, else base64."""
    structured: dict[str, object] = dict(event.attributes)
    if event.content_type is not None:
        structured["datacontenttype"] = event.content_type
    if event.data:
        if is_json_content_type(event.content_type):
            try:
                structured["data"] = json.loads(event.data)
                return structured
            except ValueError:
                pass
        structured["data_base64"] = base64.b64encode(event.data).decode("ascii")
    return structured


def batch_body(members: Sequence[Mapping[str, object]]) -> bytes:
    """A ``application/cloudevents-batch+json`` body of structured events."""
    return json.dumps(list(members), separators=(",", ":")).encode("utf-8")
