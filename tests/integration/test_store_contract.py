"""One contract suite, run against every result store."""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from functions.adapters.memory import MemoryResultStore
from functions.adapters.sqlite import SQLiteResultStore
from handlers.ports import InvalidCursor, PutStatus, ResultStore
from tests.store_contract import BASE_MS, StoreCase, make_result, write_in_child


def _memory_case(tmp_path: Path) -> StoreCase:
    store = MemoryResultStore()
    return StoreCase("memory", lambda: store)


def _sqlite_case(tmp_path: Path) -> StoreCase:
    opener = functools.partial(SQLiteResultStore, tmp_path / "barrage.db")
    return StoreCase("sqlite", opener, opener)


def _tablestore_case(tmp_path: Path) -> StoreCase:
    from tests.integration.local.tablestore_support import shared_emulator, store_opener

    opener = store_opener(shared_emulator())
    return StoreCase("tablestore", opener, opener)


CASES = {"memory": _memory_case, "sqlite": _sqlite_case, "tablestore": _tablestore_case}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreCase]:
    yield CASES[request.param](tmp_path)


@pytest.fixture
def store(case: StoreCase) -> ResultStore:
    return case.open()


def drain(store: ResultStore, room: str, cursor: str | None, page: int = 7) -> tuple[list[str], str | None]:
    ids: list[str] = []
    while True:
        result = store.since(room, cursor, page)
        ids.extend(r.id for r in result.items)
        cursor = result.cursor
        if len(result.items) < page:
            return ids, cursor


def test_put_many_stores_each_once_and_reports_duplicates(store: ResultStore) -> None:
    results = [make_result(i=i) for i in range(5)]
    assert [o.status for o in store.put_many(results)] == [PutStatus.STORED] * 5
    again = store.put_many([*results[:3], make_result(i=99)])
    assert [o.status for o in again] == [PutStatus.DUPLICATE] * 3 + [PutStatus.STORED]
    assert [o.id for o in again] == [r.id for r in results[:3]] + [again[3].id]
    assert len(store.latest("room-1", 100).items) == 6


def test_duplicate_inside_one_batch_is_stored_once(store: ResultStore) -> None:
    result = make_result(i=1)
    outcomes = store.put_many([result, result])
    assert [o.status for o in outcomes] == [PutStatus.STORED, PutStatus.DUPLICATE]
    assert [r.id for r in store.latest("room-1", 10).items] == [result.id]


def test_stored_result_round_trips(store: ResultStore) -> None:
    result = make_result(i=3)
    store.put_many([result])
    assert store.latest("room-1", 1).items == [result]


def test_latest_returns_newest_oldest_first_per_room(store: ResultStore) -> None:
    for i in range(10):
        store.put_many([make_result("room-a", i), make_result("room-b", 100 + i)])
    latest = store.latest("room-a", 4)
    assert [r.text for r in latest.items] == ["message 6", "message 7", "message 8", "message 9"]
    assert all(r.room == "room-a" for r in latest.items)
    assert store.latest("empty-room", 5).items == []


def test_since_pages_through_everything_in_order(store: ResultStore) -> None:
    expected = []
    for i in range(30):
        result = make_result("room-a", i)
        expected.append(result.id)
        store.put_many([result, make_result("room-b", 500 + i)])
    ids, _ = drain(store, "room-a", None)
    assert ids == expected


def test_cursor_continues_after_latest(store: ResultStore) -> None:
    store.put_many([make_result(i=i) for i in range(5)])
    cursor = store.latest("room-1", 2).cursor
    assert store.since("room-1", cursor, 10).items == []
    newer = [make_result(i=10 + i) for i in range(3)]
    store.put_many(newer)
    assert [r.id for r in store.since("room-1", cursor, 10).items] == [r.id for r in newer]


def test_cursor_of_an_empty_room_sees_later_results(store: ResultStore) -> None:
    cursor = store.latest("quiet", 10).cursor
    result = make_result("quiet", 1)
    store.put_many([result])
    assert [r.id for r in store.since("quiet", cursor, 10).items] == [result.id]


def test_late_result_is_not_skipped_by_a_polling_reader(store: ResultStore) -> None:
    store.put_many([make_result(i=i, sent_at=BASE_MS + 10_000 + i) for i in range(5)])
    seen, cursor = drain(store, "room-1", None)
    late = make_result(i=50, sent_at=BASE_MS + 1_000)  # stamped before everything already read
    store.put_many([late])
    more, cursor = drain(store, "room-1", cursor)
    assert late.id in more
    assert not set(more) & set(seen)
    again, _ = drain(store, "room-1", cursor)
    assert again == []


@pytest.mark.parametrize("token", ["", "garbage", "!!!", "a" * 5000, "eyJmb28iOjF9"])
def test_garbage_cursor_is_rejected(store: ResultStore, token: str) -> None:
    with pytest.raises(InvalidCursor):
        store.since("room-1", token, 10)


def test_altered_cursor_is_rejected(store: ResultStore) -> None:
    store.put_many([make_result(i=i) for i in range(3)])
    token = store.latest("room-1", 1).cursor
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(InvalidCursor):
        store.since("room-1", tampered, 10)


def test_concurrent_writers_from_two_processes_lose_nothing(case: StoreCase) -> None:
    if case.open_in_child is None:
        pytest.skip(f"the {case.name} store lives in one process")
    store = case.open()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        jobs = [pool.apply_async(write_in_child, (case.open_in_child, "shared", k * 10_000, 400, 20)) for k in range(2)]
        stored = [job.get(timeout=120) for job in jobs]
    assert stored == [400, 400]
    ids, _ = drain(store, "shared", None, page=500)
    assert len(ids) == 800 == len(set(ids))
