"""The emulator's tables: typed primary keys in sort order, versioned cells, TTL, conditions.

Everything here is plain Python (no protobuf, no HTTP): ``api.py`` translates requests.
One lock serialises all operations, so each call is atomic, as a single-row operation is
on the real service. Rows live in memory; with a SQLite file every change is written
through, so data survives restarts.
"""

from __future__ import annotations

import bisect
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from local.tablestore import plainbuffer
from local.tablestore.plainbuffer import Cell, CellOp, PlainRow, PrimaryKeyValue, Special, Value

PK_TYPES = ("INTEGER", "STRING", "BINARY")
MAX_PK_COLUMNS = 4
MAX_PK_VALUE_BYTES = 1024
MAX_CELL_VALUE_BYTES = 2 * 1024 * 1024
MAX_COLUMNS_PER_ROW = 1024
MIN_TTL_SECONDS = 86400
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")

HTTP_STATUS = {
    "OTSAuthFailed": 403,
    "OTSConditionCheckFail": 403,
    "OTSNotEnoughCapacityUnit": 403,
    "OTSOperationThrottled": 403,
    "OTSQuotaExhausted": 403,
    "OTSObjectNotExist": 404,
    "OTSTableNotReady": 404,
    "OTSObjectAlreadyExist": 409,
    "OTSRowOperationConflict": 409,
    "OTSParameterInvalid": 400,
    "OTSMissingHeader": 400,
    "OTSRequestBodyTooLarge": 413,
    "OTSInternalServerError": 500,
    "OTSServerBusy": 503,
    "OTSPartitionUnavailable": 503,
    "OTSServerUnavailable": 503,
    "OTSTimeout": 503,
}


class OTSError(Exception):
    """A service error with Tablestore's code; ``status`` is the HTTP status it travels with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = HTTP_STATUS.get(code, 400)


def invalid(message: str) -> OTSError:
    return OTSError("OTSParameterInvalid", message)


class Clock(Protocol):
    def now_ms(self) -> int: ...


class WallClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock tests move by hand, so TTL can be tested without sleeping."""

    def __init__(self, start_ms: int | None = None) -> None:
        self._now = start_ms if start_ms is not None else WallClock().now_ms()
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def advance(self, ms: int) -> None:
        with self._lock:
            self._now += ms


@dataclass(frozen=True)
class PkColumn:
    name: str
    type: str
    auto_increment: bool = False


@dataclass
class TableMeta:
    name: str
    primary_key: list[PkColumn]
    defined_columns: list[tuple[str, str]] = field(default_factory=list)
    time_to_live: int = -1
    max_versions: int = 1
    deviation_s: int = 86400
    allow_update: bool = True
    created_ms: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "primary_key": [[c.name, c.type, c.auto_increment] for c in self.primary_key],
            "defined_columns": [list(d) for d in self.defined_columns],
            "time_to_live": self.time_to_live,
            "max_versions": self.max_versions,
            "deviation_s": self.deviation_s,
            "allow_update": self.allow_update,
            "created_ms": self.created_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> TableMeta:
        pk = data["primary_key"]
        defined = data["defined_columns"]
        assert isinstance(pk, list) and isinstance(defined, list)
        return cls(
            name=str(data["name"]),
            primary_key=[PkColumn(str(n), str(t), bool(a)) for n, t, a in pk],
            defined_columns=[(str(n), str(t)) for n, t in defined],
            time_to_live=int(str(data["time_to_live"])),
            max_versions=int(str(data["max_versions"])),
            deviation_s=int(str(data["deviation_s"])),
            allow_update=bool(data["allow_update"]),
            created_ms=int(str(data["created_ms"])),
        )


# A sort key element: (0,) is INF_MIN, (1, value) a value, (2,) INF_MAX. Values of one column
# share a type (checked on the way in), so Python's ordering of int, str (code point order is
# UTF-8 byte order) and bytes (unsigned bytewise) is the service's ordering.
SortKey = tuple[tuple[object, ...], ...]

Version = tuple[int, Value]  # (timestamp ms, value), newest first in a column


@dataclass
class StoredRow:
    primary_key: list[tuple[str, PrimaryKeyValue]]
    columns: dict[str, list[Version]]
    written_ms: int


