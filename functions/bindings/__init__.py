"""Invocation shapes: how each platform hands a function its input, and wants its answer.

Each shape is a small class in its own module with ``infer(event, context)``; a function tries
its shapes in order, as mangum does, and the first that recognises the invocation maps it.
Users add their own by passing ``shapes=`` when they declare a function.

``HttpShape``: an HTTP request carried as an event (FC 3.0 HTTP trigger, API Gateway, FC 2.0
WSGI) becomes an ``HttpRequest`` for the ASGI app, and the app's ``HttpResponse`` becomes what
the platform expects back; a request it cannot hand over raises ``RequestRefused`` (answered
with its 4xx, the app not called). ``EventShape``: an event delivery (FC Kafka trigger through
EventBridge, a single CloudEvent, a direct invocation) becomes records, and the per-record
report becomes the platform's answer (a return value, or an exception so that it retries).
Servers (the custom container, CloudEvents over HTTP, functions-framework) are in
``custom_container``, ``cloudevents_http`` and ``functions_framework``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, TypeVar

from functions.asgi import HttpRequest, HttpResponse
from functions.records import BatchReport, Delivered


class InvalidInvocation(ValueError):
    """No shape recognises the invocation, or it is not even JSON; the message says what was seen."""


class RequestRefused(ValueError):
    """An HTTP shape cannot hand the request to the app (its body is over the limit, its length is not a
    number): the client gets ``status`` with the layer's JSON error, and the app is not called."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def response(self) -> HttpResponse:
        body = json.dumps({"error": {"status": self.status, "message": str(self)}}).encode()
        return HttpResponse(self.status, [("content-type", "application/json"), ("connection", "close")], body)


class HttpShape(Protocol):
    name: ClassVar[str]

    @classmethod
    def infer(cls, event: Any, context: Any) -> bool: ...

    @classmethod
    def request(cls, event: Any, context: Any) -> HttpRequest: ...

    @classmethod
    def respond(cls, response: HttpResponse, event: Any, context: Any) -> Any: ...


class EventShape(Protocol):
    name: ClassVar[str]

    @classmethod
    def infer(cls, event: Any, context: Any) -> bool: ...

    @classmethod
    def records(cls, event: Any, context: Any) -> list[Delivered]: ...

    @classmethod
    def respond(cls, report: BatchReport, event: Any, context: Any) -> Any: ...


S = TypeVar("S", HttpShape, EventShape)


def parse_payload(event: Any) -> Any:
    """FC's built-in runtimes pass an event function its payload as bytes: JSON, parsed once here."""
    if not isinstance(event, (bytes, bytearray, memoryview, str)):
        return event
    raw = bytes(event) if not isinstance(event, str) else event.encode("utf-8")
    if not raw.strip():
        raise InvalidInvocation("the event is empty")
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidInvocation("the event is JSON nested too deeply") from None
    except ValueError as exc:
        raise InvalidInvocation(f"the event is not JSON: {exc}") from None


def describe(event: Any) -> str:
    """A short account of what an unrecognised event looks like (its keys, or its type)."""
    if isinstance(event, dict):
        keys = sorted(str(k) for k in event)[:8]
        return f"a JSON object with keys {keys}" + (" ..." if len(event) > 8 else "")
    if isinstance(event, list):
        first = type(event[0]).__name__ if event else "nothing"
        return f"a JSON array of {len(event)} element(s), the first {first}"
    return f"a {type(event).__name__}"


def pick(shapes: Sequence[type[S]], event: Any, context: Any, function: str) -> type[S]:
    for shape in shapes:
        if shape.infer(event, context):
            return shape
    names = ", ".join(shape.name for shape in shapes)
    raise InvalidInvocation(f"function {function!r}: no invocation shape ({names}) recognises "
                            f"{describe(event)}")
