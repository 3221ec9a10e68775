"""AsyncKafkaPublisher against the real (Tansu) broker on 127.0.0.1: own acks per call, clear errors, no hang."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from functions.adapters.kafka import KafkaPublisher
from functions.adapters.kafka_async import AsyncKafkaPublisher
from functions.adapters.memory import MemoryResultStore
from functions.config import Settings
from functions.homepage import create_app
from functions.kafka import KafkaSettings
from functions.wiring import Services, process_config
from handlers.model import Barrage
from handlers.ports import PublishError, SystemClock
from local.broker import LocalBroker
from tests.integration.functions.test_kafka_publisher import HANG_BOUND_S, make_barrages, read_all
from tests.kafka_reading import read_as_dispatcher

pytestmark = pytest.mark.integration


@pytest.fixture
def topic_publisher(kafka_broker: LocalBroker) -> Iterator[tuple[KafkaPublisher, str]]:
    topic = kafka_broker.new_topic(partitions=3)
    settings = KafkaSettings(servers=(kafka_broker.bootstrap,), topic=topic, publish_timeout_s=15)
    with KafkaPublisher(settings) as publisher:
        yield publisher, topic


def test_concurrent_calls_each_await_their_own_acks(kafka_broker: LocalBroker,
                                                    topic_publisher: tuple[KafkaPublisher, str]) -> None:
    publisher, topic = topic_publisher
    aio = AsyncKafkaPublisher(publisher)
    calls = [make_barrages(3, rooms=2, tag=f"c{i:03d}") for i in range(100)]

    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        finished: list[float] = []

        async def one(barrages: list[Barrage]) -> None:
            await aio.publish_many(barrages)
            finished.append(loop.time())

        started = loop.time()
        # Every call in flight at once on one loop and one producer: none waits for another's batch.
        await asyncio.wait_for(asyncio.gather(*(one(b) for b in calls)), HANG_BOUND_S)
        return [t - started for t in finished]

    durations = asyncio.run(scenario())
    assert len(durations) == 100
    assert aio.poller.running  # one poller thread serves all of them
    records = read_all(kafka_broker.bootstrap, topic, expected=300, partitions=3)
    assert sorted(read_as_dispatcher(r)[1].id for r in records) == sorted(b.id for c in calls for b in c)
    aio.close()
    assert not aio.poller.running


def test_one_calls_failure_is_its_own(kafka_broker: LocalBroker, topic_publisher: tuple[KafkaPublisher, str]) -> None:
    publisher, topic = topic_publisher
    aio = AsyncKafkaPublisher(publisher)
    good = make_barrages(2, rooms=1, tag="good")
    bad = make_barrages(2, rooms=1, tag="bad")

    async def scenario() -> list[Any]:
        return list(await asyncio.gather(
            aio.publish_many(good),
            aio.publish_many(bad, extensions={"NOT VALID": "x"}),  # cannot be encoded
            return_exceptions=True,
        ))

    outcome = asyncio.run(scenario())
    assert outcome[0] is None
    assert isinstance(outcome[1], PublishError)
    assert set(outcome[1].failed) == {b.id for b in bad}
    assert all(reason.startswith("cannot encode") for reason in outcome[1].failed.values())
    records = read_all(kafka_broker.bootstrap, topic, expected=2, partitions=3)
    assert sorted(read_as_dispatcher(r)[1].id for r in records) == sorted(b.id for b in good)
    aio.close()


def test_a_stopped_broker_is_a_clear_error_within_the_timeout() -> None:
    timeout_s = 3.0
    with LocalBroker(topics=["barrage-info"], partitions=3) as own_broker:
        publisher = KafkaPublisher(KafkaSettings(servers=(own_broker.bootstrap,), publish_timeout_s=timeout_s))
        aio = AsyncKafkaPublisher(publisher)
        asyncio.run(aio.publish_many(make_barrages(3, rooms=1)))  # connected and working
        own_broker.stop()
        barrages = make_barrages(10, rooms=2)

        async def scenario() -> tuple[PublishError, float, float]:
            loop = asyncio.get_running_loop()
            ticks = 0

            async def heartbeat() -> None:  # proves the loop is free while the publish waits
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.05)
                    ticks += 1

            beating = asyncio.create_task(heartbeat())
            started = loop.time()
            with pytest.raises(PublishError) as caught:
                await asyncio.wait_for(aio.publish_many(barrages), HANG_BOUND_S)
            elapsed = loop.time() - started
            beating.cancel()
            return caught.value, elapsed, ticks * 0.05

        error, elapsed, beat_s = asyncio.run(scenario())
    assert set(error.failed) == {b.id for b in barrages}
    assert all(reason for reason in error.failed.values())
    assert "not published" in str(error)
    assert elapsed < timeout_s + 2.0, f"took {elapsed:.1f}s for a {timeout_s}s timeout"
    assert beat_s > elapsed * 0.5, "the event loop was blocked while waiting for the broker"
    publisher.close(timeout_s=0)


def test_a_broker_never_reachable_is_an_error_not_a_hang() -> None:
    with LocalBroker() as gone:  # reserve a loopback port that then has nobody listening
        address = gone.bootstrap
    publisher = KafkaPublisher(KafkaSettings(servers=(address,), publish_timeout_s=2.0))
    aio = AsyncKafkaPublisher(publisher)
    barrages = make_barrages(3, rooms=1)
    started = time.monotonic()
    with pytest.raises(PublishError) as caught:
        asyncio.run(asyncio.wait_for(aio.publish_many(barrages), HANG_BOUND_S))
    assert time.monotonic() - started < 2.0 + 2.0
    assert set(caught.value.failed) == {b.id for b in barrages}
    publisher.close(timeout_s=0)
    assert not aio.poller.running  # closing the publisher stopped its poller first


def test_the_homepage_publishes_through_the_async_path(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    topic = kafka_broker.new_topic(partitions=3)
    settings = Settings.from_environ({"KAFKA_SERVER": kafka_broker.bootstrap, "KAFKA_TOPIC": topic,
                                      "BARRAGE_DB": str(tmp_path / "unused.db")})
    publisher = KafkaPublisher(KafkaSettings(servers=(kafka_broker.bootstrap,), topic=topic))
    store = MemoryResultStore()
    services = Services(settings, store, publisher, SystemClock(), process_config(settings),
                        closers=[publisher.close])
    app = create_app(services)
    assert isinstance(app.state.publisher, AsyncKafkaPublisher)
    room = f"kafka-{uuid.uuid4().hex[:6]}"
    with TestClient(app) as client:
        answers = [client.post("/api/barrages", json={"room": room, "user": "u", "text": f"m{i}"}) for i in range(5)]
    assert [a.status_code for a in answers] == [202] * 5
    ids = {a.json()["accepted"][0]["id"] for a in answers}
    records = read_all(kafka_broker.bootstrap, topic, expected=5, partitions=3)
    assert {read_as_dispatcher(r)[1].id for r in records} == ids
    services.close()
    assert not app.state.publisher.poller.running


def test_the_homepage_answers_503_when_the_broker_is_gone(tmp_path: Path) -> None:
    with LocalBroker() as gone:
        address = gone.bootstrap
    settings = Settings.from_environ({"KAFKA_SERVER": address, "BARRAGE_DB": str(tmp_path / "unused.db")})
    publisher = KafkaPublisher(KafkaSettings(servers=(address,), publish_timeout_s=2.0))
    services = Services(settings, MemoryResultStore(), publisher, SystemClock(), process_config(settings),
                        closers=[lambda: publisher.close(timeout_s=0)])
    app = create_app(services)
    with TestClient(app) as client:
        started = time.monotonic()
        answer = client.post("/api/barrages", json={"room": "r", "user": "u", "text": "hello?"})
        elapsed = time.monotonic() - started
        assert client.get("/healthz").status_code == 200
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert "retry with the same ids" in error["message"]
    assert error["failed"][0]["reason"]
    assert elapsed < 2.0 + 2.0
    services.close()
