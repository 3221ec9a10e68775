"""The HomePage's ``AsyncPublisher``, chosen from the process's ``Publisher``.

- Kafka: ``AsyncKafkaPublisher`` on the same producer (one per process); each request awaits
  its own acknowledgements, no thread is held while it waits.
- Anything else (the in-process bus, which processes and stores right away; test doubles):
  the blocking publisher runs on the bounded pool, off the loop.

Tracing stays as the wiring configured it: a ``TracingPublisher``'s span is kept around the
awaited publish.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from functions.adapters.tracing import AsyncTracingPublisher, TracingPublisher
from functions.homepage.blocking import BlockingCalls
from handlers.model import Barrage
from handlers.ports import AsyncPublisher, Publisher


class ThreadedPublisher:
    """``AsyncPublisher`` over a blocking ``Publisher``: each call on the bounded pool."""

    def __init__(self, inner: Publisher, blocking: BlockingCalls) -> None:
        self.inner = inner
        self.blocking = blocking

    async def publish_many(self, barrages: Sequence[Barrage]) -> None:
        await self.blocking.run(self.inner.publish_many, barrages)


def async_publisher(publisher: Publisher, blocking: BlockingCalls) -> tuple[AsyncPublisher, Callable[[], None]]:
    """The awaitable publisher for ``publisher``, and what closes it (before the publisher closes)."""
    traced = publisher if isinstance(publisher, TracingPublisher) else None
    raw = traced.inner if traced is not None else publisher
    # Only a process that loaded the Kafka adapter can hold a KafkaPublisher: look it up rather
    # than import it, so the in-process bus never loads confluent-kafka.
    kafka = sys.modules.get("functions.adapters.kafka")
    if kafka is not None and isinstance(raw, kafka.KafkaPublisher):
        from functions.adapters.kafka_async import AsyncKafkaPublisher

        native = AsyncKafkaPublisher(raw)
        awaitable: AsyncPublisher = native
        if traced is not None:
            awaitable = AsyncTracingPublisher(native, traced.tracing, traced.destination)
        return awaitable, native.close
    return ThreadedPublisher(publisher, blocking), lambda: None
