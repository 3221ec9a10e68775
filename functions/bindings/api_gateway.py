"""Alibaba Cloud API Gateway's event to a backend FC function (``httpMethod``, ``path``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from functions.asgi import HttpRequest, HttpResponse
from functions.bindings._http import body_of, event_response, headers_of, query_of


class ApiGatewayEvent:
    name: ClassVar[str] = "api-gateway"

    @classmethod
    def infer(cls, event: Any, context: Any) -> bool:
        return isinstance(event, Mapping) and "httpMethod" in event and "path" in event

    @classmethod
    def request(cls, event: Any, context: Any) -> HttpRequest:
        path = str(event.get("path") or "/")
        # API Gateway names query parameters both ways, depending on the API's settings.
        params = event.get("queryParameters") or event.get("queryStringParameters")
        return HttpRequest(
            method=str(event["httpMethod"]).upper(),
            path=path,
            raw_path=quote(path),
            query_string=query_of(params),
            headers=headers_of(event.get("headers")),
            body=body_of(event),
            extensions={"fc.context": context},
        )

    @classmethod
    def respond(cls, response: HttpResponse, event: Any, context: Any) -> Any:
        return event_response(response)
