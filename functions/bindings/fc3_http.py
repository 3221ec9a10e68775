"""FC 3.0 HTTP trigger: a JSON event with ``rawPath`` and ``requestContext.http`` (PLATFORM.md §2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import unquote_to_bytes

from functions.asgi import HttpRequest, HttpResponse
from functions.bindings._http import body_of, event_response, headers_of, query_of


class FC3HttpEvent:
    name: ClassVar[str] = "fc3-http"

    @classmethod
    def infer(cls, event: Any, context: Any) -> bool:
        if not isinstance(event, Mapping) or "rawPath" not in event:
            return False
        request_context = event.get("requestContext")
        return isinstance(request_context, Mapping) and isinstance(request_context.get("http"), Mapping)

    @classmethod
    def request(cls, event: Any, context: Any) -> HttpRequest:
        request_context = event["requestContext"]
        http = request_context["http"]
        raw_path = str(event.get("rawPath") or "/")
        headers = headers_of(event.get("headers"))
        proto = next((v for k, v in headers if k.lower() == "x-forwarded-proto"), "http")
        source_ip = str(http.get("sourceIp", ""))
        return HttpRequest(
            method=str(http.get("method", "GET")).upper(),
            path=unquote_to_bytes(raw_path).decode("utf-8", "replace"),
            raw_path=raw_path,
            query_string=query_of(event.get("queryParameters")),
            headers=headers,
            body=body_of(event),
            client=(source_ip, 0) if source_ip else None,
            server=(str(request_context.get("domainName") or "FCRUNTIME"), 443 if proto == "https" else 80),
            scheme=proto.split(",")[0].strip() or "http",
            extensions={"fc.context": context},
        )

    @classmethod
    def respond(cls, response: HttpResponse, event: Any, context: Any) -> Any:
        return event_response(response)
