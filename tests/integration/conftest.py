"""Shared fixtures for integration tests: real servers on 127.0.0.1 only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.broker import LocalBroker


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[LocalBroker]:
    """One in-memory Kafka-compatible broker for the whole session.

    It yields a ``LocalBroker``: ``.bootstrap`` is "127.0.0.1:PORT" and
    ``.new_topic(partitions=3, prefix="test")`` creates and returns a uniquely named topic.
    Use your own fresh topics (and consumer group ids) so tests stay independent.
    """
    with LocalBroker() as broker:
        yield broker
