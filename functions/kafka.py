"""Kafka for any app: connection settings, CloudEvents in the Kafka binary binding, a publisher.

``KafkaSettings`` says where Kafka is (``KAFKA_SERVER``; ``KAFKA_USER``/``KAFKA_PWD`` select
SASL_SSL, Alibaba Cloud's 9093 endpoint), and ``producer_config`` / ``consumer_config`` turn it into
librdkafka settings. ``RecordPublisher`` sends ``functions.records.Record``s as CloudEvents in
the binary binding (``ce_*`` headers, the data as value, ``partitionkey`` as key), encoded by the
cloudevents SDK, and returns once every record is acknowledged by all in-sync replicas, or raises
``PublishFailed`` naming each record that was not. A KafkaSource forwards such records as they
are, and the FC Kafka trigger's shapes read them back (``functions.bindings.kafka_record``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from functions.records import Record

__all__ = ["KafkaSettings", "PublishFailed", "RecordPublisher", "client_config", "consumer_config",
           "encode_record", "producer_config", "settings_from_environ"]

_log = logging.getLogger(__name__)

ConfigValue = str | int | float | bool


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Where and how to reach Kafka (``settings_from_environ`` reads the KAFKA_* variables).

    ``user`` and ``password`` together select SASL_SSL (Alibaba Cloud's 9093 endpoint);
    without them the connection is plaintext (the VPC's 9092 endpoint, the local broker).
    """

    servers: tuple[str, ...]
    topic: str = ""  # the default topic; publish() may name another
    user: str | None = None
    password: str | None = None
    ca_file: str | None = None
    sasl_mechanism: str = "PLAIN"
    # Alibaba's own client samples turn hostname checks off for their certificates; keep it
    # on unless an endpoint proves it needs that.
    verify_hostname: bool = True
    client_id: str = "functions"
    # publish_many's bound: an answer (success or PublishError) always comes within this.
    publish_timeout_s: float = 10.0
    # Each publish_many waits for its acks, so lingering only delays the HTTP answer; records
    # of concurrent callers still share batches while earlier requests are in flight.
    # (1 ms against 5 ms: about 20% more HomePage POSTs/s, measured with 4 keep-alive clients.)
    linger_ms: int = 1


def _present(value: str | None) -> bool:
    # An env var set to "" means "not configured", not "empty password".
    return value is not None and value != ""


def client_config(settings: KafkaSettings) -> dict[str, ConfigValue]:
    """librdkafka settings shared by producers, consumers and admin clients."""
    servers = [s.strip() for s in settings.servers if s.strip()]
    if not servers:
        raise ValueError("Kafka settings: no bootstrap server (KAFKA_SERVER is empty)")
    config: dict[str, ConfigValue] = {
        "bootstrap.servers": ",".join(servers),
        "client.id": settings.client_id,
    }
    has_user, has_password = _present(settings.user), _present(settings.password)
    if has_user != has_password:
        missing = "KAFKA_PWD (password)" if has_user else "KAFKA_USER (user)"
        raise ValueError(f"Kafka settings: SASL needs both KAFKA_USER and KAFKA_PWD; {missing} is missing")
    if not has_user:
        if _present(settings.ca_file):
            raise ValueError("Kafka settings: KAFKA_CA is only used with SASL_SSL; set KAFKA_USER and KAFKA_PWD too")
        config["security.protocol"] = "PLAINTEXT"
        return config
    if not settings.sasl_mechanism:
        raise ValueError("Kafka settings: SASL mechanism is empty")
    config.update(
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": settings.sasl_mechanism,
            "sasl.username": str(settings.user),
            "sasl.password": str(settings.password),
            "ssl.endpoint.identification.algorithm": "https" if settings.verify_hostname else "none",
        }
    )
    if _present(settings.ca_file):
        config["ssl.ca.location"] = str(settings.ca_file)
    else:
        # The wheels' bundled OpenSSL does not know the system CA path; let librdkafka find it.
        config["ssl.ca.location"] = "probe"
    return config


def producer_config(settings: KafkaSettings) -> dict[str, ConfigValue]:
    """An idempotent, acks=all producer whose deliveries resolve within the publish timeout."""
    if settings.publish_timeout_s <= 0:
        raise ValueError("Kafka settings: publish_timeout_s must be positive")
    timeout_ms = int(settings.publish_timeout_s * 1000)
    config = client_config(settings)
    config.update(
        {
            "acks": "all",
            "enable.idempotence": True,
            # librdkafka scans for expired messages about once a second: expire them a little
            # before our own deadline so callers get librdkafka's definitive answer.
            "message.timeout.ms": max(1, timeout_ms - min(1000, timeout_ms // 5)),
            "linger.ms": settings.linger_ms,
            # The Java client's partitioner: a room lands on the same partition whichever
            # client (or language) produced it.
            "partitioner": "murmur2_random",
            "socket.connection.setup.timeout.ms": max(1000, min(timeout_ms, 30000)),
        }
    )
    return config


InitialOffset = Literal["earliest", "latest"]


def consumer_config(
    settings: KafkaSettings, group_id: str, initial_offset: InitialOffset = "latest"
) -> dict[str, ConfigValue]:
    """Manual commits, and timings that let a group form in seconds (PLATFORM.md section 11)."""
    if initial_offset not in ("earliest", "latest"):
        raise ValueError(f"initial offset must be earliest or latest, not {initial_offset!r}")
    if not group_id:
        raise ValueError("consumer group id is empty")
    config = client_config(settings)
    config.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": initial_offset,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1500,
            # Tansu answers a fetch only when this runs out, new records or not (a real Kafka answers
            # at once): each record waits up to this long. 5 ms: send->stored p99 at 500/s 27 -> 16 ms.
            "fetch.wait.max.ms": 5,
        }
    )
    return config



