"""The processing core that every processor binding shares.

Bindings turn what they receive (an HTTP CloudEvent, a CloudEvents batch, an FC Kafka
trigger batch, a direct FC invocation) into ``DecodedEvent``s, call ``handle``, and map the
outcomes to what their platform understands: an HTTP status, or an exception that makes
Function Compute retry the batch. Decoding never raises for one bad event: the event is
marked with a permanent error, so the rest of a batch still flows.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from functions.adapters.tracing import Tracing, context_from
from handlers.model import Barrage, ValidationError, parse_barrage, parse_submission
from handlers.ports import Clock, ResultStore
from handlers.process import OutcomeStatus, ProcessConfig, ProcessOutcome, process

log = logging.getLogger("barrage.processor")

# Our publisher's events, and what a KafkaSource makes of a plain record.
BARRAGE_EVENT_TYPE = "barrage.sent"
KAFKA_SOURCE_EVENT_TYPE = "dev.knative.kafka.event"
ALIBABA_KAFKA_EVENT_TYPE = "alikafka:Topic:Message"
ACCEPTED_TYPES = frozenset({BARRAGE_EVENT_TYPE, KAFKA_SOURCE_EVENT_TYPE})

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
MAX_BATCH_EVENTS = 10_000
_REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")


class TransientProcessingError(RuntimeError):
    """Some records could not be stored for now; the platform should retry the batch."""

    def __init__(self, failed: Mapping[str, str]) -> None:
        first = next(iter(failed.items()), ("?", "?"))
        super().__init__(f"{len(failed)} record(s) not stored, retry; first {first[0]}: {first[1]}")
        self.failed = dict(failed)


class BadRequest(ValueError):
    """The whole request is unusable (not one event): HTTP 400."""


@dataclass(frozen=True)
class DecodedEvent:
    event_id: str
    barrage: Barrage | None = None
    error: str | None = None  # permanent: the event can never be processed
    # CloudEvent attributes and extensions (``traceparent`` among them) for tracing.
    attributes: Mapping[str, str] = field(default_factory=dict)


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
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("data", f"is not JSON: {exc}") from None
    if isinstance(value, dict) and "specversion" in value and "data" in value:
        if value.get("type") != BARRAGE_EVENT_TYPE:
            raise ValidationError("type", f"unsupported event type {value.get('type')!r}")
        return barrage_from_data(value.get("data"))
    return parse_barrage(value)


def decode_structured(event: object, position: int) -> DecodedEvent:
    """One structured-mode CloudEvent (a JSON object), as in a batch."""
    if not isinstance(event, dict):
        return DecodedEvent(f"#{position}", error="event is not a JSON object")
    event_id = str(event.get("id") or f"#{position}")
    missing = [name for name in _REQUIRED_ATTRIBUTES if not event.get(name)]
    if missing:
        return DecodedEvent(event_id, error=f"missing CloudEvent attribute {missing[0]}")
    attributes = {k: str(v) for k, v in event.items() if k not in ("data", "data_base64") and v is not None}
    if event.get("type") not in ACCEPTED_TYPES:
        return DecodedEvent(event_id, error=f"unsupported event type {event.get('type')!r}", attributes=attributes)
    data: Any = event.get("data")
    if "data_base64" in event:
        try:
            data = base64.b64decode(str(event["data_base64"]), validate=True)
        except ValueError:
            return DecodedEvent(event_id, error="data_base64 is not base64", attributes=attributes)
    try:
        return DecodedEvent(event_id, barrage_from_data(data), attributes=attributes)
    except ValidationError as exc:
        return DecodedEvent(event_id, error=str(exc), attributes=attributes)


def decode_binary(headers: Mapping[str, str], body: bytes) -> DecodedEvent:
    """A binary-mode CloudEvent: attributes in ``ce-`` headers, data in the body."""
    lowered = {k.lower(): v for k, v in headers.items()}
    attributes = {k[3:]: v for k, v in lowered.items() if k.startswith("ce-")}
    event_id = attributes.get("id", "#0")
    missing = [name for name in _REQUIRED_ATTRIBUTES if not attributes.get(name)]
    if missing:
        return DecodedEvent(event_id, error=f"missing CloudEvent attribute {missing[0]}", attributes=attributes)
    if attributes["type"] not in ACCEPTED_TYPES:
        return DecodedEvent(event_id, error=f"unsupported event type {attributes['type']!r}", attributes=attributes)
    try:
        return DecodedEvent(event_id, barrage_from_data(body), attributes=attributes)
    except ValidationError as exc:
        return DecodedEvent(event_id, error=str(exc), attributes=attributes)


def decode_http(headers: Mapping[str, str], body: bytes) -> tuple[list[DecodedEvent], bool]:
    """The events of one HTTP request and whether it was a batch."""
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type", "").split(";")[0].strip().lower()
    if "ce-specversion" in lowered:
        return [decode_binary(lowered, body)], False
    if content_type in (STRUCTURED_CONTENT_TYPE, BATCH_CONTENT_TYPE):
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        if content_type == STRUCTURED_CONTENT_TYPE:
            return [decode_structured(parsed, 0)], False
        if not isinstance(parsed, list):
            raise BadRequest("a CloudEvents batch must be a JSON array")
        if len(parsed) > MAX_BATCH_EVENTS:
            raise BadRequest(f"a batch holds at most {MAX_BATCH_EVENTS} events")
        return [decode_structured(event, i) for i, event in enumerate(parsed)], True
    raise BadRequest(
        "not a CloudEvent: expected ce-specversion headers (binary mode) or Content-Type "
        f"{STRUCTURED_CONTENT_TYPE} or {BATCH_CONTENT_TYPE}"
    )


def _record_headers(raw: object) -> dict[str, str]:
    """Kafka record headers as EventBridge delivers them: a list, or {"headers": [...]}."""
    if isinstance(raw, dict):
        raw = raw.get("headers", [])
    headers: dict[str, str] = {}
    if not isinstance(raw, list):
        return headers
    for item in raw:
        if not isinstance(item, dict):
            continue
        key, value = item.get("key"), item.get("value")
        if isinstance(value, list):  # bytes as a list of ints
            try:
                value = bytes(value).decode("utf-8")
            except (ValueError, TypeError):
                continue
        if isinstance(key, str) and isinstance(value, str):
            headers[key] = value
    return headers


def decode_kafka_record(record: Mapping[str, Any], event_id: str) -> DecodedEvent:
    """A Kafka record's ``data`` as the FC Kafka trigger delivers it."""
    headers = _record_headers(record.get("headers"))
    # Our publisher's records carry CloudEvent attributes as ce_ headers (Kafka binary binding).
    attributes = {k[3:]: v for k, v in headers.items() if k.startswith("ce_")}
    value = record.get("value")
    if value is None:
        return DecodedEvent(event_id, error="record has no value", attributes=attributes)
    if attributes.get("type") not in (None, BARRAGE_EVENT_TYPE):
        return DecodedEvent(event_id, error=f"unsupported event type {attributes['type']!r}", attributes=attributes)
    try:
        return DecodedEvent(attributes.get("id", event_id), barrage_from_data(value), attributes=attributes)
    except ValidationError as exc:
        return DecodedEvent(attributes.get("id", event_id), error=str(exc), attributes=attributes)


