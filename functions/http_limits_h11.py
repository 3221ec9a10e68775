"""uvicorn's h11 protocol with the deadlines and the header cap of ``functions.http_limits``.

A module of its own, as the httptools one: h11 is imported only where it serves (httptools is
uvicorn's ``auto`` choice wherever it is installed).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from functions.http_limits import (
    Phase,
    RequestClock,
    WatchedFlow,
    expire_body,
    header_timeout_message,
    limits_of,
    log,
    not_http,
    refusal,
    too_large,
)


class H11WithDeadlines(H11Protocol):
    """uvicorn's h11 protocol with the header and body deadlines (the clock follows h11's states).

    The methods called for every request name their base explicitly: zero-argument super() costs
    more than what they add (Python 3.10 and 3.11 build a super object per call)."""

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.read_limits = limits_of(config)
        self.clock = RequestClock(self.loop, self.read_limits, self._headers_expired, self._body_expired,
                                  self._server_waits)
        self._watched: WatchedFlow | None = None
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = self._watched = WatchedFlow(transport, self.clock)
        self.clock.headers_begin()

    def connection_lost(self, exc: Exception | None) -> None:
        self.clock.close()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        clock = self.clock
        if clock.phase == Phase.BODY:
            clock.body_progress(len(data))
        elif clock.phase == Phase.IDLE and (self.cycle is None or self.cycle.response_complete):
            clock.headers_begin()
            self._header_bytes = 0
        H11Protocol.data_received(self, data)
        self._follow()
        if clock.phase == Phase.HEADERS:  # nothing completed in this read: all of it is headers
            self._header_bytes += len(data)
            if self._header_bytes > self.read_limits.max_header_bytes:
                self._too_large()

    def on_response_complete(self) -> None:
        H11Protocol.on_response_complete(self)
        if not self.transport.is_closing():
            self._follow()  # a pipelined request may have been parsed, or begun

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self.clock.close()
        super().handle_websocket_upgrade(event)

    def _follow(self) -> None:
        """Bring the clock in line with what h11 has parsed of the client's side."""
        clock, state = self.clock, self.conn.their_state
        if state is h11.SEND_BODY:
            if clock.phase != Phase.BODY:
                clock.headers_end()
                if self._watched is not None and self.cycle is not None:
                    self._watched.continue_pending = self.cycle.waiting_for_100_continue
            clock.body_wait()
        elif state is h11.IDLE:
            if clock.phase == Phase.IDLE and (self.cycle is None or self.cycle.response_complete) \
                    and self.conn.trailing_data[0]:
                clock.headers_begin()  # part of a next request came while this one was answered
                self._header_bytes = len(self.conn.trailing_data[0])
        elif clock.phase == Phase.HEADERS or clock.phase == Phase.BODY:
            clock.body_end()  # the request is complete (or the connection is ending)

    def _server_waits(self) -> bool:
        return self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue)

    def _headers_expired(self) -> None:
        if self.transport.is_closing():
            return
        log.info("closing a connection: %s", header_timeout_message(self.read_limits))
        if self.conn.trailing_data[0]:
            self.transport.write(refusal(408, header_timeout_message(self.read_limits),
                                         self.server_state.default_headers))
        self.transport.close()

    def _body_expired(self, message: str) -> None:
        if not self.transport.is_closing():
            expire_body(self.cycle, self.transport, message, self.server_state.default_headers, True)

    def _too_large(self) -> None:
        self.clock.close()
        if not self.transport.is_closing():
            self.transport.write(too_large(self.read_limits, self.server_state.default_headers))
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self.clock.close()
        self.transport.write(not_http(msg, self.server_state.default_headers))
        self.transport.close()
