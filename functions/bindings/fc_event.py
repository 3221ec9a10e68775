"""FC event functions fed by EventBridge (the Kafka trigger, PLATFORM.md §4).

The payload is a JSON array, one element per record: a CloudEvent whose ``data`` is the Kafka
record (``eventSchema: CloudEvents``), the same as a JSON-encoded string, or the bare record
(RawData). Elements of other EventBridge sources (CloudEvents whose data is no Kafka record)
become records as they are. An element that is none of these is rejected on its own; the rest
of the batch still flows.

The answer: any record to retry raises ``RetryBatch``, so that the trigger delivers the whole
batch again (idempotent functions make the done records duplicates); otherwise the report is
returned, and every record's outcome is logged with the request id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from functions.bindings.kafka_record import record_from_kafka
from functions.records import BatchReport, Delivered, OutcomeKind, RecordError, Undecodable, record_from_structured

log = logging.getLogger("functions.fc.event")
MAX_RECORDS = 10_000  # the trigger's largest batch


class RetryBatch(RuntimeError):
    """Some records should be delivered again; raising it makes FC's trigger retry the batch."""

    def __init__(self, report: BatchReport) -> None:
        failed = report.retry
        first = failed[0] if failed else None
        detail = f"; first {first.id}: {first.outcome.reason}" if first else ""
        super().__init__(f"{len(failed)} of {len(report.results)} record(s) to retry{detail}")
        self.report = report


def _is_kafka_record(item: Any) -> bool:
    return isinstance(item, Mapping) and "value" in item and "topic" in item


def _element(item: Any) -> Any:
    if isinstance(item, str):
        try:
            return json.loads(item)
        except (ValueError, RecursionError):
            return item
    return item


def _looks_like_element(item: Any) -> bool:
    item = _element(item)
    return _is_kafka_record(item) or (isinstance(item, Mapping) and "specversion" in item)


def delivered(position: int, item: Any) -> Delivered:
    item = _element(item)
    try:
        if isinstance(item, Mapping) and "specversion" in item:
            data = item.get("data")
            if isinstance(data, Mapping) and _is_kafka_record(data):
                return record_from_kafka(data, item)
            return record_from_structured(item)
        if _is_kafka_record(item):
            return record_from_kafka(item)
    except RecordError as exc:
        ident = item.get("id") if isinstance(item, Mapping) else None
        return Undecodable(str(ident or f"#{position}"), str(exc))
    what = "a string that is not JSON" if isinstance(item, str) else "neither a CloudEvent nor a Kafka record"
    return Undecodable(f"#{position}", f"element {position} is {what}")


def log_report(report: BatchReport, context: Any) -> None:
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log
    candidate = getattr(context, "logger", None)
    if isinstance(candidate, (logging.Logger, logging.LoggerAdapter)):
        logger = candidate  # FC's context.logger stamps the request id on each line
    for result in report.results:
        outcome = result.outcome
        level = logging.INFO if outcome.done else logging.WARNING
        logger.log(level, "record %s %s%s", result.id, outcome.kind.value,
                   f": {outcome.reason}" if outcome.reason else "")


def answer(report: BatchReport, context: Any) -> dict[str, Any]:
    log_report(report, context)
    if any(r.outcome.kind is OutcomeKind.RETRY for r in report.results):
        raise RetryBatch(report)
    return report.to_dict()


class EventBridgeBatch:
    name: ClassVar[str] = "fc-eventbridge"

    @classmethod
    def infer(cls, event: Any, context: Any) -> bool:
        return isinstance(event, list) and bool(event) and _looks_like_element(event[0])

    @classmethod
    def records(cls, event: Any, context: Any) -> list[Delivered]:
        if len(event) > MAX_RECORDS:
            from functions.bindings import InvalidInvocation

            raise InvalidInvocation(f"an event holds at most {MAX_RECORDS} records, got {len(event)}")
        return [delivered(i, item) for i, item in enumerate(event)]

    @classmethod
    def respond(cls, report: BatchReport, event: Any, context: Any) -> Any:
        return answer(report, context)
