"""Kafka adapters: the ``Publisher`` port on confluent-kafka, the record codec and a consumer helper.

Every barrage travels as one record in the CloudEvents Kafka *binary* binding: ``ce_*`` headers,
a JSON value and the room as key. Knative's KafkaSource forwards such a record as is (PLATFORM.md
section 5), so the attributes set here, ``traceparent`` included, reach the processor unchanged.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Protocol

from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage, from_binary, to_binary
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from functions.kafka import (
    ConfigValue,
    InitialOffset,
    KafkaSettings,
    client_config,
    consumer_config,
    producer_config,
)
from handlers.model import Barrage, ValidationError, parse_barrage
from handlers.ports import PublishError

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_SOURCE",
    "DEFAULT_TOPIC",
    "EVENT_TYPE",
    "ConsumedRecord",
    "DecodedBarrage",
    "ExtensionHook",
    "InvalidRecord",
    "KafkaPublisher",
    "KafkaRecordConsumer",
    "KafkaSettings",
    "client_config",
    "consumer_config",
    "decode_barrage",
    "encode_barrage",
    "encode_barrage_sdk",
    "producer_config",
    "publisher_from_config",
    "settings_from_config",
]

DEFAULT_TOPIC = "barrage-info"
EVENT_TYPE = "barrage.sent"
DEFAULT_SOURCE = "/barrage/homepage"
CONTENT_TYPE = "application/json"

HeaderValue = str | bytes | None
Headers = Mapping[str, HeaderValue] | Sequence[tuple[str, HeaderValue]] | None

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- codec

_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")
_OWN_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema", "data"}
    | {"partitionkey"}
)


class InvalidRecord(ValueError):
    """A Kafka record that is not a ``barrage.sent`` CloudEvent carrying a valid barrage."""


@dataclass(frozen=True, slots=True)
class DecodedBarrage:
    barrage: Barrage
    # Every CloudEvent attribute as a string, extensions (e.g. traceparent) included.
    attributes: dict[str, str] = field(default_factory=dict)


_BARRAGE_FIELDS = tuple(f.name for f in fields(Barrage))


@functools.lru_cache(maxsize=4096)
def _rfc3339_second(seconds: int) -> str:
    # Barrages arrive in bursts within the same second: formatting once per second is enough.
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _rfc3339_ms(epoch_ms: int) -> str:
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_rfc3339_second(seconds)}.{millis:03d}Z"


def _check_extensions(extensions: Mapping[str, str]) -> None:
    for name, value in extensions.items():
        if not _EXTENSION_NAME.fullmatch(name):
            raise ValueError(f"CloudEvent extension name {name!r} must be 1-20 characters of [a-z0-9]")
        if name in _OWN_ATTRIBUTES:
            raise ValueError(f"CloudEvent attribute {name!r} is set by the codec, not an extension")
        if not isinstance(value, str):
            raise ValueError(f"CloudEvent extension {name!r} must be a string")


_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _compact_json(data: Any) -> bytes:
    return _json_encode(data).encode("utf-8")


def _attributes(barrage: Barrage, source: str, extensions: Mapping[str, str] | None) -> dict[str, str]:
    attributes = {
        "specversion": "1.0",
        "type": EVENT_TYPE,
        "source": source,
        "id": barrage.id,
        "time": _rfc3339_ms(barrage.sent_at),
        "subject": barrage.room,
        "datacontenttype": CONTENT_TYPE,
        # The CE Kafka binding's partitioning extension: the binding makes it the record key.
        "partitionkey": barrage.room,
    }
    if extensions:
        _check_extensions(extensions)
        attributes.update(extensions)
    return attributes


def _data(barrage: Barrage) -> dict[str, Any]:
    # Same content as barrage.to_dict(); dataclasses.asdict deep-copies and was half the encoding cost.
    return {name: getattr(barrage, name) for name in _BARRAGE_FIELDS}


_CONTENT_TYPE_BYTES = CONTENT_TYPE.encode("ascii")
_EVENT_TYPE_BYTES = EVENT_TYPE.encode("ascii")


@functools.lru_cache(maxsize=64)
def _encoded(text: str) -> bytes:
    return text.encode("utf-8")


def encode_barrage_sdk(
    barrage: Barrage, *, source: str = DEFAULT_SOURCE, extensions: Mapping[str, str] | None = None
) -> KafkaMessage:
    """The record for one barrage built by the SDK's ``cloudevents.kafka.to_binary``.

    The reference for ``encode_barrage``, which must produce exactly the same message.
    """
    event = CloudEvent(_attributes(barrage, source, extensions), _data(barrage))
    return to_binary(event, data_marshaller=_compact_json)


def encode_barrage(
    barrage: Barrage, *, source: str = DEFAULT_SOURCE, extensions: Mapping[str, str] | None = None
) -> KafkaMessage:
    """The record for one barrage: CE binary mode, keyed by room so a room stays in order.

    Equal, message for message, to ``encode_barrage_sdk`` (``to_binary``), which the unit tests
    check; written out because the SDK path cost as much CPU as producing the record itself
    and publish_many has a throughput target against a raw producer.
    """
    room = barrage.room.encode("utf-8")
    headers = {
        "content-type": _CONTENT_TYPE_BYTES,
        "ce_specversion": b"1.0",
        "ce_type": _EVENT_TYPE_BYTES,
        "ce_source": _encoded(source),
        "ce_id": barrage.id.encode("utf-8"),
        "ce_time": _rfc3339_ms(barrage.sent_at).encode("ascii"),
        "ce_subject": room,
    }
    if extensions:
        _check_extensions(extensions)
        for name, value in extensions.items():
            headers["ce_" + name] = value.encode("utf-8")
    return KafkaMessage(headers, barrage.room, _compact_json(_data(barrage)))


def _header_dict(headers: Headers) -> dict[str, bytes]:
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    # A header with a null value carries nothing the binding can use.
    return {
        name: value.encode("utf-8") if isinstance(value, str) else value for name, value in items if value is not None
    }


def decode_barrage(headers: Headers, value: bytes | str | None, key: bytes | str | None = None) -> DecodedBarrage:
    """The reverse of ``encode_barrage``, for the processor; raises ``InvalidRecord``."""
    header_map = _header_dict(headers)
    if not any(name.lower() == "ce_specversion" for name in header_map):
        raise InvalidRecord("not a CloudEvent in Kafka binary mode (no ce_specversion header)")
    if value is None:
        raise InvalidRecord("record has no value")
    try:
        event = from_binary(KafkaMessage(header_map, key, value))
    except Exception as exc:  # the SDK raises several unrelated types for malformed input
        raise InvalidRecord(f"cannot decode CloudEvent: {exc}") from exc
    attributes = {
        name: val.decode("utf-8", "replace") if isinstance(val, bytes) else str(val)
        for name, val in event.get_attributes().items()
    }
    if attributes.get("type") != EVENT_TYPE:
        raise InvalidRecord(f"CloudEvent type {attributes.get('type')!r} is not {EVENT_TYPE!r}")
    try:
        barrage = parse_barrage(event.get_data())
    except ValidationError as exc:
        raise InvalidRecord(f"invalid barrage: {exc}") from exc
    if attributes.get("id") != barrage.id:
        raise InvalidRecord(f"CloudEvent id {attributes.get('id')!r} differs from barrage id {barrage.id!r}")
    return DecodedBarrage(barrage, attributes)


# --------------------------------------------------------------------------- publisher

ExtensionHook = Callable[[Barrage], Mapping[str, str]]
ProducerFactory = Callable[[dict[str, Any]], Any]


class _Deliveries:
    """Delivery reports for one publish_many call; callbacks may run on any polling thread."""

    def __init__(self, expected: int) -> None:
        self._lock = threading.Lock()
        self._outstanding = expected
        self._closed = False
        self.failed: dict[str, str] = {}
        self.acked: set[int] = set()

    def on_delivery(self, index: int, barrage_id: str, err: KafkaError | None, _msg: Any) -> None:
        with self._lock:
            if self._closed:  # the caller already gave up on this record and said so
                return
            self._outstanding -= 1
            if err is None:
                self.acked.add(index)
            else:
                self.failed.setdefault(barrage_id, f"{err.name()}: {err.str()}")

    def not_sent(self) -> None:
        with self._lock:
            self._outstanding -= 1

    def done(self) -> bool:
        with self._lock:
            return self._outstanding <= 0

    def close(self) -> None:
        with self._lock:
            self._closed = True


class KafkaPublisher:
    """``Publisher`` on one long-lived confluent-kafka producer; safe to share between threads.

    ``publish_many`` returns once the broker acknowledged every record (acks=all, idempotent)
    or raises ``PublishError`` naming each barrage it cannot vouch for, within
    ``settings.publish_timeout_s``.
    """

    # How long a waiting caller blocks in poll() before re-checking its own batch. Short: when
    # threads share the producer, another caller's poll() often serves this batch's reports and
    # this one sleeps out the whole interval (0.02 capped 8 HTTP threads near 400 calls/s).
    _POLL_S = 0.002

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        source: str = DEFAULT_SOURCE,
        extensions: ExtensionHook | None = None,
        extra_config: Mapping[str, ConfigValue] | None = None,
        producer_factory: ProducerFactory = Producer,
    ) -> None:
        self.settings = settings
        self.source = source
        self._extensions = extensions
        self._config: dict[str, Any] = {
            **producer_config(settings),
            **(extra_config or {}),
            "error_cb": self._on_error,
            # librdkafka's own log lines become logging records instead of raw stderr.
            "logger": _log,
        }
        self._factory = producer_factory
        self._lock = threading.Lock()
        self._fatal: str | None = None
        self._closed = False
        self._before_close: list[Callable[[], None]] = []
        self._producer: Any = producer_factory(self._config)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            _log.error("Kafka producer fatal error: %s", err.str())
            self._fatal = f"{err.name()}: {err.str()}"
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            _log.warning("Kafka: all brokers down (%s)", err.str())
        else:
            _log.debug("Kafka producer error: %s", err.str())

    def producer(self) -> Any:
        """The live confluent-kafka producer (replaced after a fatal error); RuntimeError once closed."""
        with self._lock:
            if self._closed:
                raise RuntimeError("KafkaPublisher is closed")
            if self._fatal is not None:
                # A fatal error (e.g. an idempotence violation) makes the producer unusable for
                # good: start a fresh one; records still in the old one are failed by their callers.
                _log.warning("replacing Kafka producer after fatal error: %s", self._fatal)
                old, self._producer, self._fatal = self._producer, self._factory(self._config), None
                old.purge()
                old.flush(0)
            return self._producer

    def publish_many(self, barrages: Sequence[Barrage], *, extensions: Mapping[str, str] | None = None) -> None:
        """Publish each barrage as one record; ``extensions`` add CE attributes to all of them."""
        if not barrages:
            return
        timeout_s = self.settings.publish_timeout_s
        deadline = time.monotonic() + timeout_s
        producer = self.producer()
        topic = self.settings.topic or DEFAULT_TOPIC
        deliveries = _Deliveries(len(barrages))
        failed: dict[str, str] = {}
        for index, barrage in enumerate(barrages):
            reason = self._produce(producer, topic, index, barrage, extensions, deliveries, deadline)
            if reason is not None:
                deliveries.not_sent()
                failed.setdefault(barrage.id, reason)
            elif index % 64 == 63:
                producer.poll(0)  # serve delivery reports as we go, keeping the queue short
        while not deliveries.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            producer.poll(min(remaining, self._POLL_S))
        deliveries.close()
        for barrage_id, reason in deliveries.failed.items():
            failed.setdefault(barrage_id, reason)
        for index, barrage in enumerate(barrages):
            if index not in deliveries.acked and barrage.id not in failed:
                failed[barrage.id] = (
                    f"not acknowledged within {timeout_s:g}s (broker unreachable or slow; outcome unknown)"
                )
        if failed:
            raise PublishError(failed)

    def encode(self, barrage: Barrage, extensions: Mapping[str, str] | None = None) -> KafkaMessage:
        """The record for ``barrage``: the extension hook's attributes, then ``extensions``."""
        merged = dict(self._extensions(barrage)) if self._extensions else {}
        merged.update(extensions or {})
        return encode_barrage(barrage, source=self.source, extensions=merged)

    def _produce(
        self,
        producer: Any,
        topic: str,
        index: int,
        barrage: Barrage,
        extensions: Mapping[str, str] | None,
        deliveries: _Deliveries,
        deadline: float,
    ) -> str | None:
        """Queue one record; the reason it could not be queued, or None."""
        try:
            message = self.encode(barrage, extensions)
        except Exception as exc:  # a bad hook or attribute fails this barrage, not the batch
            return f"cannot encode: {exc}"
        callback = functools.partial(deliveries.on_delivery, index, barrage.id)
        while True:
            try:
                producer.produce(
                    topic, value=message.value, key=message.key, headers=message.headers, on_delivery=callback
                )
                return None
            except BufferError:
                # Local queue full: serve delivery reports to make room, until the deadline.
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "local producer queue full until the publish timeout"
                producer.poll(min(remaining, 0.05))
            except KafkaException as exc:
                return f"cannot queue: {exc.args[0].str() if exc.args else exc}"

    def before_close(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` in ``close``, after the flush and before the producer is destroyed."""
        self._before_close.append(hook)

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait for outstanding records; returns how many are still not delivered."""
        limit = self.settings.publish_timeout_s if timeout_s is None else timeout_s
        return int(self._producer.flush(limit))

    def close(self, timeout_s: float | None = None) -> None:
        """Flush what is outstanding and stop; later publish_many calls raise RuntimeError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        remaining = self.flush(timeout_s)
        for hook in self._before_close:  # e.g. a delivery poller: no thread may poll a closed producer
            hook()
        if remaining:
            _log.warning("closing Kafka producer with %d record(s) undelivered", remaining)
            # Give up on them now (their callers already got or will get PublishError), so the
            # client's threads stop retrying a dead broker.
            self._producer.purge()
            self._producer.flush(0)
        self._producer.close()

    def __enter__(self) -> KafkaPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class KafkaConfigLike(Protocol):
    """What ``functions.config.KafkaConfig`` offers (structural, so this module needs no import of it)."""

    @property
    def servers(self) -> tuple[str, ...]: ...
    @property
    def topic(self) -> str: ...
    @property
    def user(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def ca_file(self) -> str | None: ...


def settings_from_config(config: KafkaConfigLike) -> KafkaSettings:
    return KafkaSettings(
        servers=tuple(config.servers),
        topic=config.topic,
        user=config.user,
        password=config.password,
        ca_file=config.ca_file,
        client_id="barrage",
    )


def publisher_from_config(config: KafkaConfigLike, **options: Any) -> KafkaPublisher:
    """The publisher ``functions.wiring`` builds; ``options`` go to ``KafkaPublisher``."""
    return KafkaPublisher(settings_from_config(config), **options)


# --------------------------------------------------------------------------- consumer


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """One Kafka record, detached from the client's message object."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int | None

    @classmethod
    def from_message(cls, message: Any) -> ConsumedRecord:
        """From a confluent-kafka ``Message`` without an error."""
        timestamp_type, timestamp = message.timestamp()
        key = message.key()
        value = message.value()
        return cls(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            key=key.encode("utf-8") if isinstance(key, str) else key,
            value=value.encode("utf-8") if isinstance(value, str) else value,
            headers=_header_dict(message.headers()),
            timestamp_ms=timestamp if timestamp_type != 0 else None,  # 0: TIMESTAMP_NOT_AVAILABLE
        )

    def decode(self) -> DecodedBarrage:
        return decode_barrage(self.headers, self.value, self.key)


TopicPartitionKey = tuple[str, int]


class RebalanceCallback(Protocol):
    def __call__(self, consumer: KafkaRecordConsumer, partitions: list[TopicPartitionKey]) -> None: ...


def next_offsets(records: Iterable[ConsumedRecord]) -> dict[TopicPartitionKey, int]:
    """Per partition, the offset to commit after processing ``records`` (highest + 1)."""
    offsets: dict[TopicPartitionKey, int] = {}
    for record in records:
        position = (record.topic, record.partition)
        offsets[position] = max(offsets.get(position, 0), record.offset + 1)
    return offsets


class KafkaRecordConsumer:
    """A group consumer with explicit, per-partition commits (what a KafkaSource-like dispatcher needs).

    Nothing is committed unless ``commit`` is called, so a crash redelivers what was not
    committed. ``on_revoke`` runs before partitions are taken away: the place to finish in-flight
    work and ``commit`` it. Not thread-safe: use it from one thread.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        topics: Sequence[str] | None = None,
        *,
        initial_offset: InitialOffset = "latest",
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        extra_config: Mapping[str, ConfigValue] | None = None,
        consumer_factory: Callable[[dict[str, Any]], Any] = Consumer,
    ) -> None:
        config: dict[str, Any] = {
            **consumer_config(settings, group_id, initial_offset),
            **(extra_config or {}),
            "logger": _log,
        }
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._consumer: Any = consumer_factory(config)
        self._closed = False
        self._consumer.subscribe(list(topics or (settings.topic or DEFAULT_TOPIC,)), on_assign=self._assigned,
                                 on_revoke=self._revoked)

    def _assigned(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        if self._on_assign is not None:
            self._on_assign(self, [(p.topic, p.partition) for p in partitions])

    def _revoked(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        if self._on_revoke is not None:
            self._on_revoke(self, [(p.topic, p.partition) for p in partitions])

    def consume(self, max_records: int = 500, timeout_s: float = 1.0) -> list[ConsumedRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout_s``; raises on fatal errors."""
        records = []
        for message in self._consumer.consume(max_records, timeout_s):
            err = message.error()
            if err is None:
                records.append(ConsumedRecord.from_message(message))
            elif err.fatal():
                raise KafkaException(err)
            elif err.code() != KafkaError._PARTITION_EOF:
                # Transient (broker restart, rebalance): librdkafka recovers on its own.
                _log.warning("Kafka consumer: %s", err.str())
        return records

    def commit(self, records: Iterable[ConsumedRecord]) -> dict[TopicPartitionKey, int]:
        """Commit, synchronously, the offsets after ``records``; returns what was committed."""
        offsets = next_offsets(records)
        self.commit_offsets(offsets)
        return offsets

    def commit_offsets(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Commit explicit next-offsets per partition; raises ``KafkaException`` on failure."""
        if not offsets:
            return
        partitions = [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        result = self._consumer.commit(offsets=partitions, asynchronous=False)
        failed = [p for p in result or () if p.error is not None]
        if failed:
            raise KafkaException(failed[0].error)

    def committed(
        self, partitions: Iterable[TopicPartitionKey], timeout_s: float = 5.0
    ) -> dict[TopicPartitionKey, int | None]:
        """The group's committed next-offset per partition (None when nothing is committed)."""
        result = self._consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=timeout_s)
        return {(p.topic, p.partition): (p.offset if p.offset >= 0 else None) for p in result}

    def assignment(self) -> list[TopicPartitionKey]:
        return [(p.topic, p.partition) for p in self._consumer.assignment()]

    def pause(self, partitions: Sequence[TopicPartitionKey]) -> None:
        """Stop fetching these partitions while still polling (keeps the group membership)."""
        self._consumer.pause([TopicPartition(t, p) for t, p in partitions])

    def resume(self, partitions: Sequence[TopicPartitionKey]) -> None:
        self._consumer.resume([TopicPartition(t, p) for t, p in partitions])

    def close(self) -> None:
        """Leave the group (running ``on_revoke`` first); uncommitted records will be redelivered."""
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def __enter__(self) -> KafkaRecordConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
