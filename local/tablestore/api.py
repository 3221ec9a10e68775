"""Request handlers: decode a protobuf request, run it on the engine, encode the response.

Anything the emulator does not implement is refused with OTSParameterInvalid and a message
saying so, never silently ignored: a test passing here must mean the same call works.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import tablestore.protobuf.table_store_filter_pb2 as filter_pb2
import tablestore.protobuf.table_store_pb2 as pb2
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from local.tablestore import plainbuffer
from local.tablestore.engine import (
    ConditionCheck,
    Engine,
    OTSError,
    PkColumn,
    ReadOptions,
    StoredRow,
    Table,
    TableMeta,
    invalid,
)
from local.tablestore.plainbuffer import PlainBufferError, PlainRow, PrimaryKeyValue, Special, Value

MAX_BATCH_WRITE_ROWS = 200
MAX_BATCH_WRITE_BYTES = 4 * 1024 * 1024
MAX_RANGE_ROWS = 5000
MAX_RANGE_BYTES = 4 * 1024 * 1024

_PK_TYPE_NAMES = {pb2.INTEGER: "INTEGER", pb2.STRING: "STRING", pb2.BINARY: "BINARY", pb2.PK_BOOLEAN: "BOOLEAN"}
_PK_TYPE_ENUMS = {"INTEGER": pb2.INTEGER, "STRING": pb2.STRING, "BINARY": pb2.BINARY}
_DEFINED_TYPE_NAMES = {pb2.DCT_INTEGER: "INTEGER", pb2.DCT_DOUBLE: "DOUBLE", pb2.DCT_BOOLEAN: "BOOLEAN",
                       pb2.DCT_STRING: "STRING", pb2.DCT_BLOB: "BINARY"}
_DEFINED_TYPE_ENUMS = {v: k for k, v in _DEFINED_TYPE_NAMES.items()}


class RowFaults:
    """Row-level failures for BatchWriteRow: each row fails with probability ``rate``."""

    def __init__(self) -> None:
        self.rate = 0.0
        self.code = "OTSServerBusy"
        self.message = "Server is busy (injected row failure)."
        self.random = random.Random(0)

    def should_fail(self) -> bool:
        return self.rate > 0 and self.random.random() < self.rate


def _parse(message: Any, body: bytes) -> Any:
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise invalid(f"Request body is not a valid {type(message).__name__}: {exc}") from exc
    return message


def _row(data: bytes) -> PlainRow:
    try:
        return plainbuffer.read_row(data)
    except PlainBufferError as exc:
        raise invalid(f"Invalid PlainBuffer row: {exc}") from exc


def _refuse(feature: str) -> OTSError:
    return invalid(f"{feature} is not supported by the Tablestore emulator.")


def _capacity(read: int = 0, write: int = 0) -> pb2.ConsumedCapacity:
    consumed = pb2.ConsumedCapacity()
    consumed.capacity_unit.read = read
    consumed.capacity_unit.write = write
    return consumed


def _units(size: int) -> int:
    return max(1, math.ceil(size / 4096))


# ---- conditions ----------------------------------------------------------------------------

def _compare(left: Value, right: Value, comparator: int) -> bool:
    comparable = (type(left) is type(right)) or (
        isinstance(left, (int, float)) and isinstance(right, (int, float))
        and not isinstance(left, bool) and not isinstance(right, bool)
    )
    if comparator == filter_pb2.CT_EQUAL:
        return comparable and left == right
    if comparator == filter_pb2.CT_NOT_EQUAL:
        return not (comparable and left == right)
    if not comparable:
        return False
    a: Any = left
    b: Any = right
    if comparator == filter_pb2.CT_GREATER_THAN:
        return bool(a > b)
    if comparator == filter_pb2.CT_GREATER_EQUAL:
        return bool(a >= b)
    if comparator == filter_pb2.CT_LESS_THAN:
        return bool(a < b)
    if comparator == filter_pb2.CT_LESS_EQUAL:
        return bool(a <= b)
    raise _refuse(f"Column comparator {comparator}")


def _column_filter(data: bytes) -> Callable[[StoredRow], bool]:
    """A row condition's column filter (single-column and composite; regex rules refused)."""
    flt = _parse(filter_pb2.Filter(), data)
    if flt.type == filter_pb2.FT_SINGLE_COLUMN_VALUE:
        single = _parse(filter_pb2.SingleColumnValueFilter(), flt.filter)
        if single.HasField("value_trans_rule"):
            raise _refuse("A regex value rule in a column condition")
        try:
            operand = plainbuffer.read_variant(single.column_value)
        except PlainBufferError as exc:
            raise invalid(f"Invalid column condition value: {exc}") from exc

        def check_single(row: StoredRow) -> bool:
            versions = row.columns.get(single.column_name, [])
            if not versions:
                return not single.filter_if_missing
            candidates = versions[:1] if single.latest_version_only else versions
            return any(_compare(value, operand, single.comparator) for _, value in candidates)

        return check_single
    if flt.type == filter_pb2.FT_COMPOSITE_COLUMN_VALUE:
        composite = _parse(filter_pb2.CompositeColumnValueFilter(), flt.filter)
        subs = [_column_filter(sub.SerializeToString()) for sub in composite.sub_filters]
        if composite.combinator == filter_pb2.LO_NOT:
            if len(subs) != 1:
                raise invalid("NOT takes exactly one sub condition.")
            return lambda row: not subs[0](row)
        if len(subs) < 2:
            raise invalid("AND and OR take at least two sub conditions.")
        if composite.combinator == filter_pb2.LO_AND:
            return lambda row: all(sub(row) for sub in subs)
        return lambda row: any(sub(row) for sub in subs)
    raise _refuse("Column pagination filters")


