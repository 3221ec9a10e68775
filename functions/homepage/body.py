"""Reading a JSON request body within limits: size, media type, encoding, nesting depth.

Every way a body can be wrong is a 4xx with a message, never a 5xx: 415 for another media
type, 413 past the size limit (whether the client declared its length or sent it chunked: the
read stops at the limit, so an endless body costs nothing more), 400 for bytes that are not
UTF-8, text that is not JSON, or JSON nested deeper than ``MAX_JSON_DEPTH``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from functions.homepage.http import ApiError

# No request of this API nests more than three levels; 32 leaves room for any sane client and
# stops bodies like "[" * 50,000 before the parser recurses into them.
MAX_JSON_DEPTH = 32

_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def media_type(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, at most ``max_bytes`` of it; ``ApiError(413)`` beyond that."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "Content-Length is not a number")
        if int(declared) > max_bytes:
            raise ApiError(413, f"body is larger than {max_bytes} bytes")
    # Straight from the ASGI messages (Request.stream() adds layers this hot path does not need).
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ApiError(400, "the client closed the connection before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:  # a chunked body, or one longer than it said
            raise ApiError(413, f"body is larger than {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def nesting_depth(text: str) -> int:
    """How deeply the arrays and objects of JSON ``text`` nest (brackets inside strings do not count).

    Linear in the text: escapes go first, so every remaining quote opens or closes a string.
    For text that is not valid JSON the figure may be too high, never too low.
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot exceed the limit: skip the scan for ordinary bodies
    structural = _STRING.sub("", _ESCAPE.sub("", text))
    depth = deepest = 0
    for match in _BRACKETS.finditer(structural):
        if match.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    break
        else:
            depth -= 1
    return deepest


def parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "body is not UTF-8") from None
    if nesting_depth(text) > MAX_JSON_DEPTH:
        raise ApiError(400, f"body is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except RecursionError:  # not reached after the depth check; kept so no body can make a 500
        raise ApiError(400, f"body is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None


async def read_json_body(request: Request, max_bytes: int) -> Any:
    """The request's JSON body, or an ``ApiError`` that says what is wrong with it."""
    kind = media_type(request)
    if kind != "application/json" and not kind.endswith("+json"):
        raise ApiError(415, "Content-Type must be application/json")
    return parse_json(await read_body(request, max_bytes))
