"""The OpenAPI 3.0 document of the HomePage API (``GET /openapi.json``).

Limits in it (body size, stream cap, load-run bounds) are the running process's own.
tests/integration/functions/test_homepage_api.py checks it names every route and method the
app has, and the schemathesis test checks the app answers as it says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions.homepage.body import MAX_JSON_DEPTH
from handlers.cursor import MAX_TOKEN_LENGTH
from handlers.fetch import MAX_LIMIT
from handlers.model import ID_PATTERN, MAX_BATCH_SIZE, MAX_TEXT_LENGTH, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS

if TYPE_CHECKING:
    from functions.homepage.app import HomePageOptions

RUN_ID_PATTERN = r"^[0-9a-f]{24}$"


def _error_schema_ref() -> dict[str, Any]:
    return {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(_error_schema_ref(), description, headers)


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}}}


# A character that is not whitespace as the server trims it (str.strip): the pattern's own \S is
# ECMAScript's, which counts U+0085 and U+001C-U+001F as text and U+FEFF as space.
NOT_BLANK = "[^" + "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x3001)) if c.isspace()) + "]"


def openapi_document(max_body_bytes: int, opts: HomePageOptions) -> dict[str, Any]:
    identifier = {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"}
    text = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH, "pattern": NOT_BLANK,
            "description": "Trimmed of surrounding whitespace; must not be empty after trimming"}
    # An empty cursor means "from the beginning" (handlers.fetch).
    cursor_schema = {"type": "string", "maxLength": MAX_TOKEN_LENGTH}
    limits = opts.load
    streams_note = (f"At most {opts.max_streams} streams are open at once per process; a viewer that falls "
                    f"{opts.viewer_queue} events behind is dropped and resumes by reconnecting."
                    if opts.max_streams else "This deployment does not stream: every request is answered 503.")
    nullable_ms = {"type": "number", "nullable": True}
    body_errors = {
        "413": _error(f"Body larger than {max_body_bytes} bytes"),
        "415": _error("Content-Type is not application/json"),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "barrage HomePage",
            "version": "1.0.0",
            "description": "Send barrages (bullet comments), read processed ones by cursor or as Server-Sent "
                           "Events, and run server-side load tests. Every error is JSON: "
                           '{"error": {"status", "message", ...details}}.',
        },
        "paths": {
            "/healthz": {"get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "responses": {"200": _json({"$ref": "#/components/schemas/Health"}, "The process is serving")},
            }},
            "/api/barrages": {
                "post": {
                    "operationId": "sendBarrages",
                    "summary": "Send one barrage or a batch",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                        {"$ref": "#/components/schemas/Submission"},
                        {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_SIZE,
                         "items": {"$ref": "#/components/schemas/Submission"}},
                    ]}}}},
                    "responses": {
                        "202": _json({"$ref": "#/components/schemas/SendResult"},
                                     "At least one barrage was accepted; others are listed as rejected or failed"),
                        "400": _error("Nothing valid to send (the message names the first problem), or a body "
                                      f"that is not JSON or nests deeper than {MAX_JSON_DEPTH} levels"),
                        **body_errors,
                        "503": _error("The bus could not confirm the barrages; resend them with the same ids"),
                    },
                },
                "get": {
                    "operationId": "listBarrages",
                    "summary": "The newest processed barrages of a room, or those after a cursor",
                    "parameters": [
                        {"name": "room", "in": "query", "required": True, "schema": identifier},
                        {"name": "since", "in": "query", "required": False, "schema": cursor_schema,
                         "description": "A cursor from an earlier answer; empty: from the start; absent: the newest"},
                        {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}},
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Page"}, "Results, oldest first"),
                        "400": _error("A bad parameter (named in error.parameter), including a foreign cursor"),
                    },
                },
            },
            "/api/stream": {"get": {
                "operationId": "streamBarrages",
                "summary": "Processed barrages as Server-Sent Events (not on Function Compute: poll there)",
                "description": f"Each event's data is a Page; its id is the cursor, so a reconnecting EventSource "
                               f"resumes via Last-Event-ID. Comments are heartbeats. A stream ends after "
                               f"{opts.stream_lifetime_s:g} s and the client reconnects (retry: {opts.retry_ms} ms). "
                               f"{streams_note}",
                "parameters": [
                    {"name": "room", "in": "query", "required": True, "schema": identifier},
                    {"name": "since", "in": "query", "required": False, "schema": cursor_schema,
                     "description": "Resume after this cursor; empty: from the beginning; absent: only what arrives "
                                    "from now"},
                    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": cursor_schema,
                     "description": "Sent by EventSource on reconnect; takes precedence over since"},
                ],
                "responses": {
                    "200": {"description": "An event stream; the schema describes one event",
                            "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/Event"}}}},
                    "400": _error("A bad room or cursor"),
                    "503": _error("Too many open streams, no streams in this deployment, or the store is "
                                  "unavailable; poll GET /api/barrages", _RETRY_AFTER),
                },
            }},
            "/api/load": {"post": {
                "operationId": "startLoadRun",
                "summary": "Start a server-side load run publishing one message repeatedly",
                "description": f"concurrency <= {limits.max_concurrency}, duration <= {limits.max_duration_s:g} s, "
                               f"one running run per client address, at most {limits.starts_per_window} starts per "
                               f"{limits.window_s:g} s per client, at most {limits.max_active_runs} runs at once.",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/LoadRequest"}}}},
                "responses": {
                    "202": _json({"$ref": "#/components/schemas/LoadRun"}, "Started", {
                        "Location": {"description": "Where to follow the run", "schema": {"type": "string"}}}),
                    "400": _error("A bad field (named in error.field), or a body that is not JSON or nests "
                                  f"deeper than {MAX_JSON_DEPTH} levels"),
                    "409": _error("This client already has a run in progress (its id is in error.run)"),
                    **body_errors,
                    "429": _error("Too many starts from this client", _RETRY_AFTER),
                    "503": _error("Too many runs at once, or shutting down", _RETRY_AFTER),
                },
            }},
            "/api/load/{id}": {"get": {
                "operationId": "getLoadRun",
                "summary": "Progress and, once finished, final stats of a load run",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/LoadRun"}, "The run"),
                    "404": _error("No such run (or forgotten)"),
                },
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.0 document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}},
            }},
            "/": {"get": {
                "operationId": "page",
                "summary": "The danmaku page",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
            }},
        },
        "components": {"schemas": {
            "Error": {
                "type": "object", "required": ["error"],
                "properties": {"error": {
                    "type": "object", "required": ["status", "message"],
                    "properties": {
                        "status": {"type": "integer"},
                        "message": {"type": "string"},
                        "parameter": {"type": "string"},
                        "field": {"type": "string"},
                        "run": {"type": "string"},
                        "open_streams": {"type": "integer"},
                        "accepted": {"type": "array", "items": {"$ref": "#/components/schemas/Accepted"}},
                        "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Rejected"}},
                        "failed": {"type": "array", "items": {"$ref": "#/components/schemas/Failed"}},
                    },
                }},
            },
            "Event": {
                "type": "object",
                "description": "One server-sent event. Without an event name, data is a Page (JSON) and id its "
                               "cursor; event 'problem' carries {message} (JSON) before the stream ends.",
                "properties": {
                    "data": {"type": "string"},
                    "id": {"type": "string"},
                    "event": {"type": "string", "enum": ["message", "problem"]},
                },
            },
            "Health": {"type": "object", "required": ["status", "bus"], "properties": {
                "status": {"type": "string", "enum": ["ok"]}, "bus": {"type": "string", "enum": ["memory", "kafka"]}}},
            "Submission": {
                "type": "object", "required": ["room", "user", "text"], "additionalProperties": False,
                "properties": {
                    "id": {**identifier, "nullable": True,
                           "description": "Client-chosen id, for idempotent resends; null or absent: the server's"},
                    "room": identifier,
                    "user": identifier,
                    "text": text,
                    "colour": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$", "nullable": True,
                               "description": "Null or absent: the processor picks one"},
                    "sent_at": {"type": "integer", "minimum": MIN_TIMESTAMP_MS, "maximum": MAX_TIMESTAMP_MS,
                                "description": "Milliseconds since the epoch; stamped by the server when absent"},
                },
            },
            "Accepted": {"type": "object", "required": ["id", "sent_at"],
                         "properties": {"id": {"type": "string"}, "sent_at": {"type": "integer"}}},
            "Rejected": {"type": "object", "required": ["index", "field", "reason"], "properties": {
                "index": {"type": "integer"}, "field": {"type": "string"}, "reason": {"type": "string"}}},
            "Failed": {"type": "object", "required": ["id", "reason"],
                       "properties": {"id": {"type": "string"}, "reason": {"type": "string"}}},
            "SendResult": {"type": "object", "required": ["accepted", "rejected", "failed"], "properties": {
                "accepted": {"type": "array", "items": {"$ref": "#/components/schemas/Accepted"}},
                "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Rejected"}},
                "failed": {"type": "array", "items": {"$ref": "#/components/schemas/Failed"}},
            }},
            "Processed": {
                "type": "object",
                "required": ["id", "room", "user", "text", "lane", "colour", "sent_at", "processed_at",
                             "masked_words", "truncated", "flags"],
                "properties": {
                    "id": {"type": "string"}, "room": {"type": "string"}, "user": {"type": "string"},
                    "text": {"type": "string"}, "lane": {"type": "integer", "minimum": 0},
                    "colour": {"type": "string"}, "sent_at": {"type": "integer"},
                    "processed_at": {"type": "integer"}, "masked_words": {"type": "integer"},
                    "truncated": {"type": "boolean"}, "flags": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Page": {"type": "object", "required": ["items", "cursor"], "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Processed"}},
                "cursor": {"type": "string", "description": "Pass as since to continue after these items"},
            }},
            "LoadRequest": {
                "type": "object", "required": ["message", "concurrency", "duration", "room"],
                "additionalProperties": False,
                "properties": {
                    "message": text,
                    "concurrency": {"type": "integer", "minimum": 1, "maximum": limits.max_concurrency},
                    "duration": {"type": "number", "minimum": 0, "exclusiveMinimum": True,
                                 "maximum": limits.max_duration_s, "description": "Seconds"},
                    "room": identifier,
                    "user": {**identifier, "default": "load"},
                },
            },
            "LoadRun": {
                "type": "object",
                "required": ["id", "room", "user", "message", "concurrency", "duration", "created_at", "state",
                             "progress", "sent", "accepted", "rejected", "errors", "elapsed", "throughput",
                             "latency_ms", "last_error"],
                "properties": {
                    "id": {"type": "string", "pattern": RUN_ID_PATTERN},
                    "room": {"type": "string"}, "user": {"type": "string"}, "message": {"type": "string"},
                    "concurrency": {"type": "integer"}, "duration": {"type": "number"},
                    "created_at": {"type": "integer", "description": "Milliseconds since the epoch"},
                    "state": {"type": "string", "enum": ["running", "finished"]},
                    "progress": {"type": "number", "minimum": 0, "maximum": 1},
                    "sent": {"type": "integer"}, "accepted": {"type": "integer"},
                    "rejected": {"type": "integer"}, "errors": {"type": "integer"},
                    "elapsed": {"type": "number", "description": "Seconds"},
                    "throughput": {"type": "number", "description": "Accepted per second"},
                    "latency_ms": {"type": "object", "required": ["p50", "p95", "p99"], "properties": {
                        "p50": nullable_ms, "p95": nullable_ms, "p99": nullable_ms},
                        "description": "Publish latency of accepted barrages; null before the first"},
                    "last_error": {"type": "string", "nullable": True},
                },
            },
        }},
    }