def settings_from_environ(environ: Mapping[str, str], default_topic: str) -> KafkaSettings | None:
    """``KAFKA_SERVER`` (comma-separated host:port), ``KAFKA_TOPIC``, ``KAFKA_USER``/``KAFKA_PWD``,
    ``KAFKA_CA``; None when ``KAFKA_SERVER`` is unset. A bad value raises ``ValueError`` naming it."""
    def get(name: str) -> str | None:
        value = environ.get(name, "").strip()
        return value or None

    raw = get("KAFKA_SERVER")
    if raw is None:
        if get("KAFKA_USER") or get("KAFKA_PWD"):
            raise ValueError("KAFKA_SERVER: required when KAFKA_USER or KAFKA_PWD is set")
        return None
    servers = tuple(s.strip() for s in raw.split(",") if s.strip())
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"KAFKA_SERVER: {server!r} is not host:port")
    settings = KafkaSettings(servers, get("KAFKA_TOPIC") or default_topic, get("KAFKA_USER"), get("KAFKA_PWD"),
                             get("KAFKA_CA"))
    client_config(settings)  # checks the combination now, with the variables' names
    return settings


def encode_record(record: Record) -> tuple[bytes | None, bytes, list[tuple[str, str | bytes | None]]]:
    """``(key, value, headers)`` of the record in CloudEvents' Kafka binary binding, by the SDK."""
    from cloudevents.http import CloudEvent
    from cloudevents.kafka import to_binary

    attributes = record.attributes()
    attributes.pop("partitionkey", None)  # the key carries it (the binding's partitioning extension)
    data = record.data
    if data is not None and not isinstance(data, (bytes, bytearray)):
        data = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        attributes.setdefault("datacontenttype", "application/json")
    key = record.extensions.get("partitionkey")
    message = to_binary(CloudEvent(attributes, data), key_mapper=lambda _event: key,
                        data_marshaller=lambda value: value)
    return (message.key.encode("utf-8") if isinstance(message.key, str) else message.key,
            _bytes(message.value), [(name, _bytes(value)) for name, value in message.headers.items()])


def _bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


class PublishFailed(Exception):
    """Some records were not acknowledged; ``failed`` maps record id to why. The others were."""

    def __init__(self, failed: Mapping[str, str]) -> None:
        first = next(iter(failed.items()), ("?", "?"))
        super().__init__(f"{len(failed)} record(s) not published; first {first[0]}: {first[1]}")
        self.failed = dict(failed)


class RecordPublisher:
    """One producer per process; ``publish`` waits for its own records' acknowledgements only."""

    def __init__(self, settings: KafkaSettings, producer: Any = None) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        self._producer = producer or Producer(producer_config(settings))
        self._lock = threading.Lock()

    def publish(self, records: Sequence[Record], topic: str | None = None) -> None:
        from confluent_kafka import KafkaException

        target = topic or self.settings.topic
        if not target:
            raise ValueError("RecordPublisher.publish: no topic (set KAFKA_TOPIC or pass topic=)")
        pending: dict[str, str | None] = {}
        done = threading.Event()
        remaining = [len(records)]

        def on_delivery(record_id: str) -> Callable[[Any, Any], None]:
            def delivered(err: Any, _message: Any) -> None:
                with self._lock:
                    pending[record_id] = str(err) if err is not None else None
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        done.set()

            return delivered

        failed: dict[str, str] = {}
        for record in records:
            key, value, headers = encode_record(record)
            try:
                self._producer.produce(target, value=value, key=key, headers=list(headers),
                                       on_delivery=on_delivery(record.id))
            except (BufferError, KafkaException) as exc:
                failed[record.id] = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    remaining[0] -= 1
        if remaining[0] <= 0:
            done.set()
        deadline = time.monotonic() + self.settings.publish_timeout_s
        while not done.is_set() and time.monotonic() < deadline:
            self._producer.poll(0.002)  # serves the callbacks of every thread sharing the producer
        with self._lock:
            for record in records:
                if record.id in failed:
                    continue
                if record.id not in pending:
                    failed[record.id] = f"no acknowledgement within {self.settings.publish_timeout_s:g} s"
                elif pending[record.id] is not None:
                    failed[record.id] = str(pending[record.id])
        if failed:
            raise PublishFailed(failed)

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.flush(timeout_s)
