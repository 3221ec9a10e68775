"""FC 2.0 HTTP functions: the runtime calls ``handler(environ, start_response)`` (WSGI, PLATFORM.md §1).

The ASGI app sees the request the environ describes; the FC context the runtime puts in the
environ (``fc.context``) reaches the app as ``scope["fc.context"]``. FC 2.0 answers with the
whole response, so it is collected before ``start_response`` is called.

The body is read from ``wsgi.input`` up to ``Fc2Wsgi.max_body_bytes`` (FC's own limit for a
synchronous request, 32 MiB; a subclass may lower it): a declared length past it answers 413
before anything is read, and a body without a length (chunked) is read in bounded chunks and
answers 413 as soon as it passes the limit, so no more than the limit is ever held.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar
from urllib.parse import quote

from functions.asgi import HttpRequest, HttpResponse
from functions.bindings import RequestRefused

MAX_BODY_BYTES = 32 * 1024 * 1024  # FC's limit for a synchronous request's body
READ_BYTES = 64 * 1024


def read_body(environ: Mapping[str, Any], limit: int) -> bytes:
    """``wsgi.input`` whole, never more than ``limit`` bytes of it; ``RequestRefused`` (400, 413) otherwise."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    declared = str(environ.get("CONTENT_LENGTH") or "").strip()
    if declared and not (declared.isascii() and declared.isdigit()):
        raise RequestRefused(400, f"Content-Length is not a number: {declared[:40]!r}")
    if declared and int(declared) > limit:
        raise RequestRefused(413, f"body is larger than {limit} bytes")
    # Without a length (chunked), read until the stream ends; with one, that many bytes at most.
    wanted = int(declared) if declared else limit + 1
    chunks: list[bytes] = []
    size = 0
    while size < wanted:
        chunk = bytes(stream.read(min(READ_BYTES, wanted - size)))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestRefused(413, f"body is larger than {limit} bytes")
    return b"".join(chunks)


def _headers(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    headers = [(key[5:].replace("_", "-").lower(), str(value)) for key, value in environ.items()
               if key.startswith("HTTP_")]
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        if environ.get(key):
            headers.append((name, str(environ[key])))
    return headers


class Fc2Wsgi:
    name: ClassVar[str] = "fc2-wsgi"
    max_body_bytes: ClassVar[int] = MAX_BODY_BYTES

    @classmethod
    def infer(cls, event: Any, context: Any) -> bool:
        return isinstance(event, Mapping) and "wsgi.input" in event and "REQUEST_METHOD" in event and callable(context)

    @classmethod
    def request(cls, event: Any, context: Any) -> HttpRequest:
        # WSGI carries the path as the latin-1 characters of its bytes; ASGI wants the UTF-8 text.
        path = str(event.get("PATH_INFO") or "/").encode("latin-1", "replace").decode("utf-8", "replace")
        # fc.request_uri holds the path as sent (still URL-encoded), with the query.
        raw_uri = str(event.get("fc.request_uri") or event.get("RAW_URI") or quote(path))
        port = str(event.get("SERVER_PORT") or "9000")
        remote = str(event.get("REMOTE_ADDR") or "")
        return HttpRequest(
            method=str(event["REQUEST_METHOD"]).upper(),
            path=path,
            raw_path=raw_uri.split("?", 1)[0],
            query_string=str(event.get("QUERY_STRING") or ""),
            headers=_headers(event),
            body=read_body(event, cls.max_body_bytes),
            client=(remote, 0) if remote else None,
            server=(str(event.get("SERVER_NAME") or "FCRUNTIME"), int(port) if port.isdigit() else 9000),
            scheme=str(event.get("wsgi.url_scheme") or "http"),
            extensions={"fc.context": event.get("fc.context")},
        )

    @classmethod
    def respond(cls, response: HttpResponse, event: Any, context: Any) -> Any:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        headers = [(k, v) for k, v in response.headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(response.body))))
        context(f"{response.status} {reason}".strip(), headers)
        return [response.body]
