"""Tablestore's PlainBuffer row encoding, both directions, written for the emulator.

The SDK ships a writer but its reader cannot decode what clients send (INF_MIN/INF_MAX,
auto-increment placeholders, update cell types), so the server side needs its own.
Every cell and every row carries a CRC-8 (polynomial 0x07); the reader verifies both.

Values are plain Python objects with exact types: ``int`` (INTEGER), ``str`` (STRING),
``bytes`` (BINARY/BLOB), ``bool`` (BOOLEAN), ``float`` (DOUBLE), or one of the
``Special`` markers (INF_MIN, INF_MAX, AUTO_INCREMENT) in primary keys.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

HEADER = 0x75

TAG_ROW_PK = 0x01
TAG_ROW_DATA = 0x02
TAG_CELL = 0x03
TAG_CELL_NAME = 0x04
TAG_CELL_VALUE = 0x05
TAG_CELL_TYPE = 0x06
TAG_CELL_TIMESTAMP = 0x07
TAG_DELETE_ROW_MARKER = 0x08
TAG_ROW_CHECKSUM = 0x09
TAG_CELL_CHECKSUM = 0x0A

VT_INTEGER = 0x0
VT_DOUBLE = 0x1
VT_BOOLEAN = 0x2
VT_STRING = 0x3
VT_NULL = 0x6
VT_BLOB = 0x7
VT_INF_MIN = 0x9
VT_INF_MAX = 0xA
VT_AUTO_INCREMENT = 0xB


class CellOp(enum.IntEnum):
    """The operation an UpdateRow cell asks for (absent type byte means PUT)."""

    PUT = 0x0
    DELETE_ALL_VERSIONS = 0x1
    DELETE_ONE_VERSION = 0x3
    INCREMENT = 0x4


class Special(enum.Enum):
    INF_MIN = "INF_MIN"
    INF_MAX = "INF_MAX"
    AUTO_INCREMENT = "AUTO_INCREMENT"


Value = int | str | bytes | bool | float
PrimaryKeyValue = int | str | bytes | bool | Special


class PlainBufferError(ValueError):
    """Malformed PlainBuffer: bad tag, truncated data or checksum mismatch."""


def _make_crc8_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


_CRC8_TABLE = _make_crc8_table()


def crc8(crc: int, data: bytes) -> int:
    for byte in data:
        crc = _CRC8_TABLE[crc ^ byte]
    return crc


def crc8_byte(crc: int, byte: int) -> int:
    return _CRC8_TABLE[crc ^ (byte & 0xFF)]


@dataclass
class Cell:
    name: str
    value: Value | None
    timestamp: int | None = None
    op: CellOp = CellOp.PUT


@dataclass
class PlainRow:
    primary_key: list[tuple[str, PrimaryKeyValue]]
    cells: list[Cell] = field(default_factory=list)
    delete_marker: bool = False


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise PlainBufferError("PlainBuffer is truncated")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def peek(self) -> int | None:
        return None if self.at_end() else self.data[self.pos]

    def int32(self) -> int:
        value: int = struct.unpack("<i", self.take(4))[0]
        return value

    def int64(self) -> int:
        value: int = struct.unpack("<q", self.take(8))[0]
        return value

    def expect(self, tag: int, what: str) -> None:
        got = self.byte()
        if got != tag:
            raise PlainBufferError(f"expected {what} (tag {tag:#x}) but found tag {got:#x}")


def _read_typed_value(reader: _Reader, end: int, crc: int) -> tuple[PrimaryKeyValue | Value, int]:
    """One type byte and its payload, stopping at ``end``; returns the value and updated crc."""
    value_type = reader.byte()
    crc = crc8_byte(crc, value_type)
    value: PrimaryKeyValue | Value
    if value_type == VT_INTEGER:
        raw = reader.take(8)
        value = struct.unpack("<q", raw)[0]
        crc = crc8(crc, raw)
    elif value_type in (VT_STRING, VT_BLOB):
        length_raw = reader.take(4)
        length = struct.unpack("<i", length_raw)[0]
        payload = reader.take(length)
        crc = crc8(crc8(crc, length_raw), payload)
        if value_type == VT_STRING:
            try:
                value = payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PlainBufferError("STRING value is not UTF-8") from exc
        else:
            value = bytes(payload)
    elif value_type == VT_BOOLEAN:
        flag = reader.byte()
        value = flag != 0
        crc = crc8_byte(crc, 1 if value else 0)
    elif value_type == VT_DOUBLE:
        raw = reader.take(8)
        value = struct.unpack("<d", raw)[0]
        crc = crc8(crc, raw)
    elif value_type == VT_INF_MIN:
        value = Special.INF_MIN
    elif value_type == VT_INF_MAX:
        value = Special.INF_MAX
    elif value_type == VT_AUTO_INCREMENT:
        value = Special.AUTO_INCREMENT
    else:
        raise PlainBufferError(f"unsupported value type {value_type:#x}")
    if reader.pos != end:
        raise PlainBufferError("value length prefix does not match its payload")
    return value, crc


def _read_cell_name(reader: _Reader) -> tuple[str, int]:
    reader.expect(TAG_CELL_NAME, "TAG_CELL_NAME")
    size = reader.int32()
    raw = reader.take(size)
    try:
        return raw.decode("utf-8"), crc8(0, raw)
    except UnicodeDecodeError as exc:
        raise PlainBufferError("cell name is not UTF-8") from exc


def _read_cell_value(reader: _Reader, crc: int) -> tuple[PrimaryKeyValue | Value, int]:
    reader.expect(TAG_CELL_VALUE, "TAG_CELL_VALUE")
    size = reader.int32()
    return _read_typed_value(reader, reader.pos + size, crc)


def _check(reader: _Reader, tag: int, expected: int, what: str) -> None:
    reader.expect(tag, what)
    got = reader.byte()
    if got != expected:
        raise PlainBufferError(f"{what} mismatch: sent {got:#x}, computed {expected:#x}")


def _read_pk_cell(reader: _Reader) -> tuple[str, PrimaryKeyValue, int]:
    name, crc = _read_cell_name(reader)
    value, crc = _read_cell_value(reader, crc)
    if isinstance(value, float):
        raise PlainBufferError("DOUBLE is not a primary key type")
    _check(reader, TAG_CELL_CHECKSUM, crc, "cell checksum")
    return name, value, crc


def _read_attribute_cell(reader: _Reader) -> tuple[Cell, int]:
    name, crc = _read_cell_name(reader)
    value: Value | None = None
    if reader.peek() == TAG_CELL_VALUE:
        read, crc = _read_cell_value(reader, crc)
        if isinstance(read, Special):
            raise PlainBufferError(f"{read.value} is only valid in a primary key")
        value = read
    op = CellOp.PUT
    timestamp: int | None = None
    if reader.peek() == TAG_CELL_TYPE:
        reader.byte()
        try:
            op = CellOp(reader.byte())
        except ValueError as exc:
            raise PlainBufferError("unknown cell operation type") from exc
    if reader.peek() == TAG_CELL_TIMESTAMP:
        reader.byte()
        timestamp = reader.int64()
    # The SDK writer folds the timestamp in before the operation type, although the type is
    # written first; the native reader folds them in stream order. Accept either order.
    ts_bytes = struct.pack("<q", timestamp) if timestamp is not None else b""
    op_bytes = bytes([op]) if op is not CellOp.PUT else b""
    accepted = {crc8(crc8(crc, ts_bytes), op_bytes), crc8(crc8(crc, op_bytes), ts_bytes)}
    reader.expect(TAG_CELL_CHECKSUM, "TAG_CELL_CHECKSUM")
    sent = reader.byte()
    if sent not in accepted:
        raise PlainBufferError(f"cell checksum mismatch on column {name!r}")
    return Cell(name, value, timestamp, op), sent


def _read_row_body(reader: _Reader) -> PlainRow:
    reader.expect(TAG_ROW_PK, "TAG_ROW_PK")
    row_crc = 0
    primary_key: list[tuple[str, PrimaryKeyValue]] = []
    while reader.peek() == TAG_CELL:
        reader.byte()
        name, value, cell_crc = _read_pk_cell(reader)
        primary_key.append((name, value))
        row_crc = crc8_byte(row_crc, cell_crc)
    cells: list[Cell] = []
    if reader.peek() == TAG_ROW_DATA:
        reader.byte()
        while reader.peek() == TAG_CELL:
            reader.byte()
            cell, cell_crc = _read_attribute_cell(reader)
            cells.append(cell)
            row_crc = crc8_byte(row_crc, cell_crc)
    delete_marker = reader.peek() == TAG_DELETE_ROW_MARKER
    if delete_marker:
        reader.byte()
    row_crc = crc8_byte(row_crc, 1 if delete_marker else 0)
    _check(reader, TAG_ROW_CHECKSUM, row_crc, "row checksum")
    return PlainRow(primary_key, cells, delete_marker)


def _read_header(reader: _Reader) -> None:
    if reader.int32() != HEADER:
        raise PlainBufferError("PlainBuffer header is not 0x75")


def read_row(data: bytes) -> PlainRow:
    """Decode exactly one row (a primary key, a put, an update or a delete)."""
    reader = _Reader(bytes(data))
    _read_header(reader)
    row = _read_row_body(reader)
    if not reader.at_end():
        raise PlainBufferError("trailing bytes after the row")
    return row


def read_rows(data: bytes) -> list[PlainRow]:
    """Decode a header followed by any number of rows (the GetRange response layout)."""
    reader = _Reader(bytes(data))
    _read_header(reader)
    rows = []
    while not reader.at_end():
        rows.append(_read_row_body(reader))
    return rows


def read_variant(data: bytes) -> Value:
    """A bare type byte and payload, as column conditions carry their operand."""
    reader = _Reader(bytes(data))
    value, _ = _read_typed_value(reader, len(reader.data), 0)
    if isinstance(value, Special):
        raise PlainBufferError(f"{value.value} is not a column value")
    return value


class _Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def tag(self, tag: int) -> None:
        self.parts.append(bytes([tag]))

    def raw(self, data: bytes) -> None:
        self.parts.append(data)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


def _encode_typed_value(value: PrimaryKeyValue | Value) -> bytes:
    """Type byte plus payload (the bytes a cell checksum covers)."""
    if isinstance(value, Special):
        type_byte = {Special.INF_MIN: VT_INF_MIN, Special.INF_MAX: VT_INF_MAX,
                     Special.AUTO_INCREMENT: VT_AUTO_INCREMENT}[value]
        encoded = bytes([type_byte])
    elif isinstance(value, bool):
        encoded = bytes([VT_BOOLEAN, 1 if value else 0])
    elif isinstance(value, int):
        encoded = bytes([VT_INTEGER]) + struct.pack("<q", value)
    elif isinstance(value, float):
        encoded = bytes([VT_DOUBLE]) + struct.pack("<d", value)
    elif isinstance(value, str):
        payload = value.encode("utf-8")
        encoded = bytes([VT_STRING]) + struct.pack("<i", len(payload)) + payload
    else:
        encoded = bytes([VT_BLOB]) + struct.pack("<i", len(value)) + value
    return encoded


def _write_cell(writer: _Writer, name: str, value: PrimaryKeyValue | Value | None, timestamp: int | None) -> int:
    name_raw = name.encode("utf-8")
    writer.tag(TAG_CELL)
    writer.tag(TAG_CELL_NAME)
    writer.raw(struct.pack("<i", len(name_raw)) + name_raw)
    crc = crc8(0, name_raw)
    if value is not None:
        encoded = _encode_typed_value(value)
        writer.tag(TAG_CELL_VALUE)
        writer.raw(struct.pack("<i", len(encoded)) + encoded)
        crc = crc8(crc, encoded)
    if timestamp is not None:
        ts_raw = struct.pack("<q", timestamp)
        writer.tag(TAG_CELL_TIMESTAMP)
        writer.raw(ts_raw)
        crc = crc8(crc, ts_raw)
    writer.tag(TAG_CELL_CHECKSUM)
    writer.raw(bytes([crc]))
    return crc


def _write_row_body(writer: _Writer, row: PlainRow) -> None:
    writer.tag(TAG_ROW_PK)
    row_crc = 0
    for name, pk_value in row.primary_key:
        row_crc = crc8_byte(row_crc, _write_cell(writer, name, pk_value, None))
    if row.cells:
        writer.tag(TAG_ROW_DATA)
        for cell in row.cells:
            if cell.op is not CellOp.PUT:
                raise ValueError("only PUT cells can be written in a response")
            row_crc = crc8_byte(row_crc, _write_cell(writer, cell.name, cell.value, cell.timestamp))
    if row.delete_marker:
        writer.tag(TAG_DELETE_ROW_MARKER)
    row_crc = crc8_byte(row_crc, 1 if row.delete_marker else 0)
    writer.tag(TAG_ROW_CHECKSUM)
    writer.raw(bytes([row_crc]))


def write_row_body(row: PlainRow) -> bytes:
    """One row without the header, for joining many under one header."""
    writer = _Writer()
    _write_row_body(writer, row)
    return writer.getvalue()


def join_rows(bodies: list[bytes]) -> bytes:
    return struct.pack("<i", HEADER) + b"".join(bodies) if bodies else b""


def write_rows(rows: list[PlainRow]) -> bytes:
    """One header then every row; an empty list encodes as no bytes (what servers send)."""
    return join_rows([write_row_body(row) for row in rows])


def write_row(row: PlainRow) -> bytes:
    return write_rows([row])
