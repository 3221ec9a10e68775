"""KafkaPublisher and KafkaRecordConsumer against the real (Tansu) broker on 127.0.0.1."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest
from cloudevents.kafka import KafkaMessage, from_binary
from confluent_kafka import Consumer, TopicPartition

from functions.adapters.kafka import EVENT_TYPE, KafkaPublisher
from functions.kafka import KafkaSettings
from handlers.model import Barrage
from handlers.ports import PublishError
from local.broker import LocalBroker
from local.kafka_consumer import ConsumedRecord, KafkaRecordConsumer
from tests.kafka_reading import read_as_dispatcher, read_as_fc

pytestmark = pytest.mark.integration

BASE_MS = 1_700_000_000_000
# Generous: only proves "does not hang", never measures speed.
HANG_BOUND_S = 30.0


def make_barrages(count: int, rooms: int, tag: str = "") -> list[Barrage]:
    tag = tag or uuid.uuid4().hex[:8]
    return [
        Barrage(
            id=f"{tag}-{i:05d}",
            room=f"room-{i % rooms}",
            user=f"user-{i % 7}",
            text=f"barrage number {i}",
            sent_at=BASE_MS + i,
            colour="#00ff00" if i % 2 else None,
        )
        for i in range(count)
    ]


def read_all(bootstrap: str, topic: str, expected: int, partitions: int) -> list[ConsumedRecord]:
    """Every record of ``topic`` from the beginning, without a consumer group (no join wait)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 20,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])  # offset 0 = beginning
    messages = []
    deadline = time.monotonic() + HANG_BOUND_S
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.5)
            for message in batch:
                assert message.error() is None, message.error()
                messages.append(ConsumedRecord.from_message(message))
            if len(messages) >= expected and not batch:
                break  # one empty poll past the expected count: nothing extra is coming
    finally:
        consumer.close()
    return messages


def barrage_of(record: ConsumedRecord) -> Barrage:
    """The barrage as FC's Kafka trigger would hand it to the processor."""
    return read_as_fc(record.headers, record.value, record.key, topic=record.topic, partition=record.partition,
                      offset=record.offset)[1]


@pytest.fixture
def publisher(kafka_broker: LocalBroker) -> Iterator[tuple[KafkaPublisher, str]]:
    topic = kafka_broker.new_topic(partitions=3)
    settings = KafkaSettings(servers=(kafka_broker.bootstrap,), topic=topic, publish_timeout_s=15)
    with KafkaPublisher(settings, extensions=lambda b: {"traceparent": f"00-{b.id}-01"}) as pub:
        yield pub, topic


def test_thousand_barrages_over_fifty_rooms_arrive_once_in_room_order(
    kafka_broker: LocalBroker, publisher: tuple[KafkaPublisher, str]
) -> None:
    pub, topic = publisher
    barrages = make_barrages(1000, rooms=50)
    for start in range(0, len(barrages), 100):  # as the HTTP handler would: batches, in order
        pub.publish_many(barrages[start : start + 100])

    messages = read_all(kafka_broker.bootstrap, topic, len(barrages), partitions=3)

    by_id = {b.id: b for b in barrages}
    seen: dict[str, int] = defaultdict(int)
    per_room: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    partition_of_room: dict[str, set[int]] = defaultdict(set)
    for message in messages:
        assert message.value is not None
        event = from_binary(KafkaMessage(message.headers, message.key, message.value))
        original = by_id[event["id"]]
        seen[original.id] += 1
        assert event.get_data() == original.to_dict()
        assert event["type"] == EVENT_TYPE
        assert event["source"] == "/barrage/homepage"
        assert event["traceparent"] == f"00-{original.id}-01"
        assert message.key == original.room.encode()
        per_room[original.room].append((message.partition, message.offset, original.id))
        partition_of_room[original.room].add(message.partition)
        # FC's Kafka trigger shape and the local dispatcher read what the SDK reads.
        record, barrage = read_as_fc(message.headers, message.value, message.key, topic=topic,
                                     partition=message.partition, offset=message.offset)
        assert barrage == original
        assert record.extensions["traceparent"] == f"00-{original.id}-01"
        delivered, barrage = read_as_dispatcher(message)
        assert barrage == original
        assert delivered.attributes["traceparent"] == f"00-{original.id}-01"

    assert len(messages) == len(barrages)
    assert set(seen) == set(by_id)
    assert all(count == 1 for count in seen.values())
    assert len(per_room) == 50
    for room, records in per_room.items():
        assert len(partition_of_room[room]) == 1, f"{room} spread over partitions"
        in_log_order = [barrage_id for _, _, barrage_id in sorted(records)]
        sent_order = [b.id for b in barrages if b.room == room]
        assert in_log_order == sent_order, f"{room} out of order"


