"""uvicorn's httptools protocol with the deadlines and the header cap of ``functions.http_limits``.

A module of its own because it imports httptools, which FC's code package leaves out
(``functions.http_limits.protocol_class`` falls back to h11 there). The clock follows the
parser's callbacks: a message begins, its headers complete, it completes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from functions.http_limits import (
    Phase,
    RequestClock,
    WatchedFlow,
    expire_body,
    header_timeout_message,
    limits_of,
    log,
    refusal,
    too_large,
)


class HttpToolsWithDeadlines(HttpToolsProtocol):
    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.read_limits = limits_of(config)
        self.clock = RequestClock(self.loop, self.read_limits, self._headers_expired, self._body_expired,
                                  self._server_waits)
        self._in_headers = False  # a request's line or headers are arriving
        self._header_bytes = 0
        self._continue_pending = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = WatchedFlow(transport, self._reading_resumed)
        self.clock.headers_begin()

    def connection_lost(self, exc: Exception | None) -> None:
        self.clock.close()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        clock = self.clock
        if clock.phase is Phase.BODY:
            clock.body_progress()
        elif clock.phase is Phase.IDLE and self._between_requests():
            clock.headers_begin()
        if self._in_headers:
            # Counted per read: httptools holds a header's value until the next one starts.
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_headers and self._header_bytes > self.read_limits.max_header_bytes:
            self._too_large()
        elif clock.phase is Phase.BODY:
            clock.body_wait()

    # parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self.clock.headers_end()
        self._continue_pending = self.expect_100_continue
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.clock.body_end()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Part of the next request came while this one was answered: its headers are due now.
        if self._in_headers and not self.transport.is_closing() and self._between_requests():
            self.clock.headers_begin()

    def handle_websocket_upgrade(self) -> None:
        self.clock.close()
        super().handle_websocket_upgrade()

    def _between_requests(self) -> bool:
        # self.cycle is the request parsed last: complete means every earlier one is too.
        return self.cycle is None or self.cycle.response_complete

    def _server_waits(self) -> bool:
        return self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue)

    def _reading_resumed(self, was_paused: bool) -> None:
        if was_paused or self._continue_pending:
            self._continue_pending = False
            self.clock.body_progress()

    def _headers_expired(self) -> None:
        if self.transport.is_closing():
            return
        log.info("closing a connection: %s", header_timeout_message(self.read_limits))
        if self._in_headers:
            self.transport.write(refusal(408, header_timeout_message(self.read_limits),
                                         self.server_state.default_headers))
        self.transport.close()

    def _body_expired(self) -> None:
        if not self.transport.is_closing():
            expire_body(self.cycle, self.transport, self.read_limits, self.server_state.default_headers,
                        not self.pipeline)

    def _too_large(self) -> None:
        self.clock.close()
        self._header_bytes = 0
        if self.transport.is_closing():
            return
        if self._between_requests():  # else a response is under way: an answer cannot be put in its middle
            self.transport.write(too_large(self.read_limits, self.server_state.default_headers))
        self.transport.close()
