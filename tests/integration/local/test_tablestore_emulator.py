"""The Tablestore emulator driven by the unmodified SDK, with its native row parser and without."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tablestore as ts
import tablestore.protobuf.table_store_pb2 as pb2
from tablestore.auth import RequestContext
from tablestore.retry import NoRetryPolicy

from local.tablestore import ManualClock, TablestoreEmulator
from tests.integration.local.tablestore_support import unique_table

pytestmark = pytest.mark.integration

ALL = [("i", ts.INF_MIN), ("s", ts.INF_MIN), ("b", ts.INF_MIN)]
ALL_END = [("i", ts.INF_MAX), ("s", ts.INF_MAX), ("b", ts.INF_MAX)]
THROUGHPUT = ts.ReservedThroughput(ts.CapacityUnit(0, 0))


@pytest.fixture(scope="module")
def emulator() -> Iterator[TablestoreEmulator]:
    with TablestoreEmulator() as emu:
        yield emu


@pytest.fixture(params=[True, False], ids=["native", "python"])
def client(request: pytest.FixtureRequest, emulator: TablestoreEmulator) -> ts.OTSClient:
    return make_client(emulator, enable_native=request.param)


def make_client(emulator: TablestoreEmulator, **kwargs: object) -> ts.OTSClient:
    options: dict[str, object] = {"retry_policy": NoRetryPolicy(), **kwargs}
    return ts.OTSClient(emulator.endpoint, emulator.access_key_id, emulator.access_key_secret,
                        emulator.instance, **options)


def create(client: ts.OTSClient, schema: list[tuple[str, ...]] | None = None, **options: int) -> str:
    name = unique_table()
    client.create_table(ts.TableMeta(name, schema or [("i", "INTEGER"), ("s", "STRING"), ("b", "BINARY")]),
                        ts.TableOptions(**options), THROUGHPUT)
    return name


def error_of(call: object, *args: object, **kwargs: object) -> ts.OTSServiceError:
    assert callable(call)
    with pytest.raises(ts.OTSServiceError) as info:
        call(*args, **kwargs)
    return info.value


def batch_put(client: ts.OTSClient, table: str, rows: list[ts.Row],
              condition: str = ts.RowExistenceExpectation.IGNORE) -> ts.BatchWriteRowResponse:
    request = ts.BatchWriteRowRequest()
    request.add(ts.TableInBatchWriteRowItem(table, [ts.PutRowItem(row, ts.Condition(condition)) for row in rows]))
    return client.batch_write_row(request)


def scan(client: ts.OTSClient, table: str, start: list[Any], end: list[Any], direction: str = "FORWARD",
         **kwargs: object) -> tuple[list[Any], int]:
    """Every row in the range following next_start_primary_key, and how many calls it took."""
    rows: list[Any] = []
    calls = 0
    next_start = start
    while next_start is not None:
        _, next_start, page, _ = client.get_range(table, direction, next_start, end, **kwargs)
        rows.extend(page)
        calls += 1
    return rows, calls


# ---- tables ------------------------------------------------------------------------------

def test_table_lifecycle(client: ts.OTSClient) -> None:
    name = create(client, [("k", "STRING"), ("n", "INTEGER", ts.PK_AUTO_INCR)], time_to_live=86400 * 2, max_version=3)
    assert name in client.list_table()
    described = client.describe_table(name)
    assert described.table_meta.schema_of_primary_key == [("k", "STRING"), ("n", "INTEGER", ts.PK_AUTO_INCR)]
    assert (described.table_options.time_to_live, described.table_options.max_version) == (86400 * 2, 3)
    again = error_of(client.create_table, ts.TableMeta(name, [("k", "STRING")]), ts.TableOptions(), THROUGHPUT)
    assert (again.code, again.http_status) == ("OTSObjectAlreadyExist", 409)
    client.delete_table(name)
    assert name not in client.list_table()
    missing = error_of(client.describe_table, name)
    assert (missing.code, missing.http_status) == ("OTSObjectNotExist", 404)
    assert error_of(client.delete_table, name).code == "OTSObjectNotExist"


@pytest.mark.parametrize("options", [{"time_to_live": 3600}, {"max_version": 0}])
def test_invalid_table_options_are_refused(client: ts.OTSClient, options: dict[str, int]) -> None:
    error = error_of(client.create_table, ts.TableMeta(unique_table(), [("k", "STRING")]),
                     ts.TableOptions(**options), THROUGHPUT)
    assert (error.code, error.http_status) == ("OTSParameterInvalid", 400)


# ---- single rows -------------------------------------------------------------------------

def test_put_get_round_trips_every_type(client: ts.OTSClient) -> None:
    table = create(client)
    key = [("i", -5), ("s", "ключ"), ("b", bytearray(b"\x00\xff"))]
    client.put_row(table, ts.Row(key, [("text", "hé"), ("n", 2**40), ("f", 0.25), ("ok", False),
                                       ("blob", bytearray(b"\x01\x02"))]))
    _, row, _ = client.get_row(table, key)
    assert row.primary_key == key
    assert {name: value for name, value, _ in row.attribute_columns} == {
        "text": "hé", "n": 2**40, "f": 0.25, "ok": False, "blob": bytearray(b"\x01\x02")}
    _, partial, _ = client.get_row(table, key, columns_to_get=["n"])
    assert [c[:2] for c in partial.attribute_columns] == [("n", 2**40)]
    _, missing, _ = client.get_row(table, [("i", 0), ("s", ""), ("b", bytearray())])
    assert missing is None


def test_row_existence_conditions(client: ts.OTSClient) -> None:
    table = create(client)
    key = [("i", 1), ("s", "a"), ("b", bytearray(b"k"))]
    not_exist = ts.Condition(ts.RowExistenceExpectation.EXPECT_NOT_EXIST)
    exist = ts.Condition(ts.RowExistenceExpectation.EXPECT_EXIST)
    failed = error_of(client.update_row, table, ts.Row(key, {"PUT": [("v", 1)]}), exist)
    assert (failed.code, failed.http_status) == ("OTSConditionCheckFail", 403)
    client.put_row(table, ts.Row(key, [("v", 1)]), not_exist)
    assert error_of(client.put_row, table, ts.Row(key, [("v", 2)]), not_exist).code == "OTSConditionCheckFail"
    client.put_row(table, ts.Row(key, [("v", 3)]), exist)
    client.update_row(table, ts.Row(key, {"PUT": [("w", 4)]}), exist)
    _, row, _ = client.get_row(table, key)
    assert {c[0]: c[1] for c in row.attribute_columns} == {"v": 3, "w": 4}
    bad_delete = error_of(client.delete_row, table, ts.Row(key), not_exist)
    assert bad_delete.code == "OTSParameterInvalid"
    client.delete_row(table, ts.Row(key), exist)
    assert error_of(client.delete_row, table, ts.Row(key), exist).code == "OTSConditionCheckFail"
    client.delete_row(table, ts.Row(key), ts.Condition(ts.RowExistenceExpectation.IGNORE))


def test_column_condition_is_a_compare_and_swap(client: ts.OTSClient) -> None:
    table = create(client)
    key = [("i", 1), ("s", "a"), ("b", bytearray(b"k"))]
    client.put_row(table, ts.Row(key, [("owner", "x")]))

    def swap(expected: str, new: str) -> None:
        condition = ts.Condition(ts.RowExistenceExpectation.EXPECT_EXIST,
                                 ts.SingleColumnCondition("owner", expected, ts.ComparatorType.EQUAL,
                                                          pass_if_missing=False))
        client.update_row(table, ts.Row(key, {"PUT": [("owner", new)]}), condition)

    swap("x", "y")
    assert error_of(swap, "x", "z").code == "OTSConditionCheckFail"
    _, row, _ = client.get_row(table, key)
    assert row.attribute_columns[0][:2] == ("owner", "y")


def test_update_operations_and_max_versions(client: ts.OTSClient) -> None:
    table = create(client, max_version=2)
    key = [("i", 1), ("s", "a"), ("b", bytearray(b"k"))]
    now = ts_now_ms()
    client.put_row(table, ts.Row(key, [("v", "one", now - 3), ("gone", 1), ("count", 10)]))
    client.update_row(table, ts.Row(key, {"PUT": [("v", "two", now - 2)]}), None)
    client.update_row(table, ts.Row(key, {"PUT": [("v", "three", now - 1)]}), None)
    client.update_row(table, ts.Row(key, {"INCREMENT": [("count", 5)], "DELETE_ALL": ["gone"]}), None)
    _, row, _ = client.get_row(table, key, max_version=5)
    columns = [(name, value) for name, value, _ in row.attribute_columns]
    # max_versions=2 kept the newest two of v; the increment wrote a new version of count.
    assert columns == [("count", 15), ("count", 10), ("v", "three"), ("v", "two")]
    client.update_row(table, ts.Row(key, {"DELETE": [("v", None, now - 1)]}), None)
    _, row, _ = client.get_row(table, key, max_version=5)
    assert [(n, v) for n, v, _ in row.attribute_columns if n == "v"] == [("v", "two")]
    _, ranged, _ = client.get_row(table, key, max_version=None, time_range=(now - 2, now - 1))
    assert [(n, v) for n, v, _ in ranged.attribute_columns] == [("v", "two")]


def ts_now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


def test_auto_increment_column(client: ts.OTSClient) -> None:
    table = create(client, [("room", "STRING"), ("seq", "INTEGER", ts.PK_AUTO_INCR)])
    keys = []
    for text in ("a", "b", "c"):
        _, row = client.put_row(table, ts.Row([("room", "r"), ("seq", ts.PK_AUTO_INCR)], [("t", text)]),
                                return_type=ts.ReturnType.RT_PK)
        keys.append(row.primary_key[1][1])
    assert keys == sorted(keys) and len(set(keys)) == 3
    rows, _ = scan(client, table, [("room", "r"), ("seq", ts.INF_MIN)], [("room", "r"), ("seq", ts.INF_MAX)])
    assert [r.attribute_columns[0][1] for r in rows] == ["a", "b", "c"]
    explicit = error_of(client.put_row, table, ts.Row([("room", "r"), ("seq", 5)], [("t", "x")]))
    assert explicit.code == "OTSParameterInvalid"
    conditional = error_of(client.put_row, table, ts.Row([("room", "r"), ("seq", ts.PK_AUTO_INCR)], [("t", "x")]),
                           ts.Condition(ts.RowExistenceExpectation.EXPECT_NOT_EXIST))
    assert conditional.code == "OTSParameterInvalid"


def test_primary_key_type_and_shape_are_checked(client: ts.OTSClient) -> None:
    table = create(client)
    for key in ([("i", "1"), ("s", "a"), ("b", bytearray(b"k"))],  # STRING where INTEGER is declared
                [("i", 1), ("s", "a")],  # too short
                [("s", "a"), ("i", 1), ("b", bytearray(b"k"))],  # wrong order
                [("i", 1), ("s", "a"), ("b", ts.INF_MIN)]):  # INF outside a range
        error = error_of(client.put_row, table, ts.Row(key, [("v", 1)]))
        assert (error.code, error.http_status) == ("OTSParameterInvalid", 400)


# ---- ranges ------------------------------------------------------------------------------

INTEGERS = [-(2**63), -1, 0, 1, 2**63 - 1]
STRINGS = ["", "A", "a", "ab", "z", "é", "中"]
BINARIES = [b"", b"\x00", b"\x01", b"\x01\x00", b"\x7f", b"\x80", b"\xff"]


def test_ordering_of_integer_string_and_binary_keys(client: ts.OTSClient) -> None:
    table = create(client)
    rows = [ts.Row([("i", i), ("s", s), ("b", bytearray(b))], [("v", 1)])
            for i in INTEGERS for s in STRINGS[:3] for b in BINARIES[:3]]
    rows += [ts.Row([("i", 0), ("s", s), ("b", bytearray(b))], [("v", 1)]) for s in STRINGS for b in BINARIES]
    unique = {(tuple(r.primary_key[0:2]), bytes(r.primary_key[2][1])): r for r in rows}
    for offset in range(0, len(unique), 200):
        batch_put(client, table, list(unique.values())[offset : offset + 200])
    got, _ = scan(client, table, ALL, ALL_END)
    keys = [(r.primary_key[0][1], r.primary_key[1][1], bytes(r.primary_key[2][1])) for r in got]
    # Service order: signed integers, strings by UTF-8 bytes, binary by unsigned bytes.
    assert keys == sorted(keys, key=lambda k: (k[0], k[1].encode(), k[2]))
    assert len(keys) == len(unique)
    backward, _ = scan(client, table, ALL_END, ALL, "BACKWARD")
    assert [r.primary_key for r in backward] == [r.primary_key for r in reversed(got)]
    strings = sorted({k[1] for k in keys if k[0] == 0}, key=lambda s: s.encode())
    assert strings == STRINGS
    binaries = [k[2] for k in keys if k[0] == 0 and k[1] == "z"]
    assert binaries == BINARIES


def test_inf_bounds_select_a_prefix(client: ts.OTSClient) -> None:
    table = create(client)
    batch_put(client, table, [ts.Row([("i", i), ("s", s), ("b", bytearray(b"x"))], [("v", i)])
                              for i in (-1, 0, 1) for s in ("a", "b")])
    zero, _ = scan(client, table, [("i", 0), ("s", ts.INF_MIN), ("b", ts.INF_MIN)],
                   [("i", 0), ("s", ts.INF_MAX), ("b", ts.INF_MAX)])
    assert [(r.primary_key[0][1], r.primary_key[1][1]) for r in zero] == [(0, "a"), (0, "b")]
    newest, _ = scan(client, table, [("i", 0), ("s", ts.INF_MAX), ("b", ts.INF_MAX)],
                     [("i", 0), ("s", ts.INF_MIN), ("b", ts.INF_MIN)], "BACKWARD")
    assert [r.primary_key[1][1] for r in newest] == ["b", "a"]
    empty = error_of(client.get_range, table, "FORWARD", ALL_END, ALL)
    assert empty.code == "OTSParameterInvalid"


def test_paging_past_5000_rows_and_4_mb(client: ts.OTSClient) -> None:
    table = create(client)
    total = 5_400
    for offset in range(0, total, 200):
        response = batch_put(client, table, [ts.Row([("i", n), ("s", "r"), ("b", bytearray(b"x"))], [("v", n)])
                                             for n in range(offset, offset + 200)])
        assert response.is_all_succeed()
    _, next_start, first, _ = client.get_range(table, "FORWARD", ALL, ALL_END)
    assert len(first) == 5000 and next_start[0] == ("i", 5000)
    _, _, limited, _ = client.get_range(table, "FORWARD", ALL, ALL_END, limit=7000)
    assert len(limited) == 5000
    rows, calls = scan(client, table, ALL, ALL_END)
    assert [r.primary_key[0][1] for r in rows] == list(range(total)) and calls == 2
    big = create(client)
    value = "x" * (512 * 1024)
    for n in range(12):
        client.put_row(big, ts.Row([("i", n), ("s", "r"), ("b", bytearray(b"x"))], [("v", value)]))
    _, next_start, page, _ = client.get_range(big, "FORWARD", ALL, ALL_END)
    assert 0 < len(page) < 12 and next_start is not None
    rows, calls = scan(client, big, ALL, ALL_END)
    assert len(rows) == 12 and calls >= 2


# ---- BatchWriteRow -----------------------------------------------------------------------

def test_batch_limits(client: ts.OTSClient) -> None:
    table = create(client)
    too_many = error_of(batch_put, client, table,
                        [ts.Row([("i", n), ("s", "r"), ("b", bytearray(b"x"))], [("v", n)]) for n in range(201)])
    assert (too_many.code, too_many.http_status) == ("OTSParameterInvalid", 400)
    too_big = error_of(batch_put, client, table,
                       [ts.Row([("i", n), ("s", "r"), ("b", bytearray(b"x"))], [("v", "x" * (1024 * 1024))])
                        for n in range(5)])
    assert too_big.code == "OTSParameterInvalid"
    rows, _ = scan(client, table, ALL, ALL_END)
    assert rows == []


def test_duplicate_key_in_one_batch_fails_the_whole_request(client: ts.OTSClient) -> None:
    table = create(client)
    key = [("i", 1), ("s", "r"), ("b", bytearray(b"x"))]
    other = [("i", 2), ("s", "r"), ("b", bytearray(b"x"))]
    error = error_of(batch_put, client, table, [ts.Row(other, [("v", 0)]), ts.Row(key, [("v", 1)]),
                                                ts.Row(key, [("v", 2)])])
    assert (error.code, error.http_status) == ("OTSParameterInvalid", 400)
    assert scan(client, table, ALL, ALL_END)[0] == []


def test_batch_reports_each_row(client: ts.OTSClient) -> None:
    table = create(client)
    existing = [("i", 1), ("s", "r"), ("b", bytearray(b"x"))]
    client.put_row(table, ts.Row(existing, [("v", 0)]))
    rows = [ts.Row([("i", n), ("s", "r"), ("b", bytearray(b"x"))], [("v", n)]) for n in range(3)]
    response = batch_put(client, table, rows, ts.RowExistenceExpectation.EXPECT_NOT_EXIST)
    items = response.get_put_by_table(table)
    assert [item.is_ok for item in items] == [True, False, True]
    assert items[1].error_code == "OTSConditionCheckFail"
    request = ts.BatchWriteRowRequest()
    request.add(ts.TableInBatchWriteRowItem(table, [
        ts.UpdateRowItem(ts.Row(existing, {"PUT": [("w", 1)]}), ts.Condition("EXPECT_EXIST")),
        ts.DeleteRowItem(ts.Row([("i", 0), ("s", "r"), ("b", bytearray(b"x"))]), ts.Condition("IGNORE")),
    ]))
    request.add(ts.TableInBatchWriteRowItem("no_such_table", [ts.PutRowItem(ts.Row(existing, [("v", 1)]),
                                                                           ts.Condition("IGNORE"))]))
    mixed = client.batch_write_row(request)
    assert [i.is_ok for i in mixed.get_update_by_table(table)] == [True]
    assert [i.is_ok for i in mixed.get_delete_by_table(table)] == [True]
    assert mixed.get_put_by_table("no_such_table")[0].error_code == "OTSObjectNotExist"
    remaining, _ = scan(client, table, ALL, ALL_END)
    assert [r.primary_key[0][1] for r in remaining] == [1, 2]


# ---- authentication and refusals ---------------------------------------------------------

def test_wrong_secret_wrong_instance_and_sts(emulator: TablestoreEmulator) -> None:
    wrong = ts.OTSClient(emulator.endpoint, emulator.access_key_id, "not-the-secret", emulator.instance,
                         retry_policy=NoRetryPolicy())
    error = error_of(wrong.list_table)
    assert (error.code, error.http_status) == ("OTSAuthFailed", 403)
    elsewhere = ts.OTSClient(emulator.endpoint, emulator.access_key_id, emulator.access_key_secret, "other")
    assert error_of(elsewhere.list_table).code == "OTSAuthFailed"
    emulator.add_credential("STS.key", "sts-secret", "sts-token")
    with_token = ts.OTSClient(emulator.endpoint, "STS.key", "sts-secret", emulator.instance, sts_token="sts-token")
    assert isinstance(with_token.list_table(), tuple)
    without = ts.OTSClient(emulator.endpoint, "STS.key", "sts-secret", emulator.instance)
    assert error_of(without.list_table).code == "OTSAuthFailed"


def test_body_md5_is_verified(emulator: TablestoreEmulator) -> None:
    client = make_client(emulator)
    context = RequestContext(client.credentials_provider.get_credentials())
    query, headers, body = client.protocol.make_request("DescribeTable", client._signer, context, "some_table")
    tampered = body[:-1] + bytes([body[-1] ^ 1])
    request = urllib.request.Request(emulator.endpoint + query, data=tampered, headers=headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    error = pb2.Error()
    error.ParseFromString(info.value.read())
    assert (info.value.code, error.code) == (400, "OTSParameterInvalid")
    assert "MD5" in error.message


def test_unimplemented_features_are_refused(client: ts.OTSClient) -> None:
    table = create(client)
    key = [("i", 1), ("s", "a"), ("b", bytearray(b"k"))]
    client.put_row(table, ts.Row(key, [("v", 1)]))
    refusals = [
        lambda: client.get_row(table, key, column_filter=ts.SingleColumnCondition("v", 1, ts.ComparatorType.EQUAL)),
        lambda: client.get_range(table, "FORWARD", ALL, ALL_END, start_column="a"),
        lambda: client.put_row(table, ts.Row(key, [("v", 1)]), transaction_id="txn"),
        lambda: client.list_search_index(table),
        lambda: client.exe_sql_query("SELECT 1"),
        lambda: client.start_local_transaction(table, key),
        lambda: client.create_table(ts.TableMeta(unique_table(), [("k", "STRING")], [("d", "STRING")]),
                                    ts.TableOptions(), THROUGHPUT,
                                    [ts.SecondaryIndexMeta("idx", ["d"], [])]),
    ]
    for refuse in refusals:
        error = error_of(refuse)
        assert (error.code, error.http_status) == ("OTSParameterInvalid", 400)
        assert "not supported by the Tablestore emulator" in error.message


# ---- TTL, faults, persistence, CLI --------------------------------------------------------

def test_ttl_is_applied_on_read_without_sleeping() -> None:
    clock = ManualClock()
    with TablestoreEmulator(clock=clock) as emulator:
        client = make_client(emulator, enable_native=False)
        table = create(client, time_to_live=86400, max_version=3)
        key = [("i", 1), ("s", "a"), ("b", bytearray(b"k"))]
        client.put_row(table, ts.Row(key, [("v", "old")]))
        clock.advance(86_000 * 1000)
        client.update_row(table, ts.Row(key, {"PUT": [("w", "new")]}), None)
        clock.advance(1_000 * 1000)  # "old" is now past its TTL, "new" is not
        _, row, _ = client.get_row(table, key)
        assert [c[:2] for c in row.attribute_columns] == [("w", "new")]
        clock.advance(86_400 * 1000)
        _, gone, _ = client.get_row(table, key)
        assert gone is None
        assert scan(client, table, ALL, ALL_END)[0] == []
        client.put_row(table, ts.Row(key, [("v", "again")]), ts.Condition("EXPECT_NOT_EXIST"))


def test_fault_injection_in_process_and_over_http(emulator: TablestoreEmulator) -> None:
    client = make_client(emulator)
    emulator.faults.fail_next(2, "OTSServerBusy", ["ListTable"])
    for _ in range(2):
        busy = error_of(client.list_table)
        assert (busy.code, busy.http_status) == ("OTSServerBusy", 503)
    client.list_table()
    retrying = make_client(emulator, retry_policy=ts.NoDelayRetryPolicy() if hasattr(ts, "NoDelayRetryPolicy")
                           else __import__("tablestore.retry").retry.NoDelayRetryPolicy())
    emulator.faults.fail_next(3, "OTSServerBusy")
    retrying.list_table()  # the SDK retries OTSServerBusy by itself

    def admin(method: str, payload: dict[str, object] | None = None) -> dict[str, object]:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(emulator.endpoint + "/_emulator/faults", data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, object] = json.load(response)
            return result

    table = create(client)
    admin("POST", {"row_failure_rate": 1.0, "row_failure_code": "OTSPartitionUnavailable"})
    try:
        response = batch_put(client, table, [ts.Row([("i", n), ("s", "r"), ("b", bytearray(b"x"))], [("v", n)])
                                             for n in range(5)])
    finally:
        state = admin("DELETE")
    assert [i.error_code for i in response.get_put_by_table(table)] == ["OTSPartitionUnavailable"] * 5
    assert state["row_failure_rate"] == 0.0
    assert scan(client, table, ALL, ALL_END)[0] == []
    admin("POST", {"fail_next": 1, "code": "OTSTableNotReady"})
    assert error_of(client.list_table).code == "OTSTableNotReady"


def test_sqlite_file_keeps_data_across_restarts(tmp_path: Path) -> None:
    data = str(tmp_path / "ots.db")
    key = [("i", 1), ("s", "a"), ("b", bytearray(b"k"))]
    with TablestoreEmulator(data_file=data) as first:
        client = make_client(first)
        table = create(client, max_version=2)
        client.put_row(table, ts.Row(key, [("v", "one")]))
        client.update_row(table, ts.Row(key, {"PUT": [("v", "two", ts_now_ms() + 1)]}), None)
        client.put_row(table, ts.Row([("i", 2), ("s", "a"), ("b", bytearray(b"k"))], [("v", "doomed")]))
        client.delete_row(table, ts.Row([("i", 2), ("s", "a"), ("b", bytearray(b"k"))]), None)
    with TablestoreEmulator(data_file=data) as second:
        client = make_client(second)
        assert table in client.list_table()
        _, row, _ = client.get_row(table, key, max_version=2)
        assert [c[1] for c in row.attribute_columns] == ["two", "one"]
        assert len(scan(client, table, ALL, ALL_END)[0]) == 1


def test_cli_serves_until_stopped(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "local.tablestore", "--port", "0", "--instance", "cli",
               "--access-key-id", "cli-key", "--access-key-secret", "cli-secret", "--data", str(tmp_path / "d.db")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[3],
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"OTS_ENDPOINT=(http://127\.0\.0\.1:\d+)", first)
        assert match, first
        assert "OTS_INSTANCENAME=cli OTS_KEYID=cli-key OTS_SECRET=cli-secret" in process.stdout.readline()
        client = ts.OTSClient(match.group(1), "cli-key", "cli-secret", "cli", retry_policy=NoRetryPolicy())
        client.create_table(ts.TableMeta("cli_table", [("k", "STRING")]), ts.TableOptions(), THROUGHPUT)
        request = urllib.request.Request(match.group(1) + "/_emulator/faults", method="POST",
                                         data=json.dumps({"fail_next": 1, "code": "OTSServerBusy"}).encode())
        urllib.request.urlopen(request, timeout=10).close()
        assert error_of(client.list_table).code == "OTSServerBusy"
        assert client.list_table() == ("cli_table",)
    finally:
        process.terminate()
        process.wait(timeout=10)
