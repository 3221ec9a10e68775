"""Server-Sent Events: one hub per process fans each room's new results out to its viewers.

Store reads grow with rooms, not viewers: each room with at least one viewer has one task that
reads what is new (``since`` its cursor) once per tick, encodes it once as an SSE event and
offers the same bytes to every viewer of the room. A viewer only reads the store when it
connects, to catch up from its own cursor (``Last-Event-ID``).

Memory per viewer is bounded: a viewer holds at most ``queue_size`` pending events (shared
objects, not copies). A viewer that falls that far behind is dropped, its queue freed at once;
its stream ends and the browser reconnects from the last event it did get, so nothing is lost
and nothing is buffered without bound.

Joining without gaps: a viewer registers with the room first, then catches up from its cursor
to the end of the store, then forwards the room's events, skipping items it already got while
catching up (the room's reads and the catch-up may overlap; they cannot leave a hole).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from handlers.fetch import MAX_LIMIT
from handlers.ports import Page

log = logging.getLogger("barrage.homepage.sse")

ReadSince = Callable[[str, "str | None", int], Awaitable[Page]]
ReadLatest = Callable[[str, int], Awaitable[Page]]

STREAM_HEADERS = {
    "Cache-Control": "no-cache, no-store",
    # Proxies (nginx, Knative's queue-proxy) must not buffer the stream.
    "X-Accel-Buffering": "no",
}


def sse_event(data: Any, event_id: str | None = None, event: str | None = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    # json.dumps never emits a raw newline, so the payload is one data: line.
    lines.append(f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}")
    return "\n".join(lines) + "\n\n"


@dataclass(frozen=True, slots=True)
class StreamPage:
    """One page of results as an SSE event, encoded once and shared by every viewer of its room."""

    items: tuple[dict[str, Any], ...]
    cursor: str
    chunk: bytes
    ids: frozenset[str]

    @classmethod
    def of(cls, items: Iterable[dict[str, Any]], cursor: str) -> StreamPage:
        listed = tuple(items)
        chunk = sse_event({"items": list(listed), "cursor": cursor}, event_id=cursor).encode("utf-8")
        return cls(listed, cursor, chunk, frozenset(str(item["id"]) for item in listed))

    @classmethod
    def from_page(cls, page: Page) -> StreamPage:
        return cls.of((r.to_dict() for r in page.items), page.cursor)

    def without(self, seen: frozenset[str] | set[str]) -> StreamPage | None:
        """This page minus items a viewer already has; None when nothing is left to send."""
        if self.ids.isdisjoint(seen):
            return self
        rest = [item for item in self.items if str(item["id"]) not in seen]
        return StreamPage.of(rest, self.cursor) if rest else None


class End(enum.Enum):
    """Why a viewer's stream stops before its lifetime is up."""

    PROBLEM = "problem"  # the room's store read failed
    DROPPED = "dropped"  # the viewer fell queue_size events behind


class StreamsFull(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} event streams are open, the most allowed")
        self.limit = limit


class StoreUnavailable(Exception):
    """The room's first read failed: no stream can start from it now."""


