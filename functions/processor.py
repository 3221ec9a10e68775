"""Barrage's processor as an event function: records in, barrages cleaned and stored, an outcome each.

Whatever carried the records (a KafkaSource POST, a CloudEvents batch, the FC Kafka trigger, a
direct invocation) is the binding layer's business (``functions.bindings``); here each record
becomes a barrage or a permanent error, and the batch is processed in one store write. One bad
record never holds up the rest of the batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from functions.adapters.tracing import Tracing, context_from
from functions.app import Invocation, Outcome, Record, RecordError, duplicate, ok, reject, retry
from functions.bindings.direct import DIRECT_TYPE
from functions.wiring import Services
from handlers.model import Barrage, ValidationError, parse_barrage, parse_submission
from handlers.ports import Clock, ResultStore
from handlers.process import OutcomeStatus, ProcessConfig, ProcessOutcome, process

log = logging.getLogger("barrage.processor")

# Our publisher's events, and what a KafkaSource makes of a plain record.
BARRAGE_EVENT_TYPE = "barrage.sent"
KAFKA_SOURCE_EVENT_TYPE = "dev.knative.kafka.event"
ALIBABA_KAFKA_EVENT_TYPE = "alikafka:Topic:Message"
ACCEPTED_TYPES = frozenset({BARRAGE_EVENT_TYPE, KAFKA_SOURCE_EVENT_TYPE, ALIBABA_KAFKA_EVENT_TYPE})


@dataclass(frozen=True)
class DecodedEvent:
    event_id: str
    barrage: Barrage | None = None
    error: str | None = None  # permanent: the event can never be processed
    traceparent: str | None = None  # the event's own trace (its ``traceparent`` extension)


@dataclass(frozen=True)
class EventOutcome:
    event_id: str
    barrage_id: str | None
    status: OutcomeStatus
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "id": self.barrage_id, "status": self.status.value, "reason": self.reason}


# -- decoding -------------------------------------------------------------------------------


def _json_data(data: Any) -> Any:
    """Event data as JSON: already parsed, or bytes/str holding JSON."""
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8")
    if isinstance(data, str):
        return json.loads(data)
    return data


def barrage_from_data(data: Any) -> Barrage:
    """The barrage inside event data; a structured CloudEvent wrapped in a record is opened."""
    try:
        value = _json_data(data)
    except RecursionError:
        raise ValidationError("data", "is JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("data", f"is not JSON: {exc}") from None
    if isinstance(value, dict) and "specversion" in value and "data" in value:
        if value.get("type") != BARRAGE_EVENT_TYPE:
            raise ValidationError("type", f"unsupported event type {value.get('type')!r}")
        return barrage_from_data(value.get("data"))
    return parse_barrage(value)


def decode_record(record: Record, now_ms: int) -> DecodedEvent:
    """The barrage a record carries; a record that can never be one is marked with why."""
    traceparent = record.traceparent
    try:
        if record.type == DIRECT_TYPE:  # a barrage invoked directly: ids and times stamped when absent
            barrage = parse_submission(record.json(), now_ms)
            return DecodedEvent(record.id, barrage, traceparent=traceparent)
        if record.type not in ACCEPTED_TYPES:
            return DecodedEvent(record.id, error=f"unsupported event type {record.type!r}", traceparent=traceparent)
        return DecodedEvent(record.id, barrage_from_data(record.data), traceparent=traceparent)
    except (ValidationError, RecordError) as exc:
        return DecodedEvent(record.id, error=str(exc), traceparent=traceparent)


def process_records(records: Sequence[Record], invocation: Invocation[Services]) -> list[Outcome]:
    """The processor: every record's barrage cleaned and stored in one batch, an outcome per record."""
    services = invocation.deps
    decoded = [decode_record(record, services.clock.now_ms()) for record in records]
    # A binary CloudEvent delivered alone may carry its trace in the delivery's HTTP header only.
    alone = invocation.one_record_per_delivery or len(records) == 1
    parents = [invocation.delivery_headers(i).get("traceparent") if alone else None for i in range(len(records))]
    outcomes = handle(decoded, services.store, services.clock, services.process_config, services.tracing,
                      delivery_traceparents=parents)
    return [outcome_of(o) for o in outcomes]


def outcome_of(outcome: EventOutcome) -> Outcome:
    detail = {"barrage_id": outcome.barrage_id} if outcome.barrage_id else {}
    if outcome.status is OutcomeStatus.STORED:
        return ok(**detail)
    if outcome.status is OutcomeStatus.DUPLICATE:
        return duplicate(**detail)
    if outcome.status is OutcomeStatus.REJECTED:
        return reject(outcome.reason, **detail)
    return retry(outcome.reason, **detail)


# -- handling --------------------------------------------------------------------------------


def handle(
    events: Sequence[DecodedEvent],
    store: ResultStore,
    clock: Clock,
    config: ProcessConfig,
    tracing: Tracing | None = None,
    delivery_traceparents: Sequence[str | None] = (),
) -> list[EventOutcome]:
    """Process every decodable event in one batch; one outcome per event, in order.

    With tracing, each event gets a ``process`` span under its own trace: the HTTP ``traceparent``
    of the delivery that carried it alone (``delivery_traceparents``, in order), else the event's
    own; the batch's store write runs under the first and links the others.
    """
    valid = [(i, e.barrage) for i, e in enumerate(events) if e.barrage is not None]
    if tracing is None or not tracing.enabled or not valid:
        processed = process([b for _, b in valid], store, clock, config) if valid else []
    else:
        processed = _traced_process(events, valid, store, clock, config, tracing, delivery_traceparents)
    by_index = {i: outcome for (i, _), outcome in zip(valid, processed, strict=True)}
    outcomes = []
    for index, event in enumerate(events):
        outcome = by_index.get(index)
        if outcome is None:
            outcomes.append(EventOutcome(event.event_id, None, OutcomeStatus.REJECTED, event.error or "invalid"))
        else:
            outcomes.append(EventOutcome(event.event_id, outcome.id, outcome.status, outcome.reason))
    return outcomes


def _traced_process(
    events: Sequence[DecodedEvent],
    valid: list[tuple[int, Barrage]],
    store: ResultStore,
    clock: Clock,
    config: ProcessConfig,
    tracing: Tracing,
    delivery_traceparents: Sequence[str | None],
) -> list[ProcessOutcome]:
    from opentelemetry import trace

    spans = []
    for index, barrage in valid:
        own = events[index].traceparent
        delivered = delivery_traceparents[index] if index < len(delivery_traceparents) else None
        parent = context_from(delivered or own)
        span = tracing.tracer.start_span(
            tracing.config.process_span,
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={
                "barrage.id": barrage.id,
                "barrage.room": barrage.room,
                "cloudevents.event_id": events[index].event_id,
            },
        )
        spans.append(span)
    links = [trace.Link(span.get_span_context()) for span in spans[1:]]
    try:
        with trace.use_span(spans[0], end_on_exit=False):
            if links:
                with tracing.span("process batch", links=links, attributes={"barrage.count": len(valid)}):
                    processed = process([b for _, b in valid], store, clock, config)
            else:
                processed = process([b for _, b in valid], store, clock, config)
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
            span.end()
        raise
    for span, outcome in zip(spans, processed, strict=True):
        span.set_attribute("barrage.outcome", outcome.status.value)
        if outcome.status in (OutcomeStatus.FAILED, OutcomeStatus.REJECTED):
            span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.reason))
        span.end()
    return processed
