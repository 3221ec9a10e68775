from __future__ import annotations

import pytest

from functions.adapters.memory import MemoryResultStore
from handlers.fetch import MAX_LIMIT, FetchError, fetch, parse_limit
from tests.store_contract import make_result


def test_latest_then_since() -> None:
    store = MemoryResultStore()
    store.put_many([make_result(i=i) for i in range(5)])
    page = fetch(store, "room-1", None, 3)
    assert [r.text for r in page.items] == ["message 2", "message 3", "message 4"]
    store.put_many([make_result(i=9)])
    assert [r.text for r in fetch(store, "room-1", page.cursor, 10).items] == ["message 9"]


def test_empty_cursor_reads_from_the_beginning() -> None:
    store = MemoryResultStore()
    store.put_many([make_result(i=i) for i in range(5)])
    page = fetch(store, "room-1", "", 2)
    assert [r.text for r in page.items] == ["message 0", "message 1"]
    assert fetch(store, "room-1", page.cursor, 10).items[0].text == "message 2"


@pytest.mark.parametrize("cursor", ["nonsense", "x" * 3000])
def test_garbage_cursor_is_a_fetch_error(cursor: str) -> None:
    with pytest.raises(FetchError) as info:
        fetch(MemoryResultStore(), "room-1", cursor)
    assert info.value.parameter == "since"


@pytest.mark.parametrize("room", [None, "", "a b", "r" * 65, 3])
def test_bad_room(room: object) -> None:
    with pytest.raises(FetchError, match="room"):
        fetch(MemoryResultStore(), room)


@pytest.mark.parametrize("raw", ["0", "-1", "abc", str(MAX_LIMIT + 1), "1.5"])
def test_bad_limit(raw: str) -> None:
    with pytest.raises(FetchError, match="limit"):
        parse_limit(raw)


def test_limit_default_and_bounds() -> None:
    assert parse_limit(None) == 100
    assert parse_limit("") == 100
    assert parse_limit(str(MAX_LIMIT)) == MAX_LIMIT
