"""The Kafka consumer of the local dispatcher and the benches: records detached from the client.

Not part of the function code (FC's and Knative's triggers consume for the function), so it lives
under ``local/`` and nothing in ``functions/`` imports it (tests/unit/test_layering.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from functions.kafka import ConfigValue, InitialOffset, KafkaSettings, consumer_config

__all__ = ["ConsumedRecord", "KafkaRecordConsumer", "RebalanceCallback", "TopicPartitionKey", "next_offsets"]

HeaderValue = str | bytes | None
Headers = Mapping[str, HeaderValue] | Sequence[tuple[str, HeaderValue]] | None

_log = logging.getLogger(__name__)


def _header_dict(headers: Headers) -> dict[str, bytes]:
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    # A header with a null value carries nothing the binding can use.
    return {
        name: value.encode("utf-8") if isinstance(value, str) else value for name, value in items if value is not None
    }


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
        subscribed = list(topics or ((settings.topic,) if settings.topic else ()))
        if not subscribed:
            raise ValueError("KafkaRecordConsumer: no topic (pass topics or set KafkaSettings.topic)")
        self._consumer: Any = consumer_factory(config)
        self._closed = False
        self._consumer.subscribe(subscribed, on_assign=self._assigned, on_revoke=self._revoked)

    def _assigned(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        if self._on_assign is not None:
            self._on_assign(self, [(p.topic, p.partition) for p in partitions])

    def _revoked(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        if self._on_revoke is not None:
            self._on_revoke(self, [(p.topic, p.partition) for p in partitions])

    def consume(self, max_records: int = 500, timeout_s: float = 1.0) -> list[ConsumedRecord]:
        """Up to ``max_records`` records: waits at most ``timeout_s`` for the first, then takes what
        is already fetched without waiting; raises on fatal errors."""
        # librdkafka's consume(n, timeout) returns only when n messages are there or the timeout is
        # out: a trickle of records would each wait the whole timeout (measured: 1 s for 1 s).
        messages = self._consumer.consume(1, timeout_s)
        if messages and max_records > 1:
            messages.extend(self._consumer.consume(max_records - 1, 0))
        records = []
        for message in messages:
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
