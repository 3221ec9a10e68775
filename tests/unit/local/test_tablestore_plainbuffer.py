"""The emulator's PlainBuffer codec against the SDK's own writer and readers."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tablestore.metadata import INF_MAX, INF_MIN, PK_AUTO_INCR
from tablestore.plainbuffer.plain_buffer_builder import PlainBufferBuilder
from tablestore.plainbuffer.plain_buffer_coded_stream import PlainBufferCodedInputStream
from tablestore.plainbuffer.plain_buffer_crc8 import PlainBufferCrc8
from tablestore.plainbuffer.plain_buffer_stream import PlainBufferInputStream

from local.tablestore import plainbuffer
from local.tablestore.plainbuffer import Cell, CellOp, PlainBufferError, PlainRow, Special

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)


def test_crc8_matches_the_sdk() -> None:
    data = bytes(range(256)) + b"barrage"
    assert plainbuffer.crc8(0, data) == PlainBufferCrc8.crc_bytes(0, data)
    assert plainbuffer.crc8(0x5A, b"\x00\xff") == PlainBufferCrc8.crc_bytes(0x5A, b"\x00\xff")


def test_reads_range_bounds_and_auto_increment_placeholders() -> None:
    data = bytes(PlainBufferBuilder.serialize_primary_key([("a", INF_MIN), ("b", INF_MAX), ("c", PK_AUTO_INCR)]))
    row = plainbuffer.read_row(data)
    assert row.primary_key == [("a", Special.INF_MIN), ("b", Special.INF_MAX), ("c", Special.AUTO_INCREMENT)]
    assert row.cells == [] and not row.delete_marker


def test_reads_put_row_with_every_value_type_and_timestamps() -> None:
    data = bytes(PlainBufferBuilder.serialize_for_put_row(
        [("s", "é"), ("b", bytearray(b"\x00\xff")), ("i", -7)],
        [("d", 1.5), ("t", True, 123), ("bytes_as_string", b"xy"), ("n", -1)],
    ))
    row = plainbuffer.read_row(data)
    assert row.primary_key == [("s", "é"), ("b", b"\x00\xff"), ("i", -7)]
    assert row.cells == [Cell("d", 1.5), Cell("t", True, 123), Cell("bytes_as_string", "xy"), Cell("n", -1)]


def test_reads_update_operations_with_their_checksums() -> None:
    data = bytes(PlainBufferBuilder.serialize_for_update_row([("k", 1)], {
        "PUT": [("a", 1, 10)], "DELETE": [("b", None, 77)], "DELETE_ALL": ["c"], "INCREMENT": [("d", 3)],
    }))
    row = plainbuffer.read_row(data)
    assert [(c.name, c.value, c.timestamp, c.op) for c in row.cells] == [
        ("a", 1, 10, CellOp.PUT), ("b", None, 77, CellOp.DELETE_ONE_VERSION),
        ("c", None, None, CellOp.DELETE_ALL_VERSIONS), ("d", 3, None, CellOp.INCREMENT),
    ]


def test_reads_delete_marker() -> None:
    row = plainbuffer.read_row(bytes(PlainBufferBuilder.serialize_for_delete_row([("k", "x")])))
    assert row.delete_marker and row.primary_key == [("k", "x")]


def _corrupt_each_byte(data: bytes) -> list[bytes]:
    return [data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :] for i in range(len(data))]


def test_any_single_bit_flip_in_a_row_is_rejected() -> None:
    original = bytes(PlainBufferBuilder.serialize_for_put_row([("k", "abc")], [("v", 12345)]))
    expected = plainbuffer.read_row(original)
    for corrupted in _corrupt_each_byte(original):
        try:
            decoded = plainbuffer.read_row(corrupted)
        except PlainBufferError:
            continue
        pytest.fail(f"corruption accepted: {decoded} (original {expected})")


def test_cell_checksum_mismatch_is_reported() -> None:
    data = bytearray(PlainBufferBuilder.serialize_for_put_row([("k", 1)], [("v", "x")]))
    # The byte after the first TAG_CELL_CHECKSUM is the primary key cell's checksum.
    index = data.index(plainbuffer.TAG_CELL_CHECKSUM) + 1
    data[index] ^= 0xFF
    with pytest.raises(PlainBufferError, match="checksum"):
        plainbuffer.read_row(bytes(data))


@pytest.mark.parametrize("data", [b"", b"\x75\x00\x00", struct.pack("<i", 0x74) + b"\x01", b"\x75\x00\x00\x00\x02"])
def test_garbage_is_rejected(data: bytes) -> None:
    with pytest.raises(PlainBufferError):
        plainbuffer.read_row(data)


def test_trailing_bytes_are_rejected() -> None:
    data = bytes(PlainBufferBuilder.serialize_primary_key([("k", 1)]))
    with pytest.raises(PlainBufferError, match="trailing"):
        plainbuffer.read_row(data + b"\x00")


def test_variant_reader_decodes_condition_operands() -> None:
    for value in (5, "s", 2.5, True):
        assert plainbuffer.read_variant(bytes(PlainBufferBuilder.serialize_column_value(value))) == value
    assert plainbuffer.read_variant(bytes(PlainBufferBuilder.serialize_column_value(bytearray(b"\x01")))) == b"\x01"


pk_values = st.one_of(INT64, st.text(max_size=20), st.binary(max_size=20))
cell_values = st.one_of(INT64, st.text(max_size=20), st.binary(max_size=20), st.booleans(),
                        st.floats(allow_nan=False))


@given(
    primary_key=st.lists(st.tuples(NAMES, pk_values), min_size=1, max_size=4),
    cells=st.lists(st.tuples(NAMES, cell_values, st.integers(min_value=0, max_value=2**62)), max_size=5),
)
def test_writer_output_is_read_back_by_both_sdk_parsers_and_ours(primary_key, cells) -> None:
    from tablestore.native import parse_multiple_rows

    rows = [PlainRow(list(primary_key), [Cell(n, v, ts) for n, v, ts in cells]), PlainRow(list(primary_key))]
    data = plainbuffer.write_rows(rows)

    def sdk_value(value: object) -> object:
        return bytearray(value) if isinstance(value, bytes) else value

    expected = [
        ([(n, sdk_value(v)) for n, v in primary_key], [(n, sdk_value(v), ts) for n, v, ts in cells]),
        ([(n, sdk_value(v)) for n, v in primary_key], []),
    ]
    python_rows = PlainBufferCodedInputStream(PlainBufferInputStream(data)).read_rows()
    assert [(r.primary_key, r.attribute_columns) for r in python_rows] == expected
    assert [(list(pk), list(attrs)) for pk, attrs in parse_multiple_rows(data)] == expected
    assert plainbuffer.read_rows(data) == rows


@given(primary_key=st.lists(st.tuples(NAMES, pk_values), min_size=1, max_size=4),
       cells=st.lists(st.tuples(NAMES, cell_values), max_size=5))
def test_reader_decodes_whatever_the_sdk_writer_encodes(primary_key, cells) -> None:
    sdk_pk = [(n, bytearray(v) if isinstance(v, bytes) else v) for n, v in primary_key]
    sdk_cells = [(n, bytearray(v) if isinstance(v, bytes) else v) for n, v in cells]
    row = plainbuffer.read_row(bytes(PlainBufferBuilder.serialize_for_put_row(sdk_pk, sdk_cells)))
    assert row.primary_key == primary_key
    assert [(c.name, c.value) for c in row.cells] == cells