class Subscription:
    """One viewer of one room: a bounded queue of events, ended by the hub or by the viewer."""

    def __init__(self, hub: StreamHub, room: str, queue_size: int) -> None:
        self.hub = hub
        self.room = room
        self.queue: asyncio.Queue[StreamPage | End] = asyncio.Queue(queue_size)
        self.ended: End | None = None
        self.closed = False

    def offer(self, page: StreamPage) -> bool:
        """Queue ``page``; False (and the viewer dropped) when its queue is full."""
        if self.ended is not None:
            return False
        try:
            self.queue.put_nowait(page)
        except asyncio.QueueFull:
            self.end(End.DROPPED)
            return False
        return True

    def end(self, reason: End) -> None:
        if self.ended is not None:
            return
        self.ended = reason
        while not self.queue.empty():  # free what it holds now, and make room for the reason
            self.queue.get_nowait()
        self.queue.put_nowait(reason)

    async def next(self, timeout_s: float) -> StreamPage | End | None:
        """The next event or end; None when ``timeout_s`` passes first."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        try:
            return await asyncio.wait_for(self.queue.get(), max(0.0, timeout_s))
        except asyncio.TimeoutError:
            return None

    def close(self) -> None:
        """The viewer is gone (or done): leave the room and give back the stream slot."""
        if not self.closed:
            self.closed = True
            self.hub._leave(self)


@dataclass(eq=False)
class _Room:
    name: str
    loop: asyncio.AbstractEventLoop
    ready: asyncio.Future[None]
    subscribers: set[Subscription] = field(default_factory=set)
    cursor: str | None = None
    task: asyncio.Task[None] | None = None


class StreamHub:
    """The rooms with viewers in this process, each read once per tick by its own task."""

    def __init__(self, read_since: ReadSince, read_latest: ReadLatest, *, max_streams: int, tick_s: float,
                 queue_size: int = 64) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._read_since = read_since
        self._read_latest = read_latest
        self.max_streams = max_streams
        self.tick_s = tick_s
        self.queue_size = queue_size
        self._rooms: dict[str, _Room] = {}
        self._open = 0

    @property
    def open_streams(self) -> int:
        return self._open

    @property
    def rooms(self) -> int:
        return len(self._rooms)

    def viewers(self, room: str) -> int:
        state = self._rooms.get(room)
        return len(state.subscribers) if state is not None else 0

    async def subscribe(self, room: str) -> Subscription:
        """Join ``room``; raises ``StreamsFull`` beyond the cap, ``StoreUnavailable`` if the room cannot start."""
        if self._open >= self.max_streams:
            raise StreamsFull(self.max_streams)
        loop = asyncio.get_running_loop()
        state = self._rooms.get(room)
        if state is None or state.loop is not loop or (state.task is not None and state.task.done()):
            state = _Room(room, loop, loop.create_future())
            self._rooms[room] = state
            state.task = loop.create_task(self._run(state), name=f"sse-room-{room}")
        subscription = Subscription(self, room, self.queue_size)
        self._open += 1
        state.subscribers.add(subscription)
        try:
            await asyncio.shield(state.ready)
        except BaseException:
            subscription.close()
            raise
        return subscription

    def cursor(self, room: str) -> str:
        """Where the room's reads stand: a viewer starting "from now" starts here."""
        state = self._rooms.get(room)
        if state is None or state.cursor is None:
            raise KeyError(room)
        return state.cursor

    def _leave(self, subscription: Subscription) -> None:
        self._open -= 1
        state = self._rooms.get(subscription.room)
        if state is not None:
            state.subscribers.discard(subscription)
            # An empty room's task ends at its next tick; a viewer arriving before then reuses it.

    def _forget(self, state: _Room) -> None:
        if self._rooms.get(state.name) is state:
            del self._rooms[state.name]

    async def _run(self, state: _Room) -> None:
        try:
            state.cursor = (await self._read_latest(state.name, 1)).cursor
        except Exception as exc:
            log.warning("event streams for room %s: first store read failed: %s", state.name, exc)
            self._forget(state)
            state.ready.set_exception(StoreUnavailable(str(exc)))
            state.ready.exception()  # retrieved here, so a room nobody awaits logs nothing more
            return
        state.ready.set_result(None)
        try:
            while state.subscribers:
                try:
                    page = await self._read_since(state.name, state.cursor, MAX_LIMIT)
                except Exception:  # the store hiccupped: end these streams, each viewer resumes from its cursor
                    log.exception("event streams for room %s: store read failed", state.name)
                    self._forget(state)
                    for subscription in list(state.subscribers):
                        subscription.end(End.PROBLEM)
                    return
                if page.items:
                    state.cursor = page.cursor
                    event = StreamPage.from_page(page)
                    for subscription in list(state.subscribers):
                        if not subscription.offer(event):
                            state.subscribers.discard(subscription)
                    if len(page.items) == MAX_LIMIT:
                        continue  # more waiting: read on without sleeping
                await asyncio.sleep(self.tick_s)
        finally:
            if not state.subscribers:
                self._forget(state)


@dataclass(frozen=True)
class StreamTiming:
    lifetime_s: float
    heartbeat_s: float
    retry_ms: int
    # A write that waits longer than this for the viewer to read: the viewer is stuck, the stream ends.
    send_timeout_s: float = 30.0


class EventStreamResponse(StreamingResponse):
    """One viewer's stream: retry, the catch-up pages, then the room's events, heartbeats, an end.

    ``complete`` False means the catch-up stopped before the end of the store: the stream sends
    what it has and ends, and the browser continues from there.
    """

    def __init__(self, subscription: Subscription, opening: list[StreamPage], seen: set[str], complete: bool,
                 timing: StreamTiming) -> None:
        self.subscription = subscription
        self.opening = opening
        self.seen = seen
        self.complete = complete
        self.timing = timing
        super().__init__(self._events(), media_type="text/event-stream", headers=STREAM_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        timeout_s = self.timing.send_timeout_s

        async def bounded_send(message: Message) -> None:
            # A client that stops reading (a zero TCP window) blocks the write for good; the hub has
            # already dropped it from the room, this also gives its connection back.
            await asyncio.wait_for(send(message), timeout_s)

        try:
            await super().__call__(scope, receive, bounded_send)
        except asyncio.TimeoutError:
            # Returning without finishing the answer makes the server close the connection.
            log.info("event stream for room %s: the viewer stopped reading for %g s; closing it",
                     self.subscription.room, timeout_s)
        finally:
            self.subscription.close()

    async def _events(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        timing = self.timing
        deadline = loop.time() + timing.lifetime_s
        yield f"retry: {timing.retry_ms}\n\n".encode()
        for opening in self.opening:
            yield opening.chunk
        if not self.complete:
            yield b": more to catch up; reconnect\n\n"
            return
        seen = self.seen
        last_write = loop.time()
        subscription = self.subscription
        while True:
            now = loop.time()
            if now >= deadline:
                # A bounded lifetime lets load balancers move viewers; the browser reconnects after retry ms.
                yield b": lifetime reached; reconnect\n\n"
                return
            entry = await subscription.next(min(deadline - now, last_write + timing.heartbeat_s - now))
            if entry is None:
                if loop.time() < deadline:
                    # A comment keeps proxies from closing an idle stream and detects gone clients.
                    yield b": ping\n\n"
                    last_write = loop.time()
                continue
            if entry is End.PROBLEM:
                yield sse_event({"message": "store read failed; reconnecting"}, event="problem").encode()
                return
            if entry is End.DROPPED:
                yield b": too far behind; reconnect\n\n"
                return
            assert isinstance(entry, StreamPage)
            fresh: StreamPage | None = entry
            if seen:
                fresh = entry.without(seen)
                # The room's events come in store order: once one holds nothing the catch-up had,
                # none after it will.
                if fresh is entry:
                    seen = set()
            if fresh is not None:
                yield fresh.chunk
                last_write = loop.time()
