"""The dispatch engine: Kafka records -> HTTP sink, as Knative's KafkaSource delivers them.

- ``ordered``: one worker per partition, one request in flight; a retry blocks the partition.
- ``unordered``: a pool of ``max_in_flight`` workers shares the records.
- Retries only on 5xx, 404, 408, 409, 429 and transport errors, with the manifest's backoff;
  other statuses and exhausted retries go to the dead-letter sink (URL or DLQ topic) with the
  reason attached. Dead-letter delivery itself is retried until it succeeds: a record is
  either delivered or dead-lettered before its offset can be committed.
- Offsets are committed only up to the lowest record not yet finished, so a crash
  redelivers (the processor is idempotent) and never skips.
- Optional batches (``application/cloudevents-batch+json``) trade KafkaSource compatibility
  for throughput; the processor lists rejected members, which are dead-lettered one by one.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from functions.adapters.tracing import Tracing, context_from
from local.kafkasource.manifest import KafkaSourceSpec
from local.kafkasource.mapping import BATCH_CONTENT_TYPE, HttpEvent, Record, batch_body, to_http

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("barrage.dispatcher")

RETRYABLE_STATUSES = frozenset({404, 408, 409, 429})
MAX_ERROR_DATA = 1024
Partition = tuple[str, int]


def is_retryable(status: int | None) -> bool:
    """KafkaSource's rule; ``None`` is a transport error (refused, reset, timed out)."""
    return status is None or status >= 500 or status in RETRYABLE_STATUSES


@dataclass(frozen=True)
class DispatchOptions:
    sink_url: str
    dead_letter_url: str | None = None
    dead_letter_topic: str | None = None
    # 0: one event per request (KafkaSource's way). >0: batches of up to this many.
    batch_size: int = 0
    batch_linger_s: float = 0.005
    max_in_flight: int = 50  # unordered: KafkaSource's max.poll.records
    max_pending_per_partition: int = 2000
    key_type: str = "string"
    commit_interval_s: float = 0.2
    poll_batch: int = 500


class Consumer(Protocol):
    def consume(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Any]: ...
    def commit_offsets(self, offsets: dict[Partition, int]) -> None: ...
    def pause(self, partitions: Sequence[Partition]) -> None: ...
    def resume(self, partitions: Sequence[Partition]) -> None: ...
    def close(self) -> None: ...


class DeadLetterProducer(Protocol):
    def send(self, topic: str, record: Record, error_headers: dict[str, str]) -> None: ...


class SinkClient:
    """HTTP/1.1 keep-alive connections, one per worker thread and origin."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._local = threading.local()

    def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        parsed = urllib.parse.urlsplit(url)
        origin = (parsed.scheme, parsed.hostname or "127.0.0.1", parsed.port)
        connections: dict[Any, http.client.HTTPConnection] = self._local.__dict__.setdefault("connections", {})
        path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        for attempt in (1, 2):
            connection = connections.get(origin)
            if connection is None:
                factory = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
                connection = factory(origin[1], origin[2], timeout=self.timeout_s)
                connections[origin] = connection
            try:
                connection.request("POST", path, body=body, headers={**headers, "content-length": str(len(body))})
                response = connection.getresponse()
                data = response.read()
                if response.getheader("connection", "").lower() == "close":
                    connection.close()
                    connections.pop(origin, None)
                return response.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A kept-alive connection the server closed meanwhile: one fresh try.
                connection.close()
                connections.pop(origin, None)
                if attempt == 2:
                    raise
            except BaseException:
                connection.close()
                connections.pop(origin, None)
                raise
        raise AssertionError("unreachable")


class OffsetTracker:
    """Which offsets of one partition are finished; what can be committed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, bool] = {}  # insertion-ordered: offset -> finished
        self._next_commit: int | None = None
        self._committed: int | None = None

    def add(self, offset: int) -> None:
        with self._lock:
            self._pending[offset] = False

    def finish(self, offset: int) -> None:
        with self._lock:
            if offset in self._pending:
                self._pending[offset] = True
            while self._pending:
                first = next(iter(self._pending))
                if not self._pending[first]:
                    break
                del self._pending[first]
                self._next_commit = first + 1

    def outstanding(self) -> int:
        with self._lock:
            return len(self._pending)

    def to_commit(self) -> int | None:
        """The next offset to commit, when it moved since the last commit."""
        with self._lock:
            if self._next_commit is None or self._next_commit == self._committed:
                return None
            return self._next_commit

    def committed(self, offset: int) -> None:
        with self._lock:
            self._committed = offset


