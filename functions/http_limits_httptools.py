"""uvicorn's httptools protocol with the deadlines and the header cap of ``functions.http_limits``.

A module of its own because it imports httptools, which may be missing (a plain ``uvicorn``
install): ``functions.http_limits.protocol_class`` falls back to h11 then. The clock follows the
parser's callbacks: a message begins, its headers complete, it completes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from functions.http_limits import Phase, WithDeadlines, too_large


class HttpToolsWithDeadlines(WithDeadlines, HttpToolsProtocol):
    # The methods called for every request name their base explicitly: zero-argument super() costs
    # a third of what they add (Python 3.10 and 3.11 build a super object per call).
    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_headers = False  # a request's line or headers are arriving

    def data_received(self, data: bytes) -> None:
        WithDeadlines._clock_read(self, len(data))
        if self._in_headers:
            self._header_bytes += len(data)  # counted per read: httptools holds a header's value until the next
        HttpToolsProtocol.data_received(self, data)
        if self._in_headers:
            if self._header_bytes > self.read_limits.max_header_bytes:
                self._too_large()
        elif self.clock.phase == Phase.BODY:
            self.clock.body_wait()

    # parser callbacks
    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._in_headers = True
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self.clock.headers_end()
        if self.expect_100_continue and self._watched is not None:
            self._watched.continue_pending = True
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        self.clock.body_end()

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        # Part of the next request came while this one was answered: its headers are due now.
        if self._in_headers and not self.transport.is_closing() and self.cycle.response_complete:
            self.clock.headers_begin()

    def handle_websocket_upgrade(self) -> None:
        self.clock.close()
        super().handle_websocket_upgrade()

    def _request_begun(self) -> bool:
        return self._in_headers

    def _may_answer(self) -> bool:
        return not self.pipeline

    def _too_large(self) -> None:
        self.clock.close()
        self._in_headers = False
        if self.transport.is_closing():
            return
        # self.cycle is the request parsed last: complete means no answer is under way (nor queued),
        # so one can be written; otherwise the connection just closes.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(too_large(self.read_limits, self.server_state.default_headers))
        self.transport.close()
