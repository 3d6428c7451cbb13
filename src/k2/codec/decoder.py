"""Vectorised decoding of flat Avro records: one field at a time across every record of a batch, in numpy.

Record i is `data[starts[i]:ends[i]]`. Each field is read for all records at once: a varint is decoded one byte
position per step for every record still continuing (most varints take 1 to 3 steps, timestamps 8), a string is a
ragged gather of its bytes. A record that is malformed (its fields do not consume exactly its bytes, an invalid
union branch or enum index, a negative or overlong string length) is flagged, never raised: the caller isolates
just those records. No per-record Python runs on this path.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from k2.arrow_util import decimal_from_unscaled
from k2.errors import UnsupportedSchemaError
from k2.schemas import FieldInfo

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

_MAX_VARINT_BYTES = 10
_PADDING = np.zeros(16, dtype=np.uint8)
_HIGH_BITS = np.uint64(0x8080808080808080)
_LOW_BITS = np.uint64(0x7F7F7F7F7F7F7F7F)
# 8 bytes of 7 bits → one 56-bit number: pack byte pairs, then 16-bit lane pairs, then 32-bit lane pairs
_PACK_STEPS = [
    (np.uint64(0x007F007F007F007F), np.uint64(0x7F007F007F007F00), np.uint64(1)),
    (np.uint64(0x00003FFF00003FFF), np.uint64(0x3FFF00003FFF0000), np.uint64(2)),
    (np.uint64(0x000000000FFFFFFF), np.uint64(0x0FFFFFFF00000000), np.uint64(4)),
]
_TIME_RANGE = {  # 0001-01-01 .. 9999-12-31, in epoch microseconds and epoch days
    "timestamp": (-62_135_596_800_000_000, 253_402_300_799_999_999),
    "date": (-719_162, 2_932_896),
}


@dataclass
class DecodedColumns:
    table: pa.Table  # one row per record; the values of flagged rows are meaningless
    bad: Mask  # records that did not decode
    problem: npt.NDArray[np.int32]  # per record: index into `reasons` of its first problem, -1 if none
    reasons: list[str]

    def failures(self) -> list[tuple[int, str]]:
        """(record position, reason) of every flagged record."""
        return [(int(i), self.reasons[self.problem[i]]) for i in np.flatnonzero(self.bad)]


class _Cursor:
    """Read positions of every record in one shared buffer, plus which records have gone wrong."""

    def __init__(self, data: U8, starts: I64, ends: I64) -> None:
        self.data = np.concatenate([data, _PADDING])  # reads a few bytes past a record's end stay in bounds
        # words[i] = the 8 bytes starting at byte i, as one little-endian integer (overlapping, unaligned view)
        self.words = np.ndarray((len(self.data) - 7,), dtype="<u8", buffer=self.data, strides=(1,))
        self.limit = len(data)
        self.pos = starts.copy()
        self.ends = ends
        self.bad = np.zeros(len(starts), dtype=bool)
        self.problem = np.full(len(starts), -1, dtype=np.int32)
        self.reasons: list[str] = []
        self.field = ""

    def flag(self, rows: Mask | I64, reason: str) -> None:
        """Mark `rows` (mask or indices) bad; a record keeps the first reason it got."""
        if rows.dtype == np.bool_:
            mask = rows
        else:
            mask = np.zeros(len(self.pos), dtype=bool)
            mask[rows] = True
        new = mask & ~self.bad
        if new.any():
            self.problem[new] = len(self.reasons)
            self.reasons.append(f"field {self.field!r}: {reason}" if self.field else reason)
            self.bad |= new

    def advance(self, nbytes: I64) -> None:
        self.pos = np.minimum(self.pos + nbytes, self.limit)  # a bogus length must not walk out of the buffer

    def varint(self, present: Mask | None = None) -> I64:
        """Zigzag-decoded varints at each record's position (0 and no bytes consumed where not `present`).

        Each record's next 8 bytes are gathered as one little-endian word; the first byte without the
        continuation bit ends the varint, and its 7-bit groups are packed together with three shift-and-mask
        steps. The rare varint longer than 8 bytes is finished byte by byte.
        """
        words = self.words[self.pos]
        stops = ~words & _HIGH_BITS  # the high bit of every byte that ends a varint
        ends_here = stops & (~stops + np.uint64(1))  # lowest such bit (0 if all 8 bytes continue)
        long = ends_here == 0
        nbytes = (np.bitwise_count(ends_here - np.uint64(1)) + 1).astype(np.int64) // 8
        groups = words & ((ends_here << np.uint64(1)) - np.uint64(1)) & _LOW_BITS
        for low, high, shift in _PACK_STEPS:
            groups = (groups & low) | ((groups & high) >> shift)
        value = groups
        if long.any():
            value, nbytes = self._long_varints(value, nbytes, long)
        if present is not None:
            nbytes = np.where(present, nbytes, 0)
            value = np.where(present, value, np.uint64(0))
        self.advance(nbytes)
        decoded: I64 = (value >> np.uint64(1)).astype(np.int64) ^ -(value & np.uint64(1)).astype(np.int64)
        return decoded

    def _long_varints(self, value: npt.NDArray[np.uint64], nbytes: I64, long: Mask) -> tuple[
            npt.NDArray[np.uint64], I64]:
        rows = np.flatnonzero(long)
        acc = value[rows]  # the first 8 bytes' 56 bits, already packed
        count = np.full(len(rows), 8, dtype=np.int64)
        active = np.arange(len(rows))
        for step in range(8, _MAX_VARINT_BYTES):
            byte = self.data[self.pos[rows[active]] + step]
            acc[active] |= (byte & 0x7F).astype(np.uint64) << np.uint64(7 * step)
            count[active] += 1
            active = active[byte >= 0x80]
        if len(active):
            self.flag(rows[active], "varint longer than 10 bytes")
        value, nbytes = value.copy(), nbytes.copy()
        value[rows], nbytes[rows] = acc, count
        return value, nbytes

    def fixed_big_endian(self, size: int, present: Mask | None) -> I64:
        """`size`-byte big-endian two's-complement integers (Avro fixed decimals)."""
        gathered = self.data[self.pos[:, None] + np.arange(size)[None, :]]
        values: I64 = gathered.view(f">i{size}").reshape(-1).astype(np.int64)
        self.advance(np.full(len(self.pos), size, dtype=np.int64) if present is None else np.where(present, size, 0))
        return values

    def strings(self, present: Mask | None) -> tuple[I64, U8]:
        """Arrow-style offsets and bytes of a string field (absent rows are empty)."""
        lengths = self.varint(present)
        self.flag(lengths < 0, "negative string length")
        overlong = (lengths < 0) | (self.pos + lengths > self.ends)
        self.flag(overlong, "string runs past the end of the record")
        lengths = np.where(overlong, 0, lengths)
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        total = int(offsets[-1])
        starts = np.repeat(self.pos - offsets[:-1], lengths)
        raw = self.data[starts + np.arange(total)] if total else np.empty(0, dtype=np.uint8)
        self.advance(lengths)
        return offsets, raw


