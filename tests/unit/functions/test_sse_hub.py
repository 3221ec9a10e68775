"""The SSE hub: store reads per room (not per viewer), shared events, bounded viewers, slow ones dropped."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from functions.adapters.memory import MemoryResultStore
from functions.homepage.sse import End, StoreUnavailable, StreamHub, StreamPage, StreamsFull, Subscription
from handlers.model import ProcessedBarrage
from handlers.ports import Page

TICK_S = 0.02


class CountingStore(MemoryResultStore):
    """Counts reads per room; ``fail_latest`` and ``fail_since`` make them raise."""

    def __init__(self) -> None:
        super().__init__()
        self.since_calls: Counter[str] = Counter()
        self.latest_calls: Counter[str] = Counter()
        self.fail_latest = False
        self.fail_since: set[str] = set()  # rooms whose reads fail

    def since(self, room: str, cursor_token: str | None, limit: int) -> Page:
        self.since_calls[room] += 1
        if room in self.fail_since:
            raise ConnectionError("store unreachable")
        return super().since(room, cursor_token, limit)

    def latest(self, room: str, limit: int) -> Page:
        self.latest_calls[room] += 1
        if self.fail_latest:
            raise ConnectionError("store unreachable")
        return super().latest(room, limit)


def make_hub(store: CountingStore, max_streams: int = 10_000, queue_size: int = 64) -> StreamHub:
    async def since(room: str, cursor: str | None, limit: int) -> Page:
        return store.since(room, cursor, limit)

    async def latest(room: str, limit: int) -> Page:
        return store.latest(room, limit)

    return StreamHub(since, latest, max_streams=max_streams, tick_s=TICK_S, queue_size=queue_size)


def result(room: str, index: int) -> ProcessedBarrage:
    return ProcessedBarrage(id=f"{room}-{index:04d}", room=room, user="u", text=f"t{index}", lane=0,
                            colour="#ffffff", sent_at=1_767_225_600_000 + index, processed_at=1_767_225_600_000 + index)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


async def drain(subscription: Subscription) -> list[StreamPage | End]:
    got: list[StreamPage | End] = []
    while not subscription.queue.empty():
        got.append(subscription.queue.get_nowait())
    return got


def test_store_reads_grow_with_rooms_not_viewers() -> None:
    store = CountingStore()
    hub = make_hub(store)

    async def scenario() -> None:
        lone = await hub.subscribe("quiet")
        crowd = [await hub.subscribe("busy") for _ in range(500)]
        assert hub.open_streams == 501 and hub.rooms == 2 and hub.viewers("busy") == 500
        before = store.since_calls.copy()
        await asyncio.sleep(TICK_S * 25)
        reads = {room: store.since_calls[room] - before[room] for room in ("quiet", "busy")}
        # About one read per room per tick, whether the room has 1 viewer or 500.
        assert 5 <= reads["busy"] <= 30, reads
        assert abs(reads["busy"] - reads["quiet"]) <= 5, reads
        assert store.latest_calls == Counter({"quiet": 1, "busy": 1})  # where each room starts: once

        store.put_many([result("busy", i) for i in range(3)])
        await asyncio.sleep(TICK_S * 3)
        pages = [await drain(s) for s in crowd]
        assert all(len(p) == 1 for p in pages)
        first = pages[0][0]
        assert isinstance(first, StreamPage) and [i["text"] for i in first.items] == ["t0", "t1", "t2"]
        # Encoded once, the same object for every viewer of the room.
        assert all(p[0] is first for p in pages)
        assert first.chunk.startswith(f"id: {first.cursor}\n".encode())
        assert await drain(lone) == []
        for subscription in [lone, *crowd]:
            subscription.close()
        assert hub.open_streams == 0
        await asyncio.sleep(TICK_S * 3)
        assert hub.rooms == 0  # a room without viewers stops reading
        settled = store.since_calls.copy()
        await asyncio.sleep(TICK_S * 5)
        assert store.since_calls == settled

    run(scenario)


def test_a_slow_viewer_is_dropped_and_its_queue_freed() -> None:
    store = CountingStore()
    hub = make_hub(store, queue_size=3)

    async def scenario() -> None:
        fast = await hub.subscribe("r")
        slow = await hub.subscribe("r")
        received: list[StreamPage] = []
        for index in range(6):  # one page per tick; the slow viewer never reads
            store.put_many([result("r", index)])
            await asyncio.sleep(TICK_S * 3)
            assert slow.queue.qsize() <= 3  # bounded, whatever happens
            received.extend(p for p in await drain(fast) if isinstance(p, StreamPage))
        assert [i["text"] for p in received for i in p.items] == [f"t{i}" for i in range(6)]
        assert slow.ended is End.DROPPED
        assert await drain(slow) == [End.DROPPED]  # what it held is gone; only the reason is left
        assert hub.viewers("r") == 1
        assert hub.open_streams == 2  # its connection still counts until it closes
        slow.close()
        assert hub.open_streams == 1
        fast.close()

    run(scenario)


def test_streams_are_capped() -> None:
    store = CountingStore()
    hub = make_hub(store, max_streams=2)

    async def scenario() -> None:
        first, second = await hub.subscribe("a"), await hub.subscribe("b")
        with pytest.raises(StreamsFull):
            await hub.subscribe("a")
        first.close()
        first.close()  # closing twice gives back one slot, not two
        third = await hub.subscribe("a")
        with pytest.raises(StreamsFull):
            await hub.subscribe("c")
        for subscription in (second, third):
            subscription.close()
        assert hub.open_streams == 0

    run(scenario)


def test_no_streams_at_all_with_a_cap_of_zero() -> None:
    hub = make_hub(CountingStore(), max_streams=0)

    async def scenario() -> None:
        with pytest.raises(StreamsFull):
            await hub.subscribe("a")

    run(scenario)


def test_a_failing_read_ends_every_stream_of_the_room_and_the_room_restarts() -> None:
    store = CountingStore()
    hub = make_hub(store)

    async def scenario() -> None:
        viewers = [await hub.subscribe("r") for _ in range(3)]
        other = await hub.subscribe("fine")
        store.fail_since = {"r"}
        await asyncio.sleep(TICK_S * 3)
        for viewer in viewers:
            assert viewer.ended is End.PROBLEM
            assert await drain(viewer) == [End.PROBLEM]
        store.fail_since = set()
        assert other.ended is None  # other rooms go on
        for viewer in viewers:
            viewer.close()
        again = await hub.subscribe("r")
        assert store.latest_calls["r"] == 2  # a fresh room
        store.put_many([result("r", 1)])
        await asyncio.sleep(TICK_S * 3)
        assert [type(e) for e in await drain(again)] == [StreamPage]
        again.close()
        other.close()

    run(scenario)


def test_a_room_that_cannot_start_refuses_its_viewers() -> None:
    store = CountingStore()
    store.fail_latest = True
    hub = make_hub(store)

    async def scenario() -> None:
        with pytest.raises(StoreUnavailable):
            await hub.subscribe("r")
        assert hub.open_streams == 0 and hub.rooms == 0
        store.fail_latest = False
        (await hub.subscribe("r")).close()

    run(scenario)


def test_a_room_keeps_reading_while_pages_are_full() -> None:
    store = CountingStore()
    hub = make_hub(store)

    async def scenario() -> None:
        viewer = await hub.subscribe("big")
        store.put_many([result("big", i) for i in range(1200)])  # more than two pages of 500
        await asyncio.sleep(TICK_S * 3)
        pages = [p for p in await drain(viewer) if isinstance(p, StreamPage)]
        assert [len(p.items) for p in pages] == [500, 500, 200]
        viewer.close()

    run(scenario)


def test_a_page_without_what_a_viewer_already_has() -> None:
    page = StreamPage.of([{"id": "a", "text": "1"}, {"id": "b", "text": "2"}], "c1")
    assert page.without(set()) is page
    assert page.without({"x"}) is page
    rest = page.without({"a"})
    assert rest is not None and [i["id"] for i in rest.items] == ["b"] and rest.cursor == "c1"
    assert b'"id":"a"' not in rest.chunk
    assert page.without({"a", "b"}) is None