def _condition(condition: pb2.Condition, *, delete: bool = False, auto_increment: bool = False) -> ConditionCheck:
    existence = condition.row_existence
    if delete and existence == pb2.EXPECT_NOT_EXIST:
        raise invalid("Invalid condition: EXPECT_NOT_EXIST while deleting row.")
    if auto_increment and existence != pb2.IGNORE:
        raise invalid("A row with an auto-increment primary key can only be written with condition IGNORE.")
    column_check = _column_filter(condition.column_condition) if condition.HasField("column_condition") else None

    def check(row: StoredRow | None) -> bool:
        if existence == pb2.EXPECT_EXIST and row is None:
            return False
        if existence == pb2.EXPECT_NOT_EXIST and row is not None:
            return False
        if column_check is not None and row is not None:
            return column_check(row)
        return True

    return check


def _return_row(return_content: pb2.ReturnContent, primary_key: list[tuple[str, PrimaryKeyValue]]) -> bytes:
    if return_content.return_type == pb2.RT_PK:
        return plainbuffer.write_row(PlainRow(primary_key))
    return b""


def _check_return_content(message: Any) -> None:
    if message.HasField("return_content"):
        content = message.return_content
        if content.return_type not in (pb2.RT_NONE, pb2.RT_PK) or len(content.return_column_names):
            raise _refuse("Returning columns after modification")


def _no_transaction(message: Any) -> None:
    if message.HasField("transaction_id"):
        raise _refuse("Local transactions")


def _uses_auto_increment(table: Table) -> bool:
    return any(c.auto_increment for c in table.meta.primary_key)


# ---- handlers ------------------------------------------------------------------------------