def _validity(present: Mask | None) -> tuple[pa.Buffer | None, int]:
    if present is None or present.all():
        return None, 0
    return pa.py_buffer(np.packbits(present, bitorder="little")), int((~present).sum())


def _string_array(cursor: _Cursor, offsets: I64, raw: U8, present: Mask | None) -> pa.Array:
    validity, nulls = _validity(present)
    array = pa.Array.from_buffers(
        pa.large_string(), len(offsets) - 1, [validity, pa.py_buffer(offsets), pa.py_buffer(raw)], nulls
    )
    try:
        array.validate(full=True)  # UTF-8
    except pa.ArrowInvalid:  # rare, corrupt input only: find the rows one by one and blank them
        bytes_view = raw.tobytes()
        invalid = np.array([not _is_utf8(bytes_view[a:b]) for a, b in pairwise(offsets.tolist())], dtype=bool)
        cursor.flag(invalid, "string is not valid UTF-8")
        keep_lengths = np.where(invalid, 0, np.diff(offsets))
        kept = np.repeat(~invalid, np.diff(offsets))
        array = pa.Array.from_buffers(
            pa.large_string(), len(offsets) - 1,
            [validity, pa.py_buffer(np.concatenate(([0], np.cumsum(keep_lengths)))), pa.py_buffer(raw[kept])], nulls,
        )
    return array


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _int_array(values: I64, arrow_type: pa.DataType, present: Mask | None) -> pa.Array:
    validity, nulls = _validity(present)
    if arrow_type == pa.date32():
        return pa.Array.from_buffers(arrow_type, len(values), [validity, pa.py_buffer(values.astype(np.int32))], nulls)
    return pa.Array.from_buffers(arrow_type, len(values), [validity, pa.py_buffer(values)], nulls)