def decode_fc_event(payload: bytes, clock: Clock) -> list[DecodedEvent]:
    """What an FC event function receives: a Kafka trigger batch, or barrages invoked directly.

    Kafka trigger: a JSON array of CloudEvents (elements may be JSON strings) whose ``data``
    is the record, or of bare records (the RawData push format). Direct invocation: one
    barrage object or a list of them (ids and times are stamped when absent).
    """
    try:
        parsed = json.loads(payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"event is not valid JSON: {exc}") from None
    items = parsed if isinstance(parsed, list) else [parsed]
    if len(items) > MAX_BATCH_EVENTS:
        raise BadRequest(f"an event holds at most {MAX_BATCH_EVENTS} records")
    decoded = []
    now = clock.now_ms()
    for position, item in enumerate(items):
        if isinstance(item, str):
            try:
                item = json.loads(item)
            except ValueError:
                decoded.append(DecodedEvent(f"#{position}", error="element is a string but not JSON"))
                continue
        if not isinstance(item, dict):
            decoded.append(DecodedEvent(f"#{position}", error="element is not a JSON object"))
        elif "specversion" in item and isinstance(item.get("data"), dict) and "value" in item["data"]:
            decoded.append(decode_kafka_record(item["data"], str(item.get("id", f"#{position}"))))
        elif "specversion" in item:
            decoded.append(decode_structured(item, position))
        elif "value" in item and "topic" in item:
            event_id = f"{item.get('topic')}/{item.get('partition')}/{item.get('offset')}"
            decoded.append(decode_kafka_record(item, event_id))
        else:
            try:
                barrage = parse_submission(item, now)
                decoded.append(DecodedEvent(barrage.id, barrage))
            except ValidationError as exc:
                decoded.append(DecodedEvent(f"#{position}", error=str(exc)))
    return decoded


