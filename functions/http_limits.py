"""Deadlines and a size cap for reading requests: what uvicorn's HTTP protocols lack.

uvicorn (0.54) times a connection only between requests (its keep-alive timer): a client that
sends half a request line or half its headers, or stops in the middle of a body, holds the
connection for ever, and its httptools parser takes headers of any size. The two protocol classes
(``HttpToolsWithDeadlines`` in ``http_limits_httptools``; ``H11WithDeadlines`` in ``http_limits_h11``,
for where httptools is not installed) are uvicorn's own with a clock per connection:

- **headers**: a request's line and headers must be complete within ``header_timeout_s`` of the
  connection's start, or of the first byte after the previous response. Past it, a client that
  sent part of a request gets 408 and the connection closes; one that sent nothing is closed.
- **body**: while a body arrives, at most ``body_timeout_s`` may pass without a byte of it (as
  nginx's ``client_body_timeout``), and once it has been arriving for ``body_timeout_s`` it must
  have come at ``body_min_rate`` bytes a second at least, on average (as Kestrel's
  ``MinRequestBodyDataRate``): a byte now and then keeps no connection for ever. Time in which the
  server is the one waiting does not count: while uvicorn has stopped reading because the app has
  not taken what arrived (64 KiB), and until the app asks for a body announced with
  ``Expect: 100-continue``; the rate is measured again from when the server reads again. Past
  either the app's ``receive()`` answers ``http.disconnect`` (nothing is half-accepted), the
  client gets 408 if no response has started, and the connection closes.
- **not HTTP**: what the parser cannot read gets uvicorn's 400, but as the same JSON error.
- **header bytes**: a request line and headers longer than ``max_header_bytes`` answer 431. They are
  counted per read (the read that completes them, or begins a request after another, is not), so
  the cap holds to within one read (256 KiB at most).

The connection cap is uvicorn's ``limit_concurrency`` (503 beyond it). Half-open connections
count towards it, which is one more reason they must not last.

``LimitedConfig`` is uvicorn's ``Config`` carrying the ``ReadLimits`` to the protocols (it is
pickled to each worker process); ``protocol_class()`` picks the parser uvicorn's ``auto`` would.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl

log = logging.getLogger("uvicorn.error")
READ_BYTES = 256 * 1024  # the most one read of uvloop's or asyncio's transports returns


@dataclass(frozen=True)
class ReadLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 65_536
    body_min_rate: int = 240  # bytes a second, averaged, once a body has taken body_timeout_s; 0: none


class LimitedConfig(uvicorn.Config):
    """uvicorn's ``Config`` with the ``ReadLimits`` its connections enforce."""

    def __init__(self, app: Any, *, read_limits: ReadLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.read_limits = read_limits


def h11_incomplete_limit(limits: ReadLimits) -> int:
    """h11's own cap on unparsed bytes, past ours by one read: the 431 comes first, h11's 400 is a backstop."""
    return limits.max_header_bytes + READ_BYTES


def limits_of(config: uvicorn.Config) -> ReadLimits:
    limits = getattr(config, "read_limits", None)
    return limits if isinstance(limits, ReadLimits) else ReadLimits()


HTTP_PARSERS = ("auto", "httptools", "h11")


def protocol_class(parser: str = "auto") -> type[asyncio.Protocol]:
    """The protocol for ``parser``; ``auto``: httptools' when it is installed (as uvicorn's ``auto``), else h11's."""
    # Each protocol is a module of its own, imported only when chosen: h11 costs a worker's start ~10 ms.
    if parser != "h11":
        try:
            from functions.http_limits_httptools import HttpToolsWithDeadlines
        except ImportError:
            if parser == "httptools":
                raise
        else:
            return HttpToolsWithDeadlines
    from functions.http_limits_h11 import H11WithDeadlines

    return H11WithDeadlines


def refusal(status: int, message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole response written by the server itself, closing the connection: the layer's JSON error."""
    body = json.dumps({"error": {"status": status, "message": message}}).encode()
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    lines += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
              b"connection: close\r\n\r\n", body]
    return b"".join(lines)


class Phase:
    """What a connection's client owes now (plain ints, not an Enum: they are looked at on every read)."""

    IDLE = 0  # nothing of ours: between requests (keep-alive's own timer), or a request being answered
    HEADERS = 1
    BODY = 2
    CLOSED = 3




class RequestClock:
    """The deadline a connection's client is held to, if any.

    One timer per connection at most, and none made or cancelled per request: a phase only notes
    its due time, and the timer, when it fires, looks at the phase it finds (re-arming itself for
    what is left, or lapsing when nothing is due). Keep-alive requests then cost two clock reads.
    """

    __slots__ = (
        "_body_expired",
        "_due",
        "_headers_expired",
        "_last",
        "_limits",
        "_loop",
        "_rate_bytes",
        "_rate_since",
        "_server_waits",
        "_timer",
        "_timer_at",
        "phase",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: ReadLimits, headers_expired: Callable[[], None],
                 body_expired: Callable[[str], None], server_waits: Callable[[], bool]) -> None:
        self.phase: int = Phase.IDLE
        self._loop = loop
        self._limits = limits
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._due = 0.0  # when the headers are due
        self._last = 0.0  # the last time the client could not be blamed for the body's silence
        self._rate_since = 0.0  # since when the body's rate is measured (0: not yet)
        self._rate_bytes = 0  # body bytes read since then
        self._headers_expired = headers_expired
        self._body_expired = body_expired
        self._server_waits = server_waits

    def headers_begin(self) -> None:
        """A request is due: its headers within the header timeout from now."""
        if self.phase != Phase.IDLE:
            return  # already running (HEADERS), or not the time for it (BODY, CLOSED)
        self.phase = Phase.HEADERS
        self._due = due = self._loop.time() + self._limits.header_timeout_s
        if self._timer is None or self._timer_at > due:
            self._wake_by(due)

    def headers_end(self) -> None:
        if self.phase != Phase.CLOSED:
            self.phase = Phase.BODY
            # Both read when the body turns out to be incomplete (body_wait): most never are.
            self._last = self._rate_since = 0.0
            self._rate_bytes = 0

    def body_progress(self, size: int) -> None:
        """``size`` body bytes arrived: the client's silence starts now."""
        self._last = self._loop.time()
        self._rate_bytes += size

    def server_resumed(self) -> None:
        """The server reads again (it had stopped, or awaited the app for a 100 Continue): the client's
        silence starts now, and its rate is measured from now."""
        self._last = self._rate_since = self._loop.time()
        self._rate_bytes = 0

    def body_wait(self) -> None:
        """More body is due (called after a read that did not complete it; bodiless requests never are)."""
        if self.phase == Phase.BODY:
            if not self._last:
                self._last = self._loop.time()
            if not self._rate_since:
                self._rate_since = self._last
            self._wake_by(self._last + self._limits.body_timeout_s)

    def body_end(self) -> None:
        if self.phase != Phase.CLOSED:
            self.phase = Phase.IDLE

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.phase = Phase.CLOSED

    def _wake_by(self, when: float) -> None:
        if self._timer is not None:
            if self._timer_at <= when:
                return  # it fires first, and looks again
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = None
        now = self._loop.time()
        if self.phase == Phase.HEADERS:
            if now < self._due - 0.001:
                self._wake_by(self._due)
                return
            self.phase = Phase.CLOSED
            self._headers_expired()
        elif self.phase == Phase.BODY:
            limits = self._limits
            if self._server_waits() or not self._last:
                self._last = self._rate_since = now
                self._rate_bytes = 0
            due = self._last + limits.body_timeout_s
            if now >= due - 0.001:
                self.phase = Phase.CLOSED
                self._body_expired(body_timeout_message(limits))
                return
            measured = now - self._rate_since
            if limits.body_min_rate and measured >= limits.body_timeout_s - 0.001 \
                    and self._rate_bytes < limits.body_min_rate * measured:
                self.phase = Phase.CLOSED
                self._body_expired(body_rate_message(limits))
                return
            self._wake_by(due)


class WatchedFlow(FlowControl):
    """uvicorn's flow control, telling the clock when the app asks for more of the body after the server
    had stopped reading (past 64 KiB unread), or after a ``100 Continue`` (uvicorn sends it then)."""

    def __init__(self, transport: asyncio.Transport, clock: RequestClock) -> None:
        super().__init__(transport)
        self.clock = clock
        self.continue_pending = False

    def resume_reading(self) -> None:  # on every receive(): kept cheap
        if self.read_paused:
            FlowControl.resume_reading(self)
            self.clock.server_resumed()
        elif self.continue_pending:
            self.continue_pending = False
            self.clock.server_resumed()


def header_timeout_message(limits: ReadLimits) -> str:
    return f"the request's headers did not arrive within {limits.header_timeout_s:g} s"


def body_timeout_message(limits: ReadLimits) -> str:
    return f"no byte of the request's body arrived for {limits.body_timeout_s:g} s"


def body_rate_message(limits: ReadLimits) -> str:
    return f"the request's body arrived at less than {limits.body_min_rate:,} bytes a second"


def not_http(message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's 400 for what its parser cannot read ("Invalid HTTP request received."), as the JSON error."""
    return refusal(400, f"the request is not valid HTTP/1.1 ({message.rstrip('.')})", default_headers)


def too_large(limits: ReadLimits, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    return refusal(431, f"the request's line and headers exceed {limits.max_header_bytes} bytes", default_headers)


def expire_body(cycle: Any, transport: asyncio.Transport, message: str,
                default_headers: list[tuple[bytes, bytes]], may_answer: bool) -> None:
    """The body stalled: the app's ``receive()`` answers ``http.disconnect``, the client 408 if it can."""
    log.info("closing a connection: %s", message)
    if cycle is not None:
        if may_answer and not cycle.response_started:
            transport.write(refusal(408, message, default_headers))
        if not cycle.response_complete:
            cycle.disconnected = True  # the app's sends are dropped from now on
            cycle.message_event.set()
    transport.close()


class WithDeadlines(asyncio.Protocol):
    """What both parsers' protocols add to uvicorn's: the clock, flow control that tells it when the
    server reads again, and the layer's JSON refusals. Listed before uvicorn's protocol among the
    bases (``class P(WithDeadlines, HttpToolsProtocol)``); each subclass says when a request has begun
    (``_request_begun``) and whether a 408 may still be written (``_may_answer``)."""

    if TYPE_CHECKING:  # set by uvicorn's protocol
        loop: asyncio.AbstractEventLoop
        transport: asyncio.Transport
        flow: FlowControl
        cycle: Any
        server_state: Any

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)  # type: ignore[call-arg]  # uvicorn's protocol
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

    def _clock_read(self, size: int) -> bool:
        """Tells the clock a read of ``size`` bytes came; True when it begins a request (its headers are due)."""
        clock = self.clock
        if clock.phase == Phase.BODY:
            clock.body_progress(size)
        elif clock.phase == Phase.IDLE and (self.cycle is None or self.cycle.response_complete):
            clock.headers_begin()
            return True
        return False

    def send_400_response(self, msg: str) -> None:
        self.clock.close()
        self.transport.write(not_http(msg, self.server_state.default_headers))
        self.transport.close()

    def _request_begun(self) -> bool:
        raise NotImplementedError

    def _may_answer(self) -> bool:
        raise NotImplementedError

    def _server_waits(self) -> bool:
        return self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue)

    def _headers_expired(self) -> None:
        if self.transport.is_closing():
            return
        log.info("closing a connection: %s", header_timeout_message(self.read_limits))
        if self._request_begun():
            self.transport.write(refusal(408, header_timeout_message(self.read_limits),
                                         self.server_state.default_headers))
        self.transport.close()

    def _body_expired(self, message: str) -> None:
        if not self.transport.is_closing():
            expire_body(self.cycle, self.transport, message, self.server_state.default_headers, self._may_answer())