class Api:
    def __init__(self, engine: Engine, row_faults: RowFaults) -> None:
        self.engine = engine
        self.row_faults = row_faults
        self.handlers: dict[str, Callable[[bytes], bytes]] = {
            "CreateTable": self.create_table,
            "DescribeTable": self.describe_table,
            "ListTable": self.list_table,
            "DeleteTable": self.delete_table,
            "PutRow": self.put_row,
            "GetRow": self.get_row,
            "UpdateRow": self.update_row,
            "DeleteRow": self.delete_row,
            "BatchWriteRow": self.batch_write_row,
            "GetRange": self.get_range,
        }

    def call(self, api_name: str, body: bytes) -> bytes:
        handler = self.handlers.get(api_name)
        if handler is None:
            raise _refuse(f"The {api_name} API")
        with self.engine.lock:
            try:
                return handler(body)
            finally:
                self.engine.flush()

    def create_table(self, body: bytes) -> bytes:
        request = _parse(pb2.CreateTableRequest(), body)
        for name, feature in (("stream_spec", "Streams"), ("sse_spec", "Server-side encryption")):
            if request.HasField(name):
                raise _refuse(feature)
        if len(request.index_metas):
            raise _refuse("Secondary indexes")
        if len(request.partitions):
            raise _refuse("Pre-split partitions")
        primary_key = []
        for column in request.table_meta.primary_key:
            type_name = _PK_TYPE_NAMES.get(column.type, str(column.type))
            auto = column.HasField("option") and column.option == pb2.AUTO_INCREMENT
            primary_key.append(PkColumn(column.name, type_name, auto))
        options = request.table_options
        meta = TableMeta(
            name=request.table_meta.table_name,
            primary_key=primary_key,
            defined_columns=[(d.name, _DEFINED_TYPE_NAMES.get(d.type, "?")) for d in request.table_meta.defined_column],
            time_to_live=options.time_to_live if options.HasField("time_to_live") else -1,
            max_versions=options.max_versions if options.HasField("max_versions") else 1,
            deviation_s=options.deviation_cell_version_in_sec if options.HasField("deviation_cell_version_in_sec")
            else 86400,
            allow_update=options.allow_update if options.HasField("allow_update") else True,
        )
        self.engine.create_table(meta)
        return bytes(pb2.CreateTableResponse().SerializeToString())

    def describe_table(self, body: bytes) -> bytes:
        request = _parse(pb2.DescribeTableRequest(), body)
        meta = self.engine.table(request.table_name).meta
        response = pb2.DescribeTableResponse()
        response.table_meta.table_name = meta.name
        for column in meta.primary_key:
            schema = response.table_meta.primary_key.add()
            schema.name = column.name
            schema.type = _PK_TYPE_ENUMS[column.type]
            if column.auto_increment:
                schema.option = pb2.AUTO_INCREMENT
        for name, type_name in meta.defined_columns:
            defined = response.table_meta.defined_column.add()
            defined.name = name
            defined.type = _DEFINED_TYPE_ENUMS.get(type_name, pb2.DCT_STRING)
        details = response.reserved_throughput_details
        details.capacity_unit.read = 0
        details.capacity_unit.write = 0
        details.last_increase_time = meta.created_ms // 1000
        response.table_options.time_to_live = meta.time_to_live
        response.table_options.max_versions = meta.max_versions
        response.table_options.deviation_cell_version_in_sec = meta.deviation_s
        response.table_options.allow_update = meta.allow_update
        response.sse_details.enable = False
        return bytes(response.SerializeToString())

    def list_table(self, body: bytes) -> bytes:
        _parse(pb2.ListTableRequest(), body)
        response = pb2.ListTableResponse()
        response.table_names.extend(self.engine.list_tables())
        return bytes(response.SerializeToString())

    def delete_table(self, body: bytes) -> bytes:
        request = _parse(pb2.DeleteTableRequest(), body)
        self.engine.delete_table(request.table_name)
        return bytes(pb2.DeleteTableResponse().SerializeToString())

    def put_row(self, body: bytes) -> bytes:
        request = _parse(pb2.PutRowRequest(), body)
        _no_transaction(request)
        _check_return_content(request)
        table = self.engine.table(request.table_name)
        row = _row(request.row)
        if row.delete_marker:
            raise invalid("PutRow row carries a delete marker.")
        check = _condition(request.condition, auto_increment=_uses_auto_increment(table))
        primary_key = self.engine.put(table, row, check)
        response = pb2.PutRowResponse()
        response.consumed.CopyFrom(_capacity(write=_units(len(request.row))))
        response.row = _return_row(request.return_content, primary_key)
        return bytes(response.SerializeToString())

    def update_row(self, body: bytes) -> bytes:
        request = _parse(pb2.UpdateRowRequest(), body)
        _no_transaction(request)
        _check_return_content(request)
        table = self.engine.table(request.table_name)
        row = _row(request.row_change)
        primary_key = self.engine.update(table, row, _condition(request.condition))
        response = pb2.UpdateRowResponse()
        response.consumed.CopyFrom(_capacity(write=_units(len(request.row_change))))
        response.row = _return_row(request.return_content, primary_key)
        return bytes(response.SerializeToString())

    def delete_row(self, body: bytes) -> bytes:
        request = _parse(pb2.DeleteRowRequest(), body)
        _no_transaction(request)
        _check_return_content(request)
        table = self.engine.table(request.table_name)
        row = _row(request.primary_key)
        if not row.delete_marker:
            raise invalid("DeleteRow primary key lacks the delete marker.")
        primary_key = self.engine.delete(table, row, _condition(request.condition, delete=True))
        response = pb2.DeleteRowResponse()
        response.consumed.CopyFrom(_capacity(write=1))
        response.row = _return_row(request.return_content, primary_key)
        return bytes(response.SerializeToString())

    def _read_options(self, request: Any) -> ReadOptions:
        _no_transaction(request)
        if request.HasField("filter"):
            raise _refuse("Column filters on reads")
        if request.HasField("start_column") or request.HasField("end_column"):
            raise _refuse("Column ranges (start_column/end_column)")
        if request.HasField("token"):
            raise _refuse("Wide-row paging tokens")
        options = ReadOptions(columns_to_get=list(request.columns_to_get), max_versions=None)
        if request.HasField("max_versions"):
            if request.max_versions < 1:
                raise invalid("max_versions must be positive.")
            options.max_versions = request.max_versions
        if request.HasField("time_range"):
            time_range = request.time_range
            if time_range.HasField("specific_time"):
                options.time_range = (time_range.specific_time, time_range.specific_time + 1)
            elif time_range.HasField("start_time") and time_range.HasField("end_time"):
                if time_range.start_time >= time_range.end_time:
                    raise invalid("time_range start must be before its end.")
                options.time_range = (time_range.start_time, time_range.end_time)
            else:
                raise invalid("time_range needs start and end, or a specific time.")
        if options.max_versions is None and options.time_range is None:
            raise invalid("Either max_versions or time_range must be set.")
        return options

    def get_row(self, body: bytes) -> bytes:
        request = _parse(pb2.GetRowRequest(), body)
        options = self._read_options(request)
        table = self.engine.table(request.table_name)
        key_row = _row(request.primary_key)
        self.engine.check_primary_key(table, key_row.primary_key)
        live = self.engine.get_live(table, self.engine.sort_key(table, key_row.primary_key))
        projected = self.engine.project(table, live, options) if live is not None else None
        response = pb2.GetRowResponse()
        response.row = plainbuffer.write_row(projected) if projected is not None else b""
        response.consumed.CopyFrom(_capacity(read=_units(len(response.row))))
        return bytes(response.SerializeToString())

    def batch_write_row(self, body: bytes) -> bytes:
        request = _parse(pb2.BatchWriteRowRequest(), body)
        _no_transaction(request)
        total_rows = sum(len(t.rows) for t in request.tables)
        if total_rows == 0:
            raise invalid("No row specified in the request of BatchWriteRow.")
        if total_rows > MAX_BATCH_WRITE_ROWS:
            raise invalid(f"Rows count exceeds the upper limit: {MAX_BATCH_WRITE_ROWS}.")
        if sum(len(r.row_change) for t in request.tables for r in t.rows) > MAX_BATCH_WRITE_BYTES:
            raise invalid("The total data size of BatchWriteRow request exceeds the limit: 4 MB.")
        names = [t.table_name for t in request.tables]
        if len(set(names)) != len(names):
            raise invalid("Duplicated table name in the request of BatchWriteRow.")
        decoded: list[list[PlainRow]] = []
        for table_request in request.tables:
            rows = []
            seen: set[object] = set()
            for row_request in table_request.rows:
                _check_return_content(row_request)
                row = _row(row_request.row_change)
                rows.append(row)
                if any(v is Special.AUTO_INCREMENT for _, v in row.primary_key):
                    continue
                identity = tuple((n, type(v).__name__, v) for n, v in row.primary_key)
                if identity in seen:
                    # The service refuses the whole request, not just the repeated row.
                    raise invalid("Duplicated primary key in the request of BatchWriteRow.")
                seen.add(identity)
            decoded.append(rows)
        response = pb2.BatchWriteRowResponse()
        for table_request, rows in zip(request.tables, decoded, strict=True):
            table_response = response.tables.add()
            table_response.table_name = table_request.table_name
            for row_request, row in zip(table_request.rows, rows, strict=True):
                result = table_response.rows.add()
                try:
                    if self.row_faults.should_fail():
                        raise OTSError(self.row_faults.code, self.row_faults.message)
                    primary_key = self._write_one(table_request.table_name, row_request, row)
                except OTSError as exc:
                    result.is_ok = False
                    result.error.code = exc.code
                    result.error.message = exc.message
                    continue
                result.is_ok = True
                result.consumed.CopyFrom(_capacity(write=_units(len(row_request.row_change))))
                result.row = _return_row(row_request.return_content, primary_key)
        return bytes(response.SerializeToString())

    def _write_one(self, table_name: str, row_request: Any, row: PlainRow) -> list[tuple[str, PrimaryKeyValue]]:
        table = self.engine.table(table_name)
        if row_request.type == pb2.PUT:
            if row.delete_marker:
                raise invalid("A put row carries a delete marker.")
            check = _condition(row_request.condition, auto_increment=_uses_auto_increment(table))
            return self.engine.put(table, row, check)
        if row_request.type == pb2.UPDATE:
            return self.engine.update(table, row, _condition(row_request.condition))
        if not row.delete_marker:
            raise invalid("A delete row lacks the delete marker.")
        return self.engine.delete(table, row, _condition(row_request.condition, delete=True))

    def get_range(self, body: bytes) -> bytes:
        request = _parse(pb2.GetRangeRequest(), body)
        options = self._read_options(request)
        table = self.engine.table(request.table_name)
        start_row = _row(request.inclusive_start_primary_key)
        end_row = _row(request.exclusive_end_primary_key)
        self.engine.check_primary_key(table, start_row.primary_key, bounds=True)
        self.engine.check_primary_key(table, end_row.primary_key, bounds=True)
        start = self.engine.sort_key(table, start_row.primary_key)
        end = self.engine.sort_key(table, end_row.primary_key)
        forward = request.direction == pb2.FORWARD
        if forward and not start < end:
            raise invalid("Begin key must less than end key in FORWARD.")
        if not forward and not start > end:
            raise invalid("Begin key must more than end key in BACKWARD.")
        limit = MAX_RANGE_ROWS
        if request.HasField("limit"):
            if request.limit <= 0:
                raise invalid("The limit must be greater than 0.")
            limit = min(limit, request.limit)
        bodies: list[bytes] = []
        size = 0
        next_start: list[tuple[str, PrimaryKeyValue]] | None = None
        for _, stored in self.engine.scan(table, start, end, forward):
            projected = self.engine.project(table, stored, options)
            if projected is None:
                continue
            if len(bodies) >= limit:
                next_start = list(stored.primary_key)
                break
            body = plainbuffer.write_row_body(projected)
            if bodies and size + len(body) > MAX_RANGE_BYTES:
                next_start = list(stored.primary_key)
                break
            bodies.append(body)
            size += len(body)
        response = pb2.GetRangeResponse()
        response.rows = plainbuffer.join_rows(bodies)
        if next_start is not None:
            response.next_start_primary_key = plainbuffer.write_row(PlainRow(next_start))
        response.consumed.CopyFrom(_capacity(read=_units(size)))
        return bytes(response.SerializeToString())