def _column(cursor: _Cursor, info: FieldInfo, present: Mask | None) -> pa.Array:
    if info.kind == "string":
        offsets, raw = cursor.strings(present)
        return _string_array(cursor, offsets, raw, present)
    if info.kind == "decimal":
        values = cursor.fixed_big_endian(info.fixed_size, present)
        if info.precision < 19:  # 8 bytes hold up to 19 digits: more than the declared precision allows
            beyond = np.abs(values) >= 10**info.precision
            cursor.flag(beyond if present is None else beyond & present, f"more than {info.precision} digits")
            values = np.where(cursor.bad, 0, values)
        return decimal_from_unscaled(values, info.precision, info.scale, present)
    values = cursor.varint(present)
    if info.kind == "enum":
        invalid = (values < 0) | (values >= len(info.symbols))
        if present is not None:
            invalid &= present
        cursor.flag(invalid, f"enum index out of range 0..{len(info.symbols) - 1}")
        indices = pa.array(np.where(invalid, 0, values).astype(np.int32), mask=None if present is None else ~present)
        return pa.array(info.symbols, pa.large_string()).take(indices)
    if info.kind in ("timestamp", "date"):  # Avro allows any long; anything outside years 1-9999 is corrupt
        low, high = _TIME_RANGE[info.kind]
        outside = (values < low) | (values > high)
        cursor.flag(outside if present is None else outside & present, "timestamp/date outside years 1-9999")
        values = np.where(outside, 0, values)
        arrow_type = pa.timestamp("us", tz="UTC") if info.kind == "timestamp" else pa.date32()
        return _int_array(values, arrow_type, present)
    if info.kind == "int":
        cursor.flag((values < -(2**31)) | (values >= 2**31), "int out of 32-bit range")
    return _int_array(values, pa.int64(), present)


def _supported(info: FieldInfo) -> bool:
    if info.kind == "decimal":
        return info.fixed_size in (1, 2, 4, 8)
    return info.kind in ("string", "long", "int", "timestamp", "date", "enum")


def decode_columns(infos: list[FieldInfo], data: U8, starts: I64, ends: I64) -> DecodedColumns:
    """Decode the records `data[starts[i]:ends[i]]`, all written with the schema described by `infos`."""
    unsupported = [i.name for i in infos if not _supported(i)]
    if unsupported:
        raise UnsupportedSchemaError(f"fields {unsupported} need the general decoder")
    cursor = _Cursor(data, starts, ends)
    columns = []
    for info in infos:
        cursor.field = info.name
        present = None
        if info.nullable:  # union ["null", T]: branch 0 is null, 1 is a value
            branch = cursor.varint()
            cursor.flag((branch < 0) | (branch > 1), "union branch is neither 0 (null) nor 1")
            present = branch == 1
        columns.append(_column(cursor, info, present))
    cursor.field = ""
    cursor.flag(cursor.pos < ends, "trailing bytes after the last field")
    cursor.flag(cursor.pos > ends, "record ends before its last field")
    table = pa.Table.from_arrays(columns, names=[i.name for i in infos])
    return DecodedColumns(table, cursor.bad, cursor.problem, cursor.reasons)
