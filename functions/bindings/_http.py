"""Helpers the HTTP event shapes share: bodies, headers, queries, and FC 3.0's answer shape."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from functions.asgi import HttpResponse

_TEXT_TYPES = ("text/", "application/json", "application/javascript", "application/xml", "image/svg+xml")


def body_of(event: Mapping[str, Any]) -> bytes:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:
            from functions.bindings import InvalidInvocation

            raise InvalidInvocation("isBase64Encoded is true but the body is not base64") from None
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def query_of(params: Any) -> str:
    if not isinstance(params, Mapping):
        return ""
    pairs: list[str] = []
    for key, value in params.items():
        # Repeated parameters arrive joined with commas; they are passed on as they came.
        values = value if isinstance(value, list) else [value]
        pairs.extend(f"{quote(str(key), safe='')}={quote(str(v), safe=',')}" for v in values)
    return "&".join(pairs)


def headers_of(raw: Any) -> list[tuple[str, str]]:
    if not isinstance(raw, Mapping):
        return []
    return [(str(k), ",".join(map(str, v)) if isinstance(v, list) else str(v)) for k, v in raw.items()]


def _is_text(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media.startswith(_TEXT_TYPES) or media.endswith(("+json", "+xml"))


def event_response(response: HttpResponse) -> dict[str, Any]:
    """``{statusCode, headers, isBase64Encoded, body}``: binary bodies as base64, repeated headers joined."""
    headers: dict[str, str] = {}
    for name, value in response.headers:
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    if _is_text(response.header("content-type")):
        try:
            return {"statusCode": response.status, "headers": headers, "isBase64Encoded": False,
                    "body": response.body.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    return {"statusCode": response.status, "headers": headers, "isBase64Encoded": True,
            "body": base64.b64encode(response.body).decode("ascii")}
