"""uvicorn's h11 protocol with the deadlines and the header cap of ``functions.http_limits``.

A module of its own, as the httptools one: h11 is imported only where it serves (httptools is
uvicorn's ``auto`` choice wherever it is installed).
"""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from functions.http_limits import Phase, WithDeadlines, too_large


class H11WithDeadlines(WithDeadlines, H11Protocol):
    """uvicorn's h11 protocol with the header and body deadlines (the clock follows h11's states).

    The methods called for every request name their base explicitly: zero-argument super() costs
    more than what they add (Python 3.10 and 3.11 build a super object per call)."""

    def data_received(self, data: bytes) -> None:
        if WithDeadlines._clock_read(self, len(data)):
            self._header_bytes = 0
        H11Protocol.data_received(self, data)
        self._follow()
        if self.clock.phase == Phase.HEADERS:  # nothing completed in this read: all of it is headers
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

    def _request_begun(self) -> bool:
        return bool(self.conn.trailing_data[0])

    def _may_answer(self) -> bool:
        return True

    def _too_large(self) -> None:
        self.clock.close()
        if not self.transport.is_closing():
            self.transport.write(too_large(self.read_limits, self.server_state.default_headers))
            self.transport.close()
