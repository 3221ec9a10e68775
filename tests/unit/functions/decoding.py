"""Golden deliveries decoded the way the bindings decode them, then as barrage's processor reads each record."""

from __future__ import annotations

from typing import Any

from functions.bindings import parse_payload
from functions.bindings.cloudevents_http import decode
from functions.bindings.direct import DirectInvocation
from functions.bindings.fc_event import EventBridgeBatch
from functions.processor import DecodedEvent, decode_record
from functions.records import Undecodable

NOW = 1_767_225_700_000


def decoded(delivered: Any) -> DecodedEvent:
    if isinstance(delivered, Undecodable):
        return DecodedEvent(delivered.id, error=delivered.reason)
    return decode_record(delivered, NOW)


def decode_http(headers: dict[str, str], body: bytes) -> tuple[list[DecodedEvent], bool]:
    delivered, batch = decode({k.lower(): v for k, v in headers.items()}, body)
    return [decoded(d) for d in delivered], batch


def decode_fc_event(payload: bytes) -> list[DecodedEvent]:
    event = parse_payload(payload)
    shape = EventBridgeBatch if EventBridgeBatch.infer(event, None) else DirectInvocation
    return [decoded(d) for d in shape.records(event, None)]
