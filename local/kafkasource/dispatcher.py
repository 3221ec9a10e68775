"""The dispatch engine: Kafka records -> HTTP sink, as eventing-kafka-broker's KafkaSource delivers them.

- ``ordered``: one worker per partition, one request in flight; a retry blocks the partition.
- ``unordered``: a pool of ``max_in_flight`` workers shares the records.
- Retries only on 5xx, 404, 408, 409, 429 and transport errors, with the manifest's backoff;
  other statuses and exhausted retries go to the dead-letter sink (URL or DLQ topic) with EKB's
  extensions: ``knativeerrordest``; ``knativeerrorcode``, ``knativeerrordata`` (the reply, base64,
  at most 1024 bytes) and the reply's ``kne-*`` headers when there was a reply.
- The dead-letter sink gets the same retry policy. When it still fails, or there is none, the
  record is dropped as EKB drops it: logged, counted (``Stats.dropped``) and committed.
- No record can stall a partition: a record that cannot be made into an event or encoded as a
  request (EKB would discard it) is dead-lettered at once as ``mapping.fallback_event`` with
  the reason in ``knativeerrordata``; an unexpected failure while delivering does the same.
- Offsets are committed only up to the lowest record not yet finished, so a crash
  redelivers (the processor is idempotent) and never skips.
- Optional batches (``application/cloudevents-batch+json``) trade KafkaSource compatibility
  for throughput; the processor lists rejected members, which are dead-lettered one by one.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from functions.adapters.tracing import Tracing, context_from
from local.kafkasource.manifest import KafkaSourceSpec
from local.kafkasource.mapping import (
    BATCH_CONTENT_TYPE,
    OFFSET_EXTENSION,
    PARTITION_EXTENSION,
    Event,
    Record,
    SourceContext,
    batch_body,
    binary_request,
    fallback_event,
    to_event,
    to_structured,
)
from local.kafkasource.sink_client import Reply, SinkClient

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("barrage.dispatcher")

RETRYABLE_STATUSES = frozenset({404, 408, 409, 429})
MAX_ERROR_DATA = 1024
ERROR_HEADER_PREFIX = "kne-"  # reply headers EKB copies onto the dead letter, prefix stripped
Partition = tuple[str, int]
_EXTENSION_NAME = re.compile(r"[a-z0-9]+")


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
    key_type: str | None = None  # None: the manifest's key-type label
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
    dropped: int = 0  # neither delivered nor dead-lettered (no sink, or it kept failing): committed
    unmappable: int = 0  # records no event could be made of or encoded (then dead-lettered or dropped)
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
        self._context: SourceContext = spec.context(options.key_type)
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
                if self._finish_each(live):
                    for record in live:
                        tracker = self._trackers.get((record.topic, record.partition))
                        if tracker is not None:
                            tracker.finish(record.offset)
            finally:
                with self._lock:
                    for partition in partitions:
                        if partition in self._busy:
                            self._busy[partition] -= 1

    def _finish_each(self, records: Sequence[Record]) -> bool:
        """Deliver, dead-letter or drop every record; False only when abandoned (stop or revoke).

        A failure of our own must not hold the partition: the records then go to the dead letter
        with the reason, and if even that breaks they are dropped (logged, counted).
        """
        try:
            return self._deliver(records)
        except Exception as exc:
            log.exception("dispatch of %d record(s) failed; dead-lettering them", len(records))
            reason = f"dispatcher failed to deliver the record: {type(exc).__name__}: {exc}"
        try:
            return all([self._dead_letter_failure(record, reason) for record in records])
        except Exception:
            log.exception("dead-lettering failed; dropping %d record(s): %s", len(records), reason)
            self.stats.add(dropped=len(records))
            return True

    def _abandoned(self, records: Sequence[Record]) -> bool:
        return self._stopping.is_set() or any((r.topic, r.partition) in self._revoked for r in records)

    def _prepare(self, record: Record) -> _Prepared:
        """The record's event and request, or why there is none (any exception counts)."""
        try:
            event = to_event(record, self._context)
            if self.options.batch_size > 1:
                return _Prepared(record, event, member=to_structured(event))
            headers, body = binary_request(event)
            return _Prepared(record, event, headers=headers, body=body)
        except Exception as exc:
            return _Prepared(record, fallback_event(record, self._context), failure=f"{exc}")

    def _deliver(self, records: Sequence[Record]) -> bool:
        """Deliver or dead-letter every record; False when abandoned (stop or revoke)."""
        prepared = [self._prepare(r) for r in records]
        finished = True
        for unmappable in (p for p in prepared if p.failure is not None):
            self.stats.add(unmappable=1)
            log.warning("cannot map %s/%s@%s: %s", unmappable.record.topic, unmappable.record.partition,
                        unmappable.record.offset, unmappable.failure)
            finished = self._dead_letter(unmappable, None, unmappable.failure or "") and finished
        sendable = [p for p in prepared if p.failure is None]
        if not sendable:
            return finished
        if self.tracing is None or not self.tracing.enabled:
            return self._deliver_events(sendable) and finished
        # One delivery span per record, each in the record's own trace (its traceparent).
        spans = [self._delivery_span(p.record, p.event) for p in sendable]
        traced = [p.traced(_w3c(span)) for p, span in zip(sendable, spans, strict=True)]
        try:
            delivered = self._deliver_events(traced)
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.end()
            raise
        for span in spans:
            span.set_attribute("knative.delivered", delivered)
            span.end()
        return delivered and finished

    def _delivery_span(self, record: Record, event: Event) -> Span:
        from opentelemetry import trace

        assert self.tracing is not None
        parent = context_from(event.attributes.get("traceparent") or event.attributes.get("kafkaheadertraceparent"))
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

    def _deliver_events(self, prepared: Sequence[_Prepared]) -> bool:
        batch = self.options.batch_size > 1
        if batch:
            headers = {"content-type": BATCH_CONTENT_TYPE}
            body = batch_body([p.member or {} for p in prepared])
        else:
            headers, body = prepared[0].headers, prepared[0].body
        reply, error = self._send(self.options.sink_url, headers, body, prepared)
        if reply is None and error is None:
            return False  # abandoned while retrying
        if reply is not None and 200 <= reply.status < 300:
            self.stats.add(delivered=len(prepared))
            return self._dead_letter_rejected(prepared, reply.body) if batch else True
        reason = error or (_reason(reply.body) if reply is not None else "") or f"HTTP {reply.status if reply else '?'}"
        return all([self._dead_letter(p, reply, reason) for p in prepared])

    def _send(
        self, url: str, headers: dict[str, str], body: bytes, prepared: Sequence[_Prepared]
    ) -> tuple[Reply | None, str | None]:
        """POST with the delivery's retry policy: the last reply, or the transport error.

        ``(None, None)`` when abandoned (stop or revoke) during a backoff.
        """
        attempt = 0
        while True:
            reply, error = self._post(url, headers, body)
            if reply is not None and 200 <= reply.status < 300:
                return reply, None
            if not is_retryable(reply.status if reply is not None else None) or attempt >= self.spec.delivery.retry:
                return reply, error
            attempt += 1
            self.stats.add(retries=1)
            if self._sleep(self.spec.delivery.backoff(attempt)) or self._abandoned([p.record for p in prepared]):
                return None, None

    def _post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[Reply | None, str | None]:
        self.stats.add(requests=1)
        try:
            return self._client.post(url, headers, body), None
        except (OSError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def _dead_letter_rejected(self, prepared: Sequence[_Prepared], reply: bytes) -> bool:
        """After a batch: dead-letter the members the processor rejected for good."""
        try:
            results = json.loads(reply).get("results", [])
        except (ValueError, AttributeError):
            return True
        finished = True
        for member, result in zip(prepared, results, strict=False):
            if isinstance(result, dict) and result.get("status") == "reject":
                # The member's own verdict stands in for the reply it would have had alone.
                verdict = Reply(400, (), json.dumps(result, separators=(",", ":")).encode())
                finished = self._dead_letter(member, verdict, str(result.get("reason", "rejected"))) and finished
        return finished

    def _dead_letter_failure(self, record: Record, reason: str) -> bool:
        self.stats.add(unmappable=1)
        return self._dead_letter(_Prepared(record, fallback_event(record, self._context), failure=reason), None,
                                 reason)

    def _dead_letter(self, prepared: _Prepared, reply: Reply | None, reason: str) -> bool:
        """Hand one record to the dead-letter sink with the delivery's retry policy, else drop it.

        True when the record is finished (dead-lettered or dropped); False when abandoned.
        """
        extensions = dead_letter_extensions(self.options.sink_url, reply, prepared.failure)
        record, event = prepared.record, prepared.event
        name = f"{event.event_id} ({record.topic}/{record.partition}@{record.offset})"
        if self.options.dead_letter_topic and self._dead_letter_producer is not None:
            delivered, why = self._dead_letter_to_topic(record, extensions)
        elif self.options.dead_letter_url:
            delivered, why = self._dead_letter_to_url(prepared, extensions)
        else:
            delivered, why = False, "no dead-letter sink"
        if delivered is None:
            return False
        if delivered:
            self.stats.add(dead_lettered=1)
            log.warning("dead-lettered %s: %s", name, reason)
        else:
            self.stats.add(dropped=1)
            log.error("dropped %s: %s; dead letter failed: %s", name, reason, why)
        return True

    def _dead_letter_to_url(self, prepared: _Prepared, extensions: dict[str, str]) -> tuple[bool | None, str]:
        url = self.options.dead_letter_url
        assert url is not None
        try:
            headers, body = binary_request(prepared.event.with_extensions(extensions))
        except Exception as exc:  # the event itself cannot travel: its coordinates and value can
            headers, body = binary_request(fallback_event(prepared.record, self._context).with_extensions(
                {**extensions, "knativeerrordata": _error_data(str(exc).encode())}))
        headers.update(prepared.extra_headers)
        reply, error = self._send(url, headers, body, [prepared])
        if reply is None and error is None:
            return None, "abandoned"
        if reply is not None and 200 <= reply.status < 300:
            return True, ""
        return False, error or f"dead-letter sink answered HTTP {reply.status if reply else '?'}"

    def _dead_letter_to_topic(self, record: Record, extensions: dict[str, str]) -> tuple[bool | None, str]:
        assert self.options.dead_letter_topic is not None and self._dead_letter_producer is not None
        extensions = {PARTITION_EXTENSION: str(record.partition), OFFSET_EXTENSION: str(record.offset), **extensions}
        attempt = 0
        while True:
            try:
                self._dead_letter_producer.send(self.options.dead_letter_topic, record, extensions)
                return True, ""
            except Exception as exc:
                if attempt >= self.spec.delivery.retry:
                    return False, f"{type(exc).__name__}: {exc}"
                attempt += 1
                log.warning("dead-letter topic refused %s/%s@%s (%s); retrying", record.topic, record.partition,
                            record.offset, exc)
                if self._sleep(self.spec.delivery.backoff(attempt)) or self._abandoned([record]):
                    return None, "abandoned"


@dataclass(frozen=True)
class _Prepared:
    """One record on its way: its event, and the request (binary) or member (batch) made of it.

    ``failure`` set: the record's own event could not be made or encoded; ``event`` is then
    ``fallback_event`` and only the dead letter is sent.
    """

    record: Record
    event: Event
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    member: dict[str, object] | None = None
    failure: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)  # HTTP-only (traceparent of the hop)

    def traced(self, hop: str | None) -> _Prepared:
        if hop is None:
            return self
        if self.member is not None:  # a batch: each member carries its own hop
            return replace(self, member={**self.member, "traceparent": hop})
        # Binary mode: the event is forwarded as is; the hop travels in the HTTP header.
        return replace(self, headers={**self.headers, "traceparent": hop}, extra_headers={"traceparent": hop})


def _error_data(data: bytes) -> str:
    return base64.b64encode(data[:MAX_ERROR_DATA]).decode("ascii")


def dead_letter_extensions(destination: str, reply: Reply | None, failure: str | None) -> dict[str, str]:
    """EKB's dead-letter extensions; a local failure (no request made) puts its reason in the data."""
    extensions = {}
    if reply is not None:
        for name, value in reply.headers:
            if name.lower().startswith(ERROR_HEADER_PREFIX):
                extension = name[len(ERROR_HEADER_PREFIX):].lower()
                if _EXTENSION_NAME.fullmatch(extension):
                    extensions[extension] = value
        extensions["knativeerrorcode"] = str(reply.status)
        if reply.body:
            extensions["knativeerrordata"] = _error_data(reply.body)
    elif failure is not None:
        extensions["knativeerrordata"] = _error_data(failure.encode("utf-8"))
    extensions["knativeerrordest"] = destination
    return extensions


def _w3c(span: Span) -> str | None:
    """The span as a W3C ``traceparent`` value."""
    from opentelemetry import trace

    context = span.get_span_context()
    if not context.is_valid:
        return None
    trace_id, span_id = trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)
    return f"00-{trace_id}-{span_id}-{context.trace_flags:02x}"


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
