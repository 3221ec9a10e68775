"""The ``AsyncPublisher`` port on the process's one confluent-kafka producer.

confluent-kafka 2.16.1 ships an asyncio producer (``confluent_kafka.aio.AIOProducer``), but it
does not serve here: it refuses message headers ("Headers are not supported in AIOProducer batch
mode"), and the CloudEvents binary binding *is* headers; it also holds records in its own buffer
for up to ``buffer_timeout`` (1 s) before handing them to librdkafka, a second of latency on
every single-barrage POST. So this module bridges the plain producer's delivery callbacks to
asyncio futures instead:

- ``produce()`` only queues locally and returns at once, so it is called on the event loop;
- one background thread per producer (``DeliveryPoller``) sits in ``poll()``, where librdkafka
  runs the delivery callbacks;
- each ``publish_many`` call counts its own records' reports and, when the last one is in,
  resolves its future with ``loop.call_soon_threadsafe`` (one wake-up per call, not per record).

Each caller thus awaits its own acknowledgements (acks=all, idempotent, as ``KafkaPublisher``),
within ``publish_timeout_s``, without a thread per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from functions.adapters.kafka import DEFAULT_TOPIC, KafkaPublisher
from handlers.model import Barrage
from handlers.ports import PublishError

_log = logging.getLogger(__name__)


class DeliveryPoller:
    """The thread that serves one producer's delivery callbacks (librdkafka runs them in poll())."""

    def __init__(self, publisher: KafkaPublisher, interval_s: float = 0.1) -> None:
        self._publisher = publisher
        # poll() returns as soon as it served an event, so the interval only bounds how long
        # stopping takes; it adds nothing to an acknowledgement's latency.
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ensure_running(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                thread = threading.Thread(target=self._run, name="kafka-delivery-poller", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                producer = self._publisher.producer()
            except RuntimeError:  # the publisher was closed
                return
            try:
                producer.poll(self._interval_s)
            except Exception:  # a callback that raised must not end delivery for everyone
                _log.exception("Kafka delivery poller: poll failed")

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()


class _Acks:
    """The delivery reports of one ``publish_many`` call, completed on the caller's event loop."""

    def __init__(self, expected: int, loop: asyncio.AbstractEventLoop) -> None:
        self._lock = threading.Lock()
        self._outstanding = expected
        self._closed = False
        self._loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.failed: dict[str, str] = {}
        self.acked: set[int] = set()

    def on_delivery(self, index: int, barrage_id: str, err: KafkaError | None, _msg: Any) -> None:
        # Runs on the poller thread (or any thread that happens to poll the shared producer).
        with self._lock:
            if self._closed:
                return
            if err is None:
                self.acked.add(index)
            else:
                self.failed.setdefault(barrage_id, f"{err.name()}: {err.str()}")
            self._outstanding -= 1
            last = self._outstanding == 0
        if last:
            self._wake()

    def not_sent(self) -> None:
        with self._lock:
            self._outstanding -= 1
            last = self._outstanding == 0
        if last:
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone; nobody is waiting any more
            self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def give_up(self) -> None:
        """The deadline passed (on the loop): stop waiting; unreported records count as unconfirmed."""
        self._resolve()

    def close(self) -> tuple[dict[str, str], set[int]]:
        """Stop taking reports; what arrived so far (failed by id, acked indexes)."""
        with self._lock:
            self._closed = True
            return dict(self.failed), set(self.acked)


class AsyncKafkaPublisher:
    """``AsyncPublisher`` on a ``KafkaPublisher``'s producer: the same records, settings and answers.

    Sharing the producer keeps one per process: the HomePage's requests await through this
    class while its load runs (threads) use ``KafkaPublisher.publish_many`` on the same client.
    """

    # How long a caller waits for the poller to make room when librdkafka's local queue is full.
    _QUEUE_FULL_WAIT_S = 0.005

    def __init__(self, publisher: KafkaPublisher, poller: DeliveryPoller | None = None) -> None:
        self.publisher = publisher
        self.poller = poller if poller is not None else DeliveryPoller(publisher)
        publisher.before_close(self.poller.stop)

    async def publish_many(self, barrages: Sequence[Barrage], *, extensions: Mapping[str, str] | None = None) -> None:
        if not barrages:
            return
        loop = asyncio.get_running_loop()
        timeout_s = self.publisher.settings.publish_timeout_s
        deadline = loop.time() + timeout_s
        producer = self.publisher.producer()
        self.poller.ensure_running()
        topic = self.publisher.settings.topic or DEFAULT_TOPIC  # as KafkaPublisher.publish_many
        acks = _Acks(len(barrages), loop)
        failed: dict[str, str] = {}
        try:
            for index, barrage in enumerate(barrages):
                reason = await self._produce(producer, topic, index, barrage, extensions, acks, deadline)
                if reason is not None:
                    acks.not_sent()
                    failed.setdefault(barrage.id, reason)
            remaining = deadline - loop.time()
            if remaining > 0:
                # A timer rather than wait_for: no extra task per call. When it fires first, the
                # records it did not hear about are reported as unconfirmed below.
                timer = loop.call_later(remaining, acks.give_up)
                try:
                    await acks.future
                finally:
                    timer.cancel()
        finally:
            reported_failed, acked = acks.close()
        for barrage_id, reason in reported_failed.items():
            failed.setdefault(barrage_id, reason)
        for index, barrage in enumerate(barrages):
            if index not in acked and barrage.id not in failed:
                failed[barrage.id] = (
                    f"not acknowledged within {timeout_s:g}s (broker unreachable or slow; outcome unknown)"
                )
        if failed:
            raise PublishError(failed)

    async def _produce(
        self,
        producer: Any,
        topic: str,
        index: int,
        barrage: Barrage,
        extensions: Mapping[str, str] | None,
        acks: _Acks,
        deadline: float,
    ) -> str | None:
        """Queue one record (never blocking the loop); the reason it could not be queued, or None."""
        try:
            message = self.publisher.encode(barrage, extensions)
        except Exception as exc:  # a bad hook or attribute fails this barrage, not the batch
            return f"cannot encode: {exc}"
        callback = functools.partial(acks.on_delivery, index, barrage.id)
        loop = asyncio.get_running_loop()
        while True:
            try:
                producer.produce(
                    topic, value=message.value, key=message.key, headers=message.headers, on_delivery=callback
                )
                return None
            except BufferError:
                # Local queue full: the poller thread drains it as reports come in.
                if loop.time() >= deadline:
                    return "local producer queue full until the publish timeout"
                await asyncio.sleep(self._QUEUE_FULL_WAIT_S)
            except KafkaException as exc:
                return f"cannot queue: {exc.args[0].str() if exc.args else exc}"

    def close(self) -> None:
        """Stop the poller; the producer itself belongs to (and is closed by) the ``KafkaPublisher``."""
        self.poller.stop()