@dataclass
class Stats:
    delivered: int = 0
    retries: int = 0
    dead_lettered: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class Dispatcher:
    """One consumer of the group and its workers."""

    def __init__(
        self,
        spec: KafkaSourceSpec,
        options: DispatchOptions,
        consumer_factory: Callable[[Callable[..., None], Callable[..., None]], Consumer],
        dead_letter_producer: DeadLetterProducer | None = None,
        sleep: Callable[[float], bool] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.spec = spec
        self.tracing = tracing
        self.options = options
        self.stats = Stats()
        self._client = SinkClient(spec.delivery.timeout_s)
        self._dead_letter_producer = dead_letter_producer
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._trackers: dict[Partition, OffsetTracker] = {}
        self._queues: dict[Partition, queue.Queue[Record | None]] = {}
        self._revoked: set[Partition] = set()
        self._paused: set[Partition] = set()
        self._workers: dict[Partition | int, threading.Thread] = {}
        self._shared: queue.Queue[Record | None] = queue.Queue()
        self._busy: dict[Partition, int] = {}
        self._sleep = sleep or (lambda seconds: self._stopping.wait(seconds))
        self._consumer = consumer_factory(self._on_assign, self._on_revoke)
        if spec.ordering == "unordered":
            for index in range(max(1, options.max_in_flight)):
                self._start_worker(index, self._shared)

    # -- life cycle ------------------------------------------------------------------------

    def run(self, until: threading.Event) -> None:
        """Consume and dispatch until ``until`` is set; then drain in-flight work and commit."""
        last_commit = time.monotonic()
        try:
            while not until.is_set():
                records = self._consumer.consume(self.options.poll_batch, 0.05)
                for record in records:
                    self._enqueue(record)
                self._apply_backpressure()
                if time.monotonic() - last_commit >= self.options.commit_interval_s:
                    self._commit()
                    last_commit = time.monotonic()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        for work in [*self._queues.values(), self._shared]:
            work.put(None)
        for _ in range(len(self._workers)):
            self._shared.put(None)
        for thread in list(self._workers.values()):
            thread.join(self.spec.delivery.timeout_s + 5)
        self._commit()
        self._consumer.close()
        log.info("dispatcher stopped: %s", self.stats)

    # -- partitions ------------------------------------------------------------------------

    def _on_assign(self, _consumer: object, partitions: list[Partition]) -> None:
        with self._lock:
            for partition in partitions:
                self._revoked.discard(partition)
                self._trackers[partition] = OffsetTracker()
                self._busy[partition] = 0
                if self.spec.ordering == "ordered":
                    work: queue.Queue[Record | None] = queue.Queue()
                    self._queues[partition] = work
                    self._start_worker(partition, work)
        log.info("assigned %s", partitions)

    def _on_revoke(self, _consumer: object, partitions: list[Partition]) -> None:
        """Finish what is in flight on these partitions, commit it, forget the rest."""
        with self._lock:
            self._revoked.update(partitions)
        deadline = time.monotonic() + self.spec.delivery.timeout_s + 5
        while time.monotonic() < deadline and any(self._busy.get(p, 0) for p in partitions):
            time.sleep(0.01)
        self._commit(partitions)
        with self._lock:
            for partition in partitions:
                work = self._queues.pop(partition, None)
                if work is not None:
                    work.put(None)
                self._workers.pop(partition, None)
                self._trackers.pop(partition, None)
                self._busy.pop(partition, None)
                self._paused.discard(partition)
        log.info("revoked %s", partitions)

    def _start_worker(self, key: Partition | int, work: queue.Queue[Record | None]) -> None:
        thread = threading.Thread(target=self._work, args=(work,), name=f"dispatch-{key}", daemon=True)
        self._workers[key] = thread
        thread.start()

    def _enqueue(self, record: Record) -> None:
        partition = (record.topic, record.partition)
        tracker = self._trackers.get(partition)
        if tracker is None or partition in self._revoked:
            return  # not ours any more; the new owner will read it again
        tracker.add(record.offset)
        if self.spec.ordering == "ordered":
            self._queues[partition].put(record)
        else:
            self._shared.put(record)

    def _apply_backpressure(self) -> None:
        limit = self.options.max_pending_per_partition
        pause, resume = [], []
        for partition, tracker in list(self._trackers.items()):
            outstanding = tracker.outstanding()
            if partition not in self._paused and outstanding >= limit:
                pause.append(partition)
            elif partition in self._paused and outstanding <= limit // 2:
                resume.append(partition)
        if pause:
            self._consumer.pause(pause)
            self._paused.update(pause)
        if resume:
            self._consumer.resume(resume)
            self._paused.difference_update(resume)

    def _commit(self, only: Sequence[Partition] | None = None) -> None:
        offsets = {}
        for partition, tracker in list(self._trackers.items()):
            if only is not None and partition not in only:
                continue
            offset = tracker.to_commit()
            if offset is not None:
                offsets[partition] = offset
        if not offsets:
            return
        try:
            self._consumer.commit_offsets(offsets)
        except Exception as exc:  # the broker may be restarting; the next commit carries the offsets
            log.warning("commit failed, will retry: %s", exc)
            return
        for partition, offset in offsets.items():
            owner = self._trackers.get(partition)
            if owner is not None:
                owner.committed(offset)

    # -- delivery --------------------------------------------------------------------------

    def _take(self, work: queue.Queue[Record | None]) -> list[Record] | None:
        first = work.get()
        if first is None:
            return None
        unit = [first]
        if self.options.batch_size > 1:
            deadline = time.monotonic() + self.options.batch_linger_s
            while len(unit) < self.options.batch_size:
                try:
                    item = work.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    work.put(None)  # let the loop see the stop marker next
                    break
                unit.append(item)
        return unit

    def _work(self, work: queue.Queue[Record | None]) -> None:
        while True:
            unit = self._take(work)
            if unit is None:
                return
            live = [r for r in unit if (r.topic, r.partition) not in self._revoked]
            if not live or self._stopping.is_set():
                continue  # not finished, so not committed: redelivered later
            partitions = {(r.topic, r.partition) for r in live}
            with self._lock:
                for partition in partitions:
                    self._busy[partition] = self._busy.get(partition, 0) + 1
            try:
                if self._deliver(live):
                    for record in live:
                        tracker = self._trackers.get((record.topic, record.partition))
                        if tracker is not None:
                            tracker.finish(record.offset)
            except Exception:
                log.exception("dispatch failed; records stay uncommitted")
            finally:
                with self._lock:
                    for partition in partitions:
                        if partition in self._busy:
                            self._busy[partition] -= 1

    def _abandoned(self, records: Sequence[Record]) -> bool:
        return self._stopping.is_set() or any((r.topic, r.partition) in self._revoked for r in records)

    def _deliver(self, records: Sequence[Record]) -> bool:
        """Deliver or dead-letter every record; False when abandoned (stop or revoke)."""
        events = [
            to_http(r, self.spec.source_attribute(r.topic), self.options.key_type, self.spec.ce_extensions)
            for r in records
        ]
        if self.tracing is None or not self.tracing.enabled:
            return self._deliver_events(records, events)
        # One delivery span per record, each in the record's own trace (its traceparent).
        spans = [self._delivery_span(record, event) for record, event in zip(records, events, strict=True)]
        traced = [
            replace(event, headers={**event.headers, **_w3c(span, self.options.batch_size > 1)})
            for event, span in zip(events, spans, strict=True)
        ]
        try:
            delivered = self._deliver_events(records, traced)
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.end()
            raise
        for span in spans:
            span.set_attribute("knative.delivered", delivered)
            span.end()
        return delivered

    def _delivery_span(self, record: Record, event: HttpEvent) -> Span:
        from opentelemetry import trace

        assert self.tracing is not None
        parent = context_from(event.headers.get("ce-traceparent") or event.headers.get("ce-kafkaheadertraceparent"))
        return self.tracing.tracer.start_span(
            f"deliver {record.topic}",
            context=parent,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "messaging.kafka.partition": record.partition,
                "messaging.kafka.offset": record.offset,
                "cloudevents.event_id": event.event_id,
                "url.full": self.options.sink_url,
            },
        )

    def _deliver_events(self, records: Sequence[Record], events: Sequence[HttpEvent]) -> bool:
        batch = self.options.batch_size > 1
        if batch:
            headers, body = {"content-type": BATCH_CONTENT_TYPE}, batch_body(events)
        else:
            headers, body = events[0].headers, events[0].body
        attempt = 0
        while True:
            status, reply, error = self._post(self.options.sink_url, headers, body)
            if status is not None and 200 <= status < 300:
                self.stats.add(delivered=len(records))
                if batch:
                    return self._dead_letter_rejected(records, events, reply)
                return True
            if is_retryable(status) and attempt < self.spec.delivery.retry:
                attempt += 1
                self.stats.add(retries=1)
                if self._sleep(self.spec.delivery.backoff(attempt)) or self._abandoned(records):
                    return False
                continue
            reason = error or _reason(reply) or f"HTTP {status}"
            return all(
                self._dead_letter(record, event, status, reason, reply)
                for record, event in zip(records, events, strict=True)
            )

    def _post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int | None, bytes, str | None]:
        self.stats.add(requests=1)
        try:
            status, reply = self._client.post(url, headers, body)
            return status, reply, None
        except (OSError, http.client.HTTPException) as exc:
            return None, b"", f"{type(exc).__name__}: {exc}"

    def _dead_letter_rejected(self, records: Sequence[Record], events: Sequence[HttpEvent], reply: bytes) -> bool:
        """After a batch: dead-letter the members the processor rejected for good."""
        try:
            results = json.loads(reply).get("results", [])
        except (ValueError, AttributeError):
            return True
        ok = True
        for record, event, result in zip(records, events, results, strict=False):
            if isinstance(result, dict) and result.get("status") == "reject":
                ok = self._dead_letter(record, event, 400, str(result.get("reason", "rejected")), b"") and ok
        return ok

    def _dead_letter(self, record: Record, event: HttpEvent, status: int | None, reason: str, reply: bytes) -> bool:
        """Hand one record to the dead-letter sink, retrying until it takes it (or we stop)."""
        error_headers = {
            "knativeerrorcode": str(status if status is not None else 0),
            "knativeerrordest": self.options.sink_url,
            "knativeerrorreason": reason[:MAX_ERROR_DATA],
        }
        if reply:
            error_headers["knativeerrordata"] = base64.b64encode(reply[:MAX_ERROR_DATA]).decode()
        attempt = 0
        while True:
            try:
                if self.options.dead_letter_topic and self._dead_letter_producer is not None:
                    self._dead_letter_producer.send(self.options.dead_letter_topic, record, error_headers)
                elif self.options.dead_letter_url:
                    headers = {**event.headers, **{f"ce-{k}": v for k, v in error_headers.items()}}
                    dls_status, _, error = self._post(self.options.dead_letter_url, headers, event.body)
                    if dls_status is None or not 200 <= dls_status < 300:
                        raise OSError(error or f"dead-letter sink answered HTTP {dls_status}")
                else:
                    log.error("dropping %s (no dead-letter sink): %s", event.event_id, reason)
                    return True
                self.stats.add(dead_lettered=1)
                log.warning("dead-lettered %s: %s", event.event_id, reason)
                return True
            except Exception as exc:
                attempt += 1
                log.warning("dead-letter delivery of %s failed (%s); retrying", event.event_id, exc)
                if self._sleep(min(self.spec.delivery.backoff(attempt), 30.0)) or self._abandoned([record]):
                    return False


def _w3c(span: Span, batch: bool) -> dict[str, str]:
    """The span as a ``traceparent`` HTTP header; for a batch member, as its extension."""
    from opentelemetry import trace

    context = span.get_span_context()
    if not context.is_valid:
        return {}
    trace_id, span_id = trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)
    value = f"00-{trace_id}-{span_id}-{context.trace_flags:02x}"
    if not batch:
        # Binary mode: the event is forwarded as is; the hop travels in the HTTP header.
        return {"traceparent": value}
    # A batch has one HTTP request for many traces: each member carries its own hop.
    return {"ce-traceparent": value}


def _reason(reply: bytes) -> str:
    """The processor's error message, if the reply carries one."""
    try:
        parsed = json.loads(reply)
    except ValueError:
        return reply[:200].decode("utf-8", "replace")
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return ""