def test_concurrent_callers_share_one_producer(
    kafka_broker: LocalBroker, publisher: tuple[KafkaPublisher, str]
) -> None:
    pub, topic = publisher
    batches = [make_barrages(50, rooms=5, tag=f"t{n}") for n in range(8)]
    errors: list[BaseException] = []

    def send(batch: list[Barrage]) -> None:
        try:
            for start in range(0, len(batch), 10):
                pub.publish_many(batch[start : start + 10])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_BOUND_S)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    messages = read_all(kafka_broker.bootstrap, topic, 400, partitions=3)
    ids = sorted(barrage_of(m).id for m in messages)
    assert ids == sorted(b.id for batch in batches for b in batch)


def test_full_local_queue_is_waited_out_not_dropped(kafka_broker: LocalBroker) -> None:
    topic = kafka_broker.new_topic(partitions=1)
    settings = KafkaSettings(servers=(kafka_broker.bootstrap,), topic=topic, publish_timeout_s=15)
    # A queue of 5 makes produce() raise BufferError over and over for a batch of 300.
    with KafkaPublisher(settings, extra_config={"queue.buffering.max.messages": 5}) as pub:
        barrages = make_barrages(300, rooms=3)
        pub.publish_many(barrages)
    messages = read_all(kafka_broker.bootstrap, topic, 300, partitions=1)
    assert [barrage_of(m) for m in messages] == barrages


def test_per_call_extensions_reach_the_record(kafka_broker: LocalBroker) -> None:
    topic = kafka_broker.new_topic(partitions=1)
    settings = KafkaSettings(servers=(kafka_broker.bootstrap,), topic=topic)
    with KafkaPublisher(settings, source="/barrage/test") as pub:
        pub.publish_many(make_barrages(2, rooms=1), extensions={"traceparent": "00-aa-bb-01"})
    messages = read_all(kafka_broker.bootstrap, topic, 2, partitions=1)
    attributes = [read_as_fc(m.headers, m.value, m.key)[0].attributes() for m in messages]
    assert [a["traceparent"] for a in attributes] == ["00-aa-bb-01"] * 2
    assert [a["source"] for a in attributes] == ["/barrage/test"] * 2


def test_a_bad_extension_fails_only_that_barrage(kafka_broker: LocalBroker) -> None:
    topic = kafka_broker.new_topic(partitions=1)
    settings = KafkaSettings(servers=(kafka_broker.bootstrap,), topic=topic)
    barrages = make_barrages(3, rooms=1)
    bad = barrages[1].id
    pub = KafkaPublisher(settings, extensions=lambda b: {"Bad-Name": "x"} if b.id == bad else {})
    with pub, pytest.raises(PublishError) as caught:
        pub.publish_many(barrages)
    assert set(caught.value.failed) == {bad}
    assert "encode" in caught.value.failed[bad]
    messages = read_all(kafka_broker.bootstrap, topic, 2, partitions=1)
    assert [barrage_of(m).id for m in messages] == [
        barrages[0].id,
        barrages[2].id,
    ]


def test_broker_stopped_fails_every_record_within_the_timeout() -> None:
    timeout_s = 3.0
    with LocalBroker(topics=["barrage-info"], partitions=3) as own_broker:
        settings = KafkaSettings(servers=(own_broker.bootstrap,), publish_timeout_s=timeout_s)
        pub = KafkaPublisher(settings)
        pub.publish_many(make_barrages(5, rooms=2))  # connected and working
        own_broker.stop()
        assert not own_broker.running

        barrages = make_barrages(20, rooms=4)
        started = time.monotonic()
        with pytest.raises(PublishError) as caught:
            pub.publish_many(barrages)
        elapsed = time.monotonic() - started
    # Nothing reported as published: every id is in `failed`, each with a reason.
    assert set(caught.value.failed) == {b.id for b in barrages}
    assert all(reason for reason in caught.value.failed.values())
    assert elapsed < timeout_s + 2.0, f"took {elapsed:.1f}s for a {timeout_s}s timeout"
    pub.close(timeout_s=0)


def test_broker_never_reachable_is_an_error_not_a_hang() -> None:
    with LocalBroker() as gone:  # reserve a loopback port that then has nobody listening
        address = gone.bootstrap
    settings = KafkaSettings(servers=(address,), publish_timeout_s=2.0)
    pub = KafkaPublisher(settings)
    barrages = make_barrages(3, rooms=1)
    started = time.monotonic()
    with pytest.raises(PublishError) as caught:
        pub.publish_many(barrages)
    assert time.monotonic() - started < 2.0 + 2.0
    assert set(caught.value.failed) == {b.id for b in barrages}
    assert "not published" in str(caught.value)
    pub.close(timeout_s=0)


def test_closed_publisher_refuses_to_publish(kafka_broker: LocalBroker) -> None:
    pub = KafkaPublisher(KafkaSettings(servers=(kafka_broker.bootstrap,), topic=kafka_broker.new_topic(1)))
    pub.close()
    with pytest.raises(RuntimeError, match="closed"):
        pub.publish_many(make_barrages(1, rooms=1))


