"""An event function invoked directly (``s invoke``, the FC API, another function).

A single CloudEvent (an object with ``specversion``) is that event. Any other JSON object is
one record, and an array of objects one record each: ``type`` ``fc.invoke``, the object as
``data``, ids from the request id and the position. The answer is the report (or ``RetryBatch``),
as for the Kafka trigger.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from functions.bindings.fc_event import MAX_RECORDS, answer
from functions.records import BatchReport, Delivered, Record, RecordError, Undecodable, record_from_structured

DIRECT_TYPE = "fc.invoke"


def _source(context: Any) -> str:
    function = getattr(getattr(context, "function", None), "name", "") or "function"
    return f"acs:fc:{getattr(context, 'region', '') or 'local'}:functions/{function}"


class CloudEventInvocation:
    name: ClassVar[str] = "cloudevent"

    @classmethod
    def infer(cls, event: Any, context: Any) -> bool:
        return isinstance(event, Mapping) and "specversion" in event

    @classmethod
    def records(cls, event: Any, context: Any) -> list[Delivered]:
        try:
            return [record_from_structured(event)]
        except RecordError as exc:
            return [Undecodable(str(event.get("id") or "#0"), str(exc))]

    @classmethod
    def respond(cls, report: BatchReport, event: Any, context: Any) -> Any:
        return answer(report, context)


class DirectInvocation:
    name: ClassVar[str] = "direct"

    @classmethod
    def infer(cls, event: Any, context: Any) -> bool:
        return isinstance(event, Mapping) or (isinstance(event, list) and bool(event))

    @classmethod
    def records(cls, event: Any, context: Any) -> list[Delivered]:
        items = event if isinstance(event, list) else [event]
        if len(items) > MAX_RECORDS:
            from functions.bindings import InvalidInvocation

            raise InvalidInvocation(f"an event holds at most {MAX_RECORDS} records, got {len(items)}")
        request_id = getattr(context, "request_id", "") or "direct"
        source = _source(context)
        out: list[Delivered] = []
        for position, item in enumerate(items):
            record_id = f"{request_id}#{position}"
            if isinstance(item, Mapping):
                out.append(Record(id=record_id, source=source, type=DIRECT_TYPE, data=dict(item),
                                  datacontenttype="application/json"))
            else:
                out.append(Undecodable(record_id, f"element {position} is not a JSON object"))
        return out

    @classmethod
    def respond(cls, report: BatchReport, event: Any, context: Any) -> Any:
        return answer(report, context)
