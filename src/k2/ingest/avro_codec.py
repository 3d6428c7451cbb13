"""Vectorised Avro binary encoding and decoding of flat records, in Confluent wire format.

Encoding builds every record's bytes with numpy (zigzag varints, big-endian fixed decimals, length-prefixed
strings) instead of a per-row Python encoder; decoding wraps the record bodies of one schema id as a single block
of an in-memory Avro container file and lets polars decode it in native code.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from k2.arrow_util import unscaled_from_decimal
from k2.schemas import AvroSchema, FieldInfo, field_infos

MAGIC_BYTE = 0
HEADER_SIZE = 5  # magic byte + 4-byte big-endian schema id
_MAX_VARINT_BYTES = 10

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]


class EncodeError(ValueError):
    """A column cannot be encoded with the writer schema (names the field and the first bad row)."""


@dataclass
class _Piece:
    """Per-row byte strings laid out as one flat buffer plus row offsets (like an Arrow binary array)."""

    data: U8
    lengths: I64


def _varints(values: I64, present: npt.NDArray[np.bool_] | None = None) -> _Piece:
    """Avro zigzag varints of int64 values; rows where `present` is False get zero bytes."""
    zigzag = ((values << 1) ^ (values >> 63)).astype(np.uint64)
    nbytes = np.ones(len(values), dtype=np.int64)
    for group in range(1, _MAX_VARINT_BYTES):
        nbytes += zigzag >= (np.uint64(1) << np.uint64(7 * group))
    if present is not None:
        nbytes = np.where(present, nbytes, 0)
    width = int(nbytes.max()) if len(nbytes) else 0
    shifts = (np.arange(width, dtype=np.uint64) * np.uint64(7))[None, :]
    groups = ((zigzag[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    position = np.arange(width)[None, :]
    groups[position < (nbytes[:, None] - 1)] |= 0x80
    return _Piece(groups[position < nbytes[:, None]], nbytes)


def _constant(value: bytes, rows: int) -> _Piece:
    pattern = np.frombuffer(value, dtype=np.uint8)
    return _Piece(np.tile(pattern, rows), np.full(rows, len(value), dtype=np.int64))


def _string_pieces(column: pa.Array, nullable: bool) -> list[_Piece]:
    column = pc.fill_null(column, "") if nullable else column
    column = column.cast(pa.large_binary())
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[column.offset : column.offset + len(column) + 1]
    raw = np.frombuffer(column.buffers()[2], dtype=np.uint8) if column.buffers()[2] else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    return [_varints(lengths), _Piece(raw[offsets[0] : offsets[-1]], lengths)]


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


def _field_pieces(column: pa.Array, info: FieldInfo) -> list[_Piece]:
    rows = len(column)
    pieces: list[_Piece] = []
    present = None
    if info.nullable:
        present = column.is_valid().to_numpy(zero_copy_only=False)
        pieces.append(_varints(present.astype(np.int64)))  # union branch 0 = null, 1 = value
    elif column.null_count:
        first = int(np.argmax(~column.is_valid().to_numpy(zero_copy_only=False)))
        raise EncodeError(f"field {info.name!r} is required but row {first} is null")
    if info.kind == "string":
        length_piece, bytes_piece = _string_pieces(column, info.nullable)
        if present is not None:
            length_piece = _varints(bytes_piece.lengths, present)
        return [*pieces, length_piece, bytes_piece]
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
        return [*pieces, _Piece(data.reshape(-1), lengths)]
    return [*pieces, _varints(values, present)]


def _interleave(pieces: list[_Piece], rows: int) -> tuple[U8, I64]:
    """Concatenate piece i of every row, row by row: returns the buffer and each row's end offset."""
    lengths = np.stack([piece.lengths for piece in pieces]) if pieces else np.zeros((0, rows), np.int64)
    row_lengths = lengths.sum(axis=0)
    row_ends = np.cumsum(row_lengths)
    row_starts = row_ends - row_lengths
    out = np.empty(int(row_ends[-1]) if rows else 0, dtype=np.uint8)
    field_starts = row_starts + np.cumsum(lengths, axis=0) - lengths
    for piece, starts in zip(pieces, field_starts, strict=True):
        if not len(piece.data):
            continue
        piece_offsets = np.cumsum(piece.lengths) - piece.lengths
        positions = np.repeat(starts - piece_offsets, piece.lengths) + np.arange(len(piece.data))
        out[positions] = piece.data
    return out, row_ends