# -- handling --------------------------------------------------------------------------------


def handle(
    events: Sequence[DecodedEvent],
    store: ResultStore,
    clock: Clock,
    config: ProcessConfig,
    tracing: Tracing | None = None,
    parent_traceparent: str | None = None,
) -> list[EventOutcome]:
    """Process every decodable event in one batch; one outcome per event, in order.

    With tracing, each event gets a ``process`` span under its own trace (the event's
    ``traceparent``, or ``parent_traceparent`` — the delivery's HTTP header — for a single
    event); the batch's store write runs under the first and links the others.
    """
    valid = [(i, e.barrage) for i, e in enumerate(events) if e.barrage is not None]
    if tracing is None or not tracing.enabled or not valid:
        processed = process([b for _, b in valid], store, clock, config) if valid else []
    else:
        processed = _traced_process(events, valid, store, clock, config, tracing, parent_traceparent)
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
    parent_traceparent: str | None,
) -> list[ProcessOutcome]:
    from opentelemetry import trace

    spans = []
    for index, barrage in valid:
        own = events[index].attributes.get("traceparent")
        parent = context_from(parent_traceparent if len(events) == 1 and parent_traceparent else own)
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


def http_status(outcomes: Sequence[EventOutcome], batch: bool) -> int:
    """KafkaSource semantics: 2xx done, 400 never retry (dead-letter), 503 retry.

    A batch answers 503 when any event failed for now (the dispatcher retries the batch;
    stored events come back as duplicates) and 200 otherwise, with the rejected events
    listed in the body for the dispatcher to dead-letter one by one.
    """
    statuses = {o.status for o in outcomes}
    if OutcomeStatus.FAILED in statuses:
        return 503
    if not batch and OutcomeStatus.REJECTED in statuses:
        return 400
    return 200


def log_outcomes(outcomes: Sequence[EventOutcome]) -> None:
    for outcome in outcomes:
        if outcome.status in (OutcomeStatus.REJECTED, OutcomeStatus.FAILED):
            log.warning(
                "event %s (barrage %s) %s: %s",
                outcome.event_id,
                outcome.barrage_id,
                outcome.status.value,
                outcome.reason,
            )


def summary(outcomes: Sequence[EventOutcome]) -> dict[str, Any]:
    counts = {status.value: 0 for status in OutcomeStatus}
    for outcome in outcomes:
        counts[outcome.status.value] += 1
    return {**counts, "results": [o.to_dict() for o in outcomes]}
