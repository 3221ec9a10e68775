"""Barrage's Kafka adapter: the ``Publisher`` port on confluent-kafka and the record encoder.

Settings and librdkafka configs are the generic layer's (``functions.kafka``); this module adds
what is barrage's: its event type, source and topic, the record layout and the ``Publisher`` port.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any, Protocol

from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage, to_binary
from confluent_kafka import KafkaError, KafkaException, Producer

from functions.kafka import ConfigValue, KafkaSettings, producer_config
from handlers.model import Barrage
from handlers.ports import PublishError

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_SOURCE",
    "DEFAULT_TOPIC",
    "EVENT_TYPE",
    "ExtensionHook",
    "KafkaPublisher",
    "encode_barrage",
    "encode_barrage_sdk",
    "publisher_from_config",
    "settings_from_config",
]

DEFAULT_TOPIC = "barrage-info"
EVENT_TYPE = "barrage.sent"
DEFAULT_SOURCE = "/barrage/homepage"
CONTENT_TYPE = "application/json"

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- codec

_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")
_OWN_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema", "data"}
    | {"partitionkey"}
)


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
    check; written out because it encodes about twice the records per second (bench/kafka_encode.py,
    BENCHMARKS.md): the SDK alone manages fewer than publish_many sends, which has a throughput
    target against a raw producer.
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