@dataclass
class EncodedBatch:
    """Confluent-framed Avro records: one flat buffer and each record's end offset."""

    buffer: bytes
    ends: I64

    def __len__(self) -> int:
        return len(self.ends)

    def values(self) -> list[bytes]:
        buffer = self.buffer
        starts = np.concatenate(([0], self.ends[:-1])).tolist()
        return [buffer[s:e] for s, e in zip(starts, self.ends.tolist(), strict=True)]


def encode_batch(table: pa.Table, schema: AvroSchema, schema_id: int) -> EncodedBatch:
    """Encode every row of `table` as a Confluent wire-format Avro record of `schema`."""
    rows = table.num_rows
    header = bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big")
    pieces = [_constant(header, rows)]
    for info in field_infos(schema):
        if info.name in table.column_names:
            column = table.column(info.name).combine_chunks()
        elif info.nullable:  # an optional field the source does not have: its default, null
            column = pa.nulls(rows, pa.string())
        else:
            raise EncodeError(f"field {info.name!r} is missing from the batch")
        pieces.extend(_field_pieces(column, info))
    buffer, ends = _interleave(pieces, rows)
    return EncodedBatch(buffer.tobytes(), ends)


# ---------------------------------------------------------------------------------------------- decoding


class DecodeError(ValueError):
    """A record cannot be decoded; carries which one and why."""


@dataclass
class Framed:
    """Records split by their wire-format header: schema id per record plus the joined Avro bodies."""

    schema_ids: I64
    bodies: U8
    body_ends: I64
    bad_header: npt.NDArray[np.bool_]


def split_headers(values: list[bytes]) -> Framed:
    """Vectorised check and removal of the 5-byte Confluent header of every record."""
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    joined = np.frombuffer(b"".join(values), dtype=np.uint8)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    bad = lengths < HEADER_SIZE
    safe_starts = np.where(bad, 0, starts)
    header = joined[safe_starts[:, None] + np.arange(HEADER_SIZE)[None, :]] if len(joined) else np.zeros(
        (len(values), HEADER_SIZE), np.uint8
    )
    bad |= header[:, 0] != MAGIC_BYTE
    schema_ids = (header[:, 1:].astype(np.int64) << np.array([24, 16, 8, 0])).sum(axis=1)
    keep = np.ones(len(joined), dtype=bool)
    header_positions = (safe_starts[~bad, None] + np.arange(HEADER_SIZE)[None, :]).reshape(-1)
    keep[header_positions] = False
    body_lengths = np.where(bad, 0, lengths - HEADER_SIZE)
    keep[np.repeat(starts[bad], lengths[bad]) + _ragged_arange(lengths[bad])] = False
    return Framed(np.where(bad, -1, schema_ids), joined[keep], np.cumsum(body_lengths), bad)


def _ragged_arange(lengths: I64) -> I64:
    if not len(lengths):
        return np.empty(0, dtype=np.int64)
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - offsets


def _zigzag_varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = zigzag & 0x7F
        zigzag >>= 7
        if zigzag:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def container_file(schema: AvroSchema, bodies: bytes, count: int) -> bytes:
    """An Avro object container file holding `count` already-encoded records as one uncompressed block."""
    sync = os.urandom(16)
    meta = {"avro.schema": json.dumps(schema).encode(), "avro.codec": b"null"}
    header = bytearray(b"Obj\x01")
    header += _zigzag_varint(len(meta))
    for key, value in meta.items():
        header += _zigzag_varint(len(key)) + key.encode() + _zigzag_varint(len(value)) + value
    header += b"\x00" + sync
    block = _zigzag_varint(count) + _zigzag_varint(len(bodies)) + bodies + sync
    return bytes(header) + block


def decode_bodies(schema: AvroSchema, bodies: bytes, count: int) -> pl.DataFrame:
    """Decode `count` concatenated Avro bodies written with `schema`; raises DecodeError on any mismatch."""
    if count == 0:
        return pl.DataFrame()
    try:
        frame = pl.read_avro(io.BytesIO(container_file(schema, bodies, count)))
    except Exception as exc:  # polars raises ComputeError/OSError variants on corrupt input
        raise DecodeError(f"Avro block did not decode: {exc}") from exc
    if frame.height != count:  # readers silently truncate a block whose count is wrong
        raise DecodeError(f"Avro block decoded {frame.height} rows, expected {count}")
    return frame
