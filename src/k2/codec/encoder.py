"""Vectorised Avro binary encoding of flat records into Confluent wire-format values.

Every record's bytes are built with numpy and Arrow compute (zigzag varints, big-endian fixed decimals,
length-prefixed strings), never by a per-row Python encoder: one Arrow piece per field, joined per row in C++.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from k2.arrow_util import unscaled_from_decimal
from k2.codec.framing import confluent_header
from k2.errors import EncodeError
from k2.schemas import AvroSchema, FieldInfo, field_infos

_MAX_VARINT_BYTES = 10

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

Piece: TypeAlias = pa.Array  # large_binary: one byte string per row, the encoding of one part of each record

_CONTINUATION = np.uint64(0x8080808080808080)
# one 56-bit number → 8 bytes of 7 bits (little-endian): split 32-bit lanes, then 16-bit lanes, then bytes
_SPREAD_STEPS = [
    (np.uint64(0x000000000FFFFFFF), np.uint64(4)),
    (np.uint64(0x00003FFF00003FFF), np.uint64(2)),
    (np.uint64(0x007F007F007F007F), np.uint64(1)),
]


def _piece(data: U8, lengths: I64) -> Piece:
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    return pa.Array.from_buffers(pa.large_binary(), len(lengths), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _varints(values: I64, present: npt.NDArray[np.bool_] | None = None, branch: bool = False) -> Piece:
    """Avro zigzag varints of int64 values; rows where `present` is False get zero bytes. With `branch`, each row
    is first given its union branch of ["null", T] (one byte: 0 null, 2 = zigzag(1) a value) in the same piece: one
    piece less for the row join to concatenate."""
    zigzag = ((values << 1) ^ (values >> 63)).astype(np.uint64)
    nbytes = np.ones(len(values), dtype=np.int64)
    for group in range(1, _MAX_VARINT_BYTES):
        nbytes += zigzag >= (np.uint64(1) << np.uint64(7 * group))
    if present is not None:
        nbytes = np.where(present, nbytes, 0)
    width = int(nbytes.max()) if len(nbytes) else 0
    if width > 8:  # rare (|value| ≥ 2^55): byte by byte
        shifts = (np.arange(width, dtype=np.uint64) * np.uint64(7))[None, :]
        groups = ((zigzag[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
        position = np.arange(width)[None, :]
        groups[position < (nbytes[:, None] - 1)] |= 0x80
        return _with_branch(groups, nbytes, present) if branch else _piece(groups[position < nbytes[:, None]], nbytes)
    # every varint fits one 8-byte word: spread its 7-bit groups over the bytes, set the continuation bits
    word = zigzag
    for mask, shift in _SPREAD_STEPS:
        word = (word & mask) | ((word & ~mask) << shift)
    continued = np.maximum(nbytes - 1, 0).astype(np.uint64) * np.uint64(8)
    word |= ((np.uint64(1) << continued) - np.uint64(1)) & _CONTINUATION
    matrix = word.astype("<u8").view(np.uint8).reshape(-1, 8)
    if branch:
        return _with_branch(matrix, nbytes, present)
    return _piece(matrix[np.arange(8)[None, :] < nbytes[:, None]], nbytes)


def _with_branch(matrix: npt.NDArray[np.uint8], nbytes: I64, present: npt.NDArray[np.bool_] | None) -> Piece:
    """Rows of varint bytes (`nbytes` used of each) behind their union branch byte."""
    rows, width = matrix.shape
    valid = np.ones(rows, dtype=bool) if present is None else present
    joined = np.empty((rows, width + 1), dtype=np.uint8)
    joined[:, 0] = np.where(valid, 2, 0)
    joined[:, 1:] = matrix
    lengths = nbytes + 1
    return _piece(joined[np.arange(width + 1)[None, :] < lengths[:, None]], lengths)


def _string_pieces(column: pa.Array, present: npt.NDArray[np.bool_] | None) -> list[Piece]:
    """Length varint + bytes; a null (not `present`) row gets neither."""
    column = pc.fill_null(column, "") if present is not None else column
    column = column.cast(pa.large_binary())
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[column.offset : column.offset + len(column) + 1]
    return [_varints(np.diff(offsets), present), column]


def _int64_values(column: pa.Array, info: FieldInfo) -> I64:
    if info.kind == "timestamp":
        column = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    elif info.kind == "date":
        column = column.cast(pa.date32()).cast(pa.int32()).cast(pa.int64())
    elif info.kind == "decimal":
        return unscaled_from_decimal(column.cast(pa.decimal128(info.precision, info.scale)))
    else:
        column = column.cast(pa.int64())
    if column.null_count:
        column = pc.fill_null(column, 0)
    values: I64 = column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return values


def _enum_indices(column: pa.Array, info: FieldInfo) -> I64:
    indices = pc.index_in(column.cast(pa.string()), value_set=pa.array(info.symbols, pa.string()))
    unknown = pc.and_(pc.is_null(indices), pc.is_valid(column))
    if pc.any(unknown).as_py():
        bad = column.filter(unknown)[0].as_py()
        raise EncodeError(f"field {info.name!r}: {bad!r} is not one of {list(info.symbols)}")
    indices_np: I64 = pc.fill_null(indices, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return indices_np


_NULL_BRANCH = pa.scalar(b"\x00", pa.large_binary())  # ["null", T] with null: the branch alone


def _field_pieces(column: pa.Array, info: FieldInfo) -> list[Piece | pa.Scalar]:
    rows = len(column)
    pieces: list[Piece | pa.Scalar] = []
    present = None
    if info.nullable and column.null_count == rows:
        return [_NULL_BRANCH]  # one scalar, not a piece per row: the row join repeats it for free
    if info.nullable and info.kind in ("long", "int", "timestamp", "date"):
        present = column.is_valid().to_numpy(zero_copy_only=False)
        return [_varints(_int64_values(column, info), present, branch=True)]
    if info.nullable:
        present = column.is_valid().to_numpy(zero_copy_only=False)
        pieces.append(_varints(present.astype(np.int64)))  # union branch 0 = null, 1 = value
    elif column.null_count:
        first = int(np.argmax(~column.is_valid().to_numpy(zero_copy_only=False)))
        raise EncodeError(f"field {info.name!r} is required but row {first} is null")
    if info.kind == "string":
        return [*pieces, *_string_pieces(column, present)]
    if info.kind == "enum":
        return [*pieces, _varints(_enum_indices(column, info), present)]
    values = _int64_values(column, info)
    if info.kind == "decimal":
        if info.fixed_size != 8:
            raise EncodeError(f"field {info.name!r}: only 8-byte fixed decimals are supported")
        data = values.astype(">i8").view(np.uint8).reshape(rows, 8)
        lengths = np.full(rows, 8, dtype=np.int64)
        if present is not None:
            data = data[present]
            lengths = np.where(present, lengths, 0)
        return [*pieces, _piece(data.reshape(-1), lengths)]
    return [*pieces, _varints(values, present)]


@dataclass
class EncodedBatch:
    """Confluent-framed Avro records, one per row (a large_binary array)."""

    records: pa.Array

    def __len__(self) -> int:
        return len(self.records)

    def values(self) -> list[bytes]:
        values: list[bytes] = self.records.to_numpy(zero_copy_only=False).tolist()
        return values


def encode_batch(table: pa.Table, schema: AvroSchema, schema_id: int) -> EncodedBatch:
    """Encode every row of `table` as a Confluent wire-format Avro record of `schema`."""
    rows = table.num_rows
    header = pa.scalar(confluent_header(schema_id), pa.large_binary())
    pieces: list[Piece | pa.Scalar] = [header]
    for info in field_infos(schema):
        if info.name in table.column_names:
            column = table.column(info.name).combine_chunks()
        elif info.nullable:  # an optional field the source does not have: its default, null
            column = pa.nulls(rows, pa.string())
        else:
            raise EncodeError(f"field {info.name!r} is missing from the batch")
        pieces.extend(_field_pieces(column, info))
    if not rows:
        return EncodedBatch(pa.array([], pa.large_binary()))
    # each row's pieces concatenated, in C++ (the separator is the last argument)
    records = pc.binary_join_element_wise(*pieces, pa.scalar(b"", pa.large_binary()))
    return EncodedBatch(records)