def _drain(consumer: KafkaRecordConsumer, expected: int) -> list[ConsumedRecord]:
    records: list[ConsumedRecord] = []
    deadline = time.monotonic() + HANG_BOUND_S
    while len(records) < expected and time.monotonic() < deadline:
        records.extend(consumer.consume(100, 0.5))
    return records


def test_consumer_resumes_after_commit_and_redelivers_the_rest(kafka_broker: LocalBroker) -> None:
    topic = kafka_broker.new_topic(partitions=2)
    settings = KafkaSettings(servers=(kafka_broker.bootstrap,), topic=topic)
    barrages = make_barrages(40, rooms=20)
    with KafkaPublisher(settings) as pub:
        pub.publish_many(barrages)
    group = f"group-{uuid.uuid4().hex[:8]}"
    revoked: list[list[tuple[str, int]]] = []

    first = KafkaRecordConsumer(
        settings, group, initial_offset="earliest", on_revoke=lambda _c, parts: revoked.append(parts)
    )
    try:
        records = _drain(first, len(barrages))
        assert sorted(barrage_of(r).id for r in records) == sorted(b.id for b in barrages)
        # Process (and commit) only the first 3 records of each partition.
        by_partition: dict[int, list[ConsumedRecord]] = defaultdict(list)
        for record in records:
            by_partition[record.partition].append(record)
        assert len(by_partition) == 2
        processed = [r for part in by_partition.values() for r in sorted(part, key=lambda r: r.offset)[:3]]
        committed = first.commit(processed)
        assert committed == {(topic, p): min(r.offset for r in part) + 3 for p, part in by_partition.items()}
        assert first.committed(committed) == committed
    finally:
        first.close()
    assert revoked and sorted(revoked[-1]) == [(topic, 0), (topic, 1)]

    # A restarted member of the same group resumes after the commit: exactly the rest again.
    second = KafkaRecordConsumer(settings, group, initial_offset="earliest")
    try:
        redelivered = _drain(second, len(barrages) - len(processed))
        time_left = second.consume(100, 0.5)  # nothing more than the uncommitted ones
    finally:
        second.close()
    expected = {barrage_of(r).id for r in records} - {barrage_of(r).id for r in processed}
    assert sorted(barrage_of(r).id for r in redelivered) == sorted(expected)
    assert time_left == []


def test_latest_initial_offset_skips_what_came_before(kafka_broker: LocalBroker) -> None:
    topic = kafka_broker.new_topic(partitions=1)
    settings = KafkaSettings(servers=(kafka_broker.bootstrap,), topic=topic)
    old, new = make_barrages(3, rooms=1, tag="old"), make_barrages(2, rooms=1, tag="new")
    assigned = threading.Event()
    with KafkaPublisher(settings) as pub:
        # One call per record: Tansu 0.6.0 reports the end of a partition as the last *batch's*
        # base offset + 1 (see test_broker), so single-record batches keep "latest" exact.
        for barrage in old:
            pub.publish_many([barrage])
        consumer = KafkaRecordConsumer(settings, f"g-{uuid.uuid4().hex[:8]}", on_assign=lambda _c, _p: assigned.set())
        try:
            deadline = time.monotonic() + HANG_BOUND_S
            early: list[ConsumedRecord] = []
            while not consumer.assignment() and time.monotonic() < deadline:
                early.extend(consumer.consume(10, 0.2))
            assert assigned.is_set()
            # With "latest" the position is resolved lazily: make sure it is fixed before publishing.
            early.extend(consumer.consume(10, 0.5))
            pub.publish_many(new)
            records = early + _drain(consumer, len(new))
        finally:
            consumer.close()
    assert [barrage_of(r).id for r in records] == [b.id for b in new]


def test_consumer_returns_what_has_arrived_without_waiting_for_a_full_batch(kafka_broker: LocalBroker) -> None:
    # librdkafka's consume(n, timeout) holds a short batch until the timeout: a dispatcher asking for
    # 500 records would delay each of a trickle by its whole poll timeout.
    topic = kafka_broker.new_topic(partitions=1)
    settings = KafkaSettings(servers=(kafka_broker.bootstrap,), topic=topic)
    consumer = KafkaRecordConsumer(settings, f"g-{uuid.uuid4().hex[:8]}", initial_offset="earliest")
    try:
        with KafkaPublisher(settings) as pub:
            pub.publish_many(make_barrages(1, rooms=1, tag="warm"))
            assert len(_drain(consumer, 1)) == 1  # the group has formed and the partition is fetched
            timeout_s = 8.0
            pub.publish_many(make_barrages(1, rooms=1, tag="one"))
            started = time.monotonic()
            records = consumer.consume(500, timeout_s)
            waited = time.monotonic() - started
            assert [barrage_of(r).id for r in records] == ["one-00000"]
            assert waited < timeout_s / 2, f"one record waited {waited:.1f} s for a batch of 500"
            # What has arrived is taken together, not one record per call.
            pub.publish_many(make_barrages(30, rooms=1, tag="many"))
            time.sleep(0.5)  # fetched meanwhile
            assert len(consumer.consume(500, timeout_s)) == 30
    finally:
        consumer.close()