@dataclass
class ReadOptions:
    columns_to_get: list[str] = field(default_factory=list)
    max_versions: int | None = 1
    time_range: tuple[int, int] | None = None  # [start, end) in ms


class Table:
    def __init__(self, meta: TableMeta) -> None:
        self.meta = meta
        self.rows: dict[SortKey, StoredRow] = {}
        self.keys: list[SortKey] = []
        self.last_auto_increment = 0

    def put_stored(self, key: SortKey, row: StoredRow) -> None:
        if key not in self.rows:
            bisect.insort(self.keys, key)
        self.rows[key] = row

    def remove(self, key: SortKey) -> None:
        if self.rows.pop(key, None) is not None:
            index = bisect.bisect_left(self.keys, key)
            del self.keys[index]


def _value_bytes(value: PrimaryKeyValue | Value) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, bytes):
        return len(value)
    return 8


def _type_of(value: PrimaryKeyValue) -> str:
    if isinstance(value, Special):
        return value.value
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INTEGER"
    if isinstance(value, str):
        return "STRING"
    return "BINARY"


ConditionCheck = Callable[[StoredRow | None], bool]


class Engine:
    def __init__(self, clock: Clock | None = None, data_file: str | None = None) -> None:
        self.clock: Clock = clock or WallClock()
        self.tables: dict[str, Table] = {}
        self.lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._dirty: dict[tuple[str, SortKey], StoredRow | None] = {}
        if data_file is not None:
            self._db = sqlite3.connect(data_file, check_same_thread=False, isolation_level=None)
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS tables (name TEXT PRIMARY KEY, meta TEXT NOT NULL);"
                "CREATE TABLE IF NOT EXISTS rows (tbl TEXT NOT NULL, pk BLOB NOT NULL, row BLOB NOT NULL,"
                " written_ms INTEGER NOT NULL, PRIMARY KEY (tbl, pk));"
            )
            self._load()

    # ---- persistence -------------------------------------------------------------------

    def _load(self) -> None:
        import json

        assert self._db is not None
        for name, meta_json in self._db.execute("SELECT name, meta FROM tables"):
            self.tables[name] = Table(TableMeta.from_json(json.loads(meta_json)))
        for tbl, _pk, row_blob, written_ms in self._db.execute("SELECT tbl, pk, row, written_ms FROM rows"):
            table = self.tables.get(tbl)
            if table is None:
                continue
            plain = plainbuffer.read_row(row_blob)
            columns: dict[str, list[Version]] = {}
            for cell in plain.cells:
                assert cell.value is not None and cell.timestamp is not None
                columns.setdefault(cell.name, []).append((cell.timestamp, cell.value))
            for versions in columns.values():
                versions.sort(key=lambda v: -v[0])
            table.put_stored(self.sort_key(table, plain.primary_key), StoredRow(plain.primary_key, columns, written_ms))
            for column, value in plain.primary_key:
                if any(c.name == column and c.auto_increment for c in table.meta.primary_key):
                    assert isinstance(value, int)
                    table.last_auto_increment = max(table.last_auto_increment, value)

    def _mark(self, table: Table, key: SortKey, row: StoredRow | None) -> None:
        if self._db is not None:
            self._dirty[(table.meta.name, key)] = row

    def flush(self) -> None:
        """Write changed rows through to SQLite (called once per API call)."""
        if self._db is None or not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        with self._db:
            for (tbl, key), row in dirty.items():
                pk_blob = repr(key).encode()
                if row is None:
                    self._db.execute("DELETE FROM rows WHERE tbl = ? AND pk = ?", (tbl, pk_blob))
                    continue
                cells = [Cell(name, value, ts) for name, versions in row.columns.items() for ts, value in versions]
                blob = plainbuffer.write_row(PlainRow(row.primary_key, cells))
                self._db.execute(
                    "INSERT OR REPLACE INTO rows (tbl, pk, row, written_ms) VALUES (?, ?, ?, ?)",
                    (tbl, pk_blob, blob, row.written_ms),
                )

    def close(self) -> None:
        if self._db is not None:
            with self.lock:
                self.flush()
                self._db.close()
                self._db = None

    # ---- tables ------------------------------------------------------------------------

    def create_table(self, meta: TableMeta) -> None:
        if not _TABLE_NAME.fullmatch(meta.name):
            raise invalid(f"Invalid table name: '{meta.name}'.")
        if not 1 <= len(meta.primary_key) <= MAX_PK_COLUMNS:
            raise invalid(f"The number of primary key columns must be in range: [1, {MAX_PK_COLUMNS}].")
        names = [c.name for c in meta.primary_key]
        if len(set(names)) != len(names):
            raise invalid("Duplicated primary key name.")
        for index, column in enumerate(meta.primary_key):
            if not _NAME.fullmatch(column.name):
                raise invalid(f"Invalid column name: '{column.name}'.")
            if column.type not in PK_TYPES:
                raise invalid(f"The emulator does not support {column.type} primary key columns.")
            if column.auto_increment and (column.type != "INTEGER" or index == 0):
                raise invalid("Auto-increment is only allowed on an INTEGER column that is not the partition key.")
        if sum(c.auto_increment for c in meta.primary_key) > 1:
            raise invalid("At most one auto-increment primary key column is allowed.")
        if meta.time_to_live != -1 and meta.time_to_live < MIN_TTL_SECONDS:
            raise invalid(f"TimeToLive must be -1 or at least {MIN_TTL_SECONDS} seconds.")
        if meta.max_versions < 1:
            raise invalid("MaxVersions must be at least 1.")
        with self.lock:
            if meta.name in self.tables:
                raise OTSError("OTSObjectAlreadyExist", "Requested table already exists.")
            meta.created_ms = self.clock.now_ms()
            self.tables[meta.name] = Table(meta)
            if self._db is not None:
                import json

                with self._db:
                    self._db.execute("INSERT OR REPLACE INTO tables VALUES (?, ?)",
                                     (meta.name, json.dumps(meta.to_json())))

    def table(self, name: str) -> Table:
        table = self.tables.get(name)
        if table is None:
            raise OTSError("OTSObjectNotExist", "Requested table does not exist.")
        return table

    def delete_table(self, name: str) -> None:
        with self.lock:
            self.table(name)
            del self.tables[name]
            self._dirty = {k: v for k, v in self._dirty.items() if k[0] != name}
            if self._db is not None:
                with self._db:
                    self._db.execute("DELETE FROM tables WHERE name = ?", (name,))
                    self._db.execute("DELETE FROM rows WHERE tbl = ?", (name,))

    def list_tables(self) -> list[str]:
        with self.lock:
            return sorted(self.tables)

    # ---- keys --------------------------------------------------------------------------

    def check_primary_key(
        self, table: Table, primary_key: list[tuple[str, PrimaryKeyValue]], *, bounds: bool = False,
        placeholder: bool = False,
    ) -> None:
        """Names, order and types must match the schema; INF only in range bounds; the
        auto-increment placeholder only where a put may use one."""
        schema = table.meta.primary_key
        if len(primary_key) != len(schema):
            raise invalid(f"Validate PK size fail. Input: {len(primary_key)}, Meta: {len(schema)}.")
        for (name, value), column in zip(primary_key, schema, strict=True):
            if name != column.name:
                raise invalid(f"Validate PK name fail. Input: {name}, Meta: {column.name}.")
            if value is Special.AUTO_INCREMENT:
                if not (placeholder and column.auto_increment):
                    raise invalid(f"The auto-increment placeholder is not allowed for column {name}.")
                continue
            if value in (Special.INF_MIN, Special.INF_MAX):
                if not bounds:
                    raise invalid(f"INF_MIN and INF_MAX are only allowed in a range bound (column {name}).")
                continue
            if _type_of(value) != column.type:
                raise invalid(f"Validate PK type fail. Input: {_type_of(value)}, Meta: {column.type}.")
            if _value_bytes(value) > MAX_PK_VALUE_BYTES:
                raise invalid(f"The length of primary key column {name} exceeds {MAX_PK_VALUE_BYTES} bytes.")
            if placeholder and column.auto_increment:
                raise invalid(f"Column {name} is auto-increment: write it with the PK_AUTO_INCR placeholder.")

    @staticmethod
    def sort_key(table: Table, primary_key: list[tuple[str, PrimaryKeyValue]]) -> SortKey:
        parts: list[tuple[object, ...]] = []
        for _, value in primary_key:
            if value is Special.INF_MIN:
                parts.append((0,))
            elif value is Special.INF_MAX:
                parts.append((2,))
            else:
                parts.append((1, value))
        return tuple(parts)

    def _assign_auto_increment(self, table: Table, primary_key: list[tuple[str, PrimaryKeyValue]]) -> None:
        for index, (name, value) in enumerate(primary_key):
            if value is Special.AUTO_INCREMENT:
                # Strictly increasing and unrelated to anything the client chose, like the service's.
                table.last_auto_increment = max(table.last_auto_increment + 1, self.clock.now_ms() * 1000)
                primary_key[index] = (name, table.last_auto_increment)

    # ---- liveness (TTL is applied on read) ----------------------------------------------

    def _expiry_floor(self, table: Table) -> int | None:
        ttl = table.meta.time_to_live
        return None if ttl == -1 else self.clock.now_ms() - ttl * 1000

    def _live(self, table: Table, row: StoredRow | None) -> StoredRow | None:
        """The row as a reader sees it now: expired versions dropped, None if nothing is left."""
        if row is None:
            return None
        floor = self._expiry_floor(table)
        if floor is None:
            return row
        columns = {name: kept for name, versions in row.columns.items()
                   if (kept := [v for v in versions if v[0] > floor])}
        if not columns and (row.columns or row.written_ms <= floor):
            return None
        return StoredRow(row.primary_key, columns, row.written_ms)

    def get_live(self, table: Table, key: SortKey) -> StoredRow | None:
        return self._live(table, table.rows.get(key))

    # ---- writes ------------------------------------------------------------------------

    def _check_cells(self, table: Table, cells: list[Cell], now: int) -> None:
        if len(cells) > MAX_COLUMNS_PER_ROW:
            raise invalid(f"The number of columns exceeds the limit: {MAX_COLUMNS_PER_ROW}.")
        pk_names = {c.name for c in table.meta.primary_key}
        for cell in cells:
            if not _NAME.fullmatch(cell.name):
                raise invalid(f"Invalid column name: '{cell.name}'.")
            if cell.name in pk_names:
                raise invalid(f"Column {cell.name} is a primary key column.")
            if cell.value is not None and _value_bytes(cell.value) > MAX_CELL_VALUE_BYTES:
                raise invalid(f"The length of attribute column {cell.name} exceeds the limit.")
            if cell.timestamp is not None:
                if cell.timestamp < 0:
                    raise invalid("Cell timestamp must not be negative.")
                if cell.op is CellOp.PUT and abs(cell.timestamp - now) > table.meta.deviation_s * 1000:
                    raise invalid("The timestamp of a cell deviates from the server time by more than the table's"
                                  " max time deviation.")

    def _trim(self, table: Table, versions: list[Version]) -> list[Version]:
        versions.sort(key=lambda v: -v[0])
        return versions[: table.meta.max_versions]

    def put(self, table: Table, row: PlainRow, check: ConditionCheck) -> list[tuple[str, PrimaryKeyValue]]:
        now = self.clock.now_ms()
        self.check_primary_key(table, row.primary_key, placeholder=True)
        self._check_cells(table, row.cells, now)
        for cell in row.cells:
            if cell.op is not CellOp.PUT or cell.value is None:
                raise invalid("PutRow cells must carry a value and no operation type.")
        primary_key = list(row.primary_key)
        self._assign_auto_increment(table, primary_key)
        key = self.sort_key(table, primary_key)
        if not check(self.get_live(table, key)):
            raise OTSError("OTSConditionCheckFail", "Condition check failed.")
        columns: dict[str, list[Version]] = {}
        for cell in row.cells:
            assert cell.value is not None
            ts = cell.timestamp if cell.timestamp is not None else now
            versions = [v for v in columns.get(cell.name, []) if v[0] != ts] + [(ts, cell.value)]
            columns[cell.name] = self._trim(table, versions)
        stored = StoredRow(primary_key, columns, now)
        table.put_stored(key, stored)
        self._mark(table, key, stored)
        return primary_key

    def update(self, table: Table, row: PlainRow, check: ConditionCheck) -> list[tuple[str, PrimaryKeyValue]]:
        now = self.clock.now_ms()
        self.check_primary_key(table, row.primary_key)
        self._check_cells(table, row.cells, now)
        if not row.cells:
            raise invalid("UpdateRow needs at least one column.")
        key = self.sort_key(table, row.primary_key)
        live = self.get_live(table, key)
        if not check(live):
            raise OTSError("OTSConditionCheckFail", "Condition check failed.")
        columns = {name: list(versions) for name, versions in (live.columns if live else {}).items()}
        for cell in row.cells:
            if cell.op is CellOp.PUT:
                if cell.value is None:
                    raise invalid(f"Column {cell.name} has no value to put.")
                ts = cell.timestamp if cell.timestamp is not None else now
                versions = [v for v in columns.get(cell.name, []) if v[0] != ts] + [(ts, cell.value)]
                columns[cell.name] = self._trim(table, versions)
            elif cell.op is CellOp.DELETE_ALL_VERSIONS:
                columns.pop(cell.name, None)
            elif cell.op is CellOp.DELETE_ONE_VERSION:
                if cell.timestamp is None:
                    raise invalid(f"Deleting one version of column {cell.name} needs its timestamp.")
                kept = [v for v in columns.get(cell.name, []) if v[0] != cell.timestamp]
                if kept:
                    columns[cell.name] = kept
                else:
                    columns.pop(cell.name, None)
            else:  # INCREMENT
                if isinstance(cell.value, bool) or not isinstance(cell.value, int):
                    raise invalid(f"Increment of column {cell.name} needs an INTEGER delta.")
                current = columns.get(cell.name, [])
                base = current[0][1] if current else 0
                if isinstance(base, bool) or not isinstance(base, int):
                    raise invalid(f"Column {cell.name} is not an INTEGER and cannot be incremented.")
                columns[cell.name] = self._trim(table, [v for v in current if v[0] != now] + [(now, base + cell.value)])
        stored = StoredRow(list(row.primary_key), columns, now)
        table.put_stored(key, stored)
        self._mark(table, key, stored)
        return list(row.primary_key)

    def delete(self, table: Table, row: PlainRow, check: ConditionCheck) -> list[tuple[str, PrimaryKeyValue]]:
        self.check_primary_key(table, row.primary_key)
        key = self.sort_key(table, row.primary_key)
        if not check(self.get_live(table, key)):
            raise OTSError("OTSConditionCheckFail", "Condition check failed.")
        table.remove(key)
        self._mark(table, key, None)
        return list(row.primary_key)

    # ---- reads -------------------------------------------------------------------------

    @staticmethod
    def project(table: Table, row: StoredRow, options: ReadOptions) -> PlainRow | None:
        """The row as returned: requested columns, versions in range, newest first.

        None when columns were requested and the row has none of them (nor asked for a key).
        """
        pk_names = {c.name for c in table.meta.primary_key}
        wanted = set(options.columns_to_get)
        cells: list[Cell] = []
        for name in sorted(row.columns):
            if wanted and name not in wanted:
                continue
            versions = row.columns[name]
            if options.time_range is not None:
                start, end = options.time_range
                versions = [v for v in versions if start <= v[0] < end]
            if options.max_versions is not None:
                versions = versions[: options.max_versions]
            cells.extend(Cell(name, value, ts) for ts, value in versions)
        if wanted and not cells and not (wanted & pk_names):
            return None
        return PlainRow(list(row.primary_key), cells)

    def scan(self, table: Table, start: SortKey, end: SortKey, forward: bool) -> Iterator[tuple[SortKey, StoredRow]]:
        """Live rows from ``start`` (inclusive) towards ``end`` (exclusive)."""
        keys = table.keys
        if forward:
            index = bisect.bisect_left(keys, start)
            while index < len(keys) and keys[index] < end:
                key = keys[index]
                live = self.get_live(table, key)
                if live is not None:
                    yield key, live
                index += 1
        else:
            index = bisect.bisect_right(keys, start) - 1
            while index >= 0 and keys[index] > end:
                key = keys[index]
                live = self.get_live(table, key)
                if live is not None:
                    yield key, live
                index -= 1
