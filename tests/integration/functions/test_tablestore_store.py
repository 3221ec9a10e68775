"""TablestoreResultStore through the emulator: volume, injected faults, late rows, claims."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import tablestore as ts

from functions.adapters.tablestore import MAX_SEEN, TablestoreResultStore, claim_key
from handlers.cursor import MAX_TOKEN_LENGTH
from handlers.model import ProcessedBarrage
from handlers.ports import PutStatus
from local.tablestore import TablestoreEmulator
from tests.integration.local.tablestore_support import shared_emulator, store_opener, unique_table
from tests.store_contract import make_result

pytestmark = pytest.mark.integration


class OffsetClock:
    """Wall time shifted by ``offset_ms``: a writer whose clock lags (or a test hook)."""

    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        import time

        return time.time_ns() // 1_000_000 + self.offset_ms


@pytest.fixture
def emulator() -> Iterator[TablestoreEmulator]:
    with TablestoreEmulator() as emu:  # own instance: faults here must not reach other tests
        yield emu


def results(room: str, count: int, start: int = 0) -> list[ProcessedBarrage]:
    return [make_result(room, start + i) for i in range(count)]


def drain(store: TablestoreResultStore, room: str, cursor: str | None = None, page: int = 1000
          ) -> tuple[list[str], str | None]:
    ids: list[str] = []
    while True:
        result = store.since(room, cursor, page)
        ids.extend(r.id for r in result.items)
        cursor = result.cursor
        assert len(cursor) <= MAX_TOKEN_LENGTH
        if len(result.items) < page:
            return ids, cursor


def put_until_settled(store: TablestoreResultStore, batch: list[ProcessedBarrage], rounds: int = 50) -> None:
    """What a caller does: retry FAILED results until each is STORED or DUPLICATE."""
    for _ in range(rounds):
        outcomes = store.put_many(batch)
        batch = [r for r, o in zip(batch, outcomes, strict=True) if o.status is PutStatus.FAILED]
        if not batch:
            return
    raise AssertionError(f"{len(batch)} results still failing")


def test_ten_thousand_barrages_come_back_exactly_once() -> None:
    store = store_opener(shared_emulator())()
    stored = results("big", 10_000)
    for offset in range(0, len(stored), 1000):
        outcomes = store.put_many(stored[offset : offset + 1000])
        assert {o.status for o in outcomes} == {PutStatus.STORED}
    ids, _ = drain(store, "big")
    assert ids == [r.id for r in stored]
    assert store.latest("big", 3).items == stored[-3:]


def test_injected_busy_calls_and_row_failures_lose_and_duplicate_nothing(emulator: TablestoreEmulator) -> None:
    store = store_opener(emulator)()
    emulator.faults.configure({"seed": 7, "call_failure_rate": 0.2, "row_failure_rate": 0.1})
    stored = results("chaos", 2_000)
    for offset in range(0, len(stored), 250):
        put_until_settled(store, stored[offset : offset + 250])
    outcomes = store.put_many(stored[:300])  # a redelivered batch, still under faults
    assert PutStatus.STORED not in {o.status for o in outcomes}
    injected = emulator.faults.describe()["injected_calls"]
    ids, _ = drain(store, "chaos", page=700)
    emulator.faults.clear()
    assert injected > 50
    assert sorted(ids) == sorted(r.id for r in stored)
    assert len(ids) == len(set(ids))


def test_result_stored_late_reaches_a_polling_reader_exactly_once() -> None:
    emulator = shared_emulator()
    table = unique_table()
    reader = store_opener(emulator, table)()
    on_time = store_opener(emulator, table)()
    lagging = store_opener(emulator, table, clock=OffsetClock(-3_000))()  # keys 3 s in the past
    on_time.put_many(results("late", 5))
    seen, cursor = drain(reader, "late", page=2)
    late = make_result("late", 99)
    assert lagging.put_many([late])[0].status is PutStatus.STORED
    more, cursor = drain(reader, "late", cursor, page=2)
    assert more == [late.id]
    assert late.id not in seen
    assert drain(reader, "late", cursor)[0] == []
    # The key sorts before everything already read, so a plain "after my position" cursor would skip it.
    assert reader.latest("late", 6).items[0].id == late.id


def test_result_later_than_the_grace_window_is_the_documented_limit() -> None:
    emulator = shared_emulator()
    table = unique_table()
    reader = store_opener(emulator, table)()
    stale_writer = store_opener(emulator, table, clock=OffsetClock(-(reader.grace_ms + 5_000)))()
    store_opener(emulator, table)().put_many(results("bound", 3))
    _, cursor = drain(reader, "bound")
    stale_writer.put_many([make_result("bound", 50)])
    assert drain(reader, "bound", cursor)[0] == []


def test_cursor_window_is_bounded_and_still_pages_everything() -> None:
    store = store_opener(shared_emulator())()
    long_ids = [ProcessedBarrage(id=f"{i:04d}" + "x" * 60, room="wide", user="u", text="t", lane=0, colour="#000000",
                                 sent_at=1, processed_at=2) for i in range(MAX_SEEN * 3)]
    store.put_many(long_ids)
    ids, cursor = drain(store, "wide", page=MAX_SEEN * 2)
    assert ids == [r.id for r in long_ids]
    assert cursor is not None and len(cursor) <= MAX_TOKEN_LENGTH
    assert len(store.latest("wide", MAX_SEEN * 3).cursor) <= MAX_TOKEN_LENGTH


def test_failed_store_releases_its_claim(emulator: TablestoreEmulator) -> None:
    calls = itertools.count()

    class FailTimelineWrites(OffsetClock):
        """The second clock read starts the timeline phase: from then on BatchWriteRow fails."""

        def now_ms(self) -> int:
            if next(calls) == 1:
                emulator.faults.fail_next(1000, "OTSParameterInvalid", ["BatchWriteRow"])
            return super().now_ms()

    opener = store_opener(emulator)
    store = opener(clock=FailTimelineWrites())
    result = make_result("release", 1)
    outcome = store.put_many([result])[0]
    emulator.faults.clear()
    assert outcome.status is PutStatus.FAILED and "OTSParameterInvalid" in outcome.reason
    assert store.latest("release", 10).items == []
    retry = opener()
    assert retry.put_many([result])[0].status is PutStatus.STORED  # not blocked by a leftover claim
    assert [r.id for r in retry.latest("release", 10).items] == [result.id]


def test_claim_of_a_writer_that_gave_up_is_taken_over() -> None:
    emulator = shared_emulator()
    store = store_opener(emulator)()
    abandoned, in_flight = make_result("takeover", 1), make_result("takeover", 2)
    now = OffsetClock().now_ms()
    for result, stamp in (((abandoned, (now - store.stale_claim_ms - 1_000) * 1000), (in_flight, now * 1000))):
        key = [("pk", claim_key(result.id)), ("ts", 0), ("id", result.id)]
        store.client.put_row(store.table_name, ts.Row(key, [("room", "takeover"), ("stored_at", stamp),
                                                            ("claim", "someone-else")]))
    outcomes = store.put_many([abandoned, in_flight])
    assert [o.status for o in outcomes] == [PutStatus.STORED, PutStatus.FAILED]
    assert "another writer" in outcomes[1].reason
    assert [r.id for r in store.latest("takeover", 10).items] == [abandoned.id]
    assert store.put_many([abandoned])[0].status is PutStatus.DUPLICATE


def test_builds_from_config_with_function_credentials() -> None:
    from types import SimpleNamespace

    import tablestore

    from functions.adapters.tablestore import store_from_config
    from functions.config import TablestoreConfig
    from functions.lifecycle import CredentialsSource

    emulator = shared_emulator()
    config = TablestoreConfig(endpoint=emulator.endpoint, instance=emulator.instance, table=unique_table(),
                              ttl_seconds=86400)

    def context(secret: str) -> SimpleNamespace:  # FC's context.credentials, camelCase as some runtimes spell it
        return SimpleNamespace(credentials=SimpleNamespace(accessKeyId=emulator.access_key_id,
                                                           accessKeySecret=secret, securityToken=None))

    keys = CredentialsSource()
    keys.observe(context(emulator.access_key_secret))
    store = store_from_config(config, keys)
    assert store.client.describe_table(store.table_name).table_options.time_to_live == 86400
    # The next invocation brings other keys: the store signs with them from its next call on.
    keys.observe(context("rotated-away"))
    with pytest.raises(tablestore.OTSServiceError):
        store.client.describe_table(store.table_name)
    keys.observe(context(emulator.access_key_secret))
    assert store.latest("room-x", 1).items == []
    with pytest.raises(ValueError, match="OTS_KEYID"):
        store_from_config(config)
