"""Small vectorised Arrow helpers shared by ingest, lake and query."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc


def numpy_of(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-width (integer, float, timestamp cast to int) or boolean Arrow column as numpy, from its buffers.

    pyarrow's own to_numpy() imports pandas when it is installed (~0.2 s): a one-shot query must not pay that.
    Columns with nulls (rare here) take pyarrow's path."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        return np.asarray(array.to_numpy(zero_copy_only=False))
    if pa.types.is_boolean(array.type):
        if len(array) == 0:
            return np.empty(0, bool)
        bits = np.unpackbits(np.frombuffer(array.buffers()[1], np.uint8), bitorder="little")
        return bits[array.offset : array.offset + len(array)].astype(bool)
    kind = "f" if pa.types.is_floating(array.type) else "i"
    dtype = np.dtype(f"{kind}{array.type.bit_width // 8}")
    if len(array) == 0:
        return np.empty(0, dtype)
    return np.frombuffer(array.buffers()[1], dtype, count=len(array), offset=array.offset * dtype.itemsize)


def decimal_from_unscaled(
    unscaled: npt.NDArray[np.int64], precision: int, scale: int, valid: npt.NDArray[np.bool_] | None = None
) -> pa.Array:
    """A decimal128 array whose values are `unscaled * 10**-scale`, built without per-row Python."""
    words = np.empty((len(unscaled), 2), dtype=np.int64)
    words[:, 0] = unscaled
    words[:, 1] = unscaled >> 63  # sign extension into the high 64 bits
    validity = None
    null_count = 0
    if valid is not None and not valid.all():
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        null_count = int((~valid).sum())
    return pa.Array.from_buffers(
        pa.decimal128(precision, scale), len(unscaled), [validity, pa.py_buffer(words)], null_count
    )


def unscaled_from_decimal(column: pa.Array) -> npt.NDArray[np.int64]:
    """The unscaled int64 values of a decimal128 array of precision ≤ 18 (nulls read as 0)."""
    words = np.frombuffer(column.buffers()[1], dtype=np.int64)
    values = words[2 * column.offset : 2 * (column.offset + len(column)) : 2].copy()
    if column.null_count:
        values[~numpy_of(column.is_valid())] = 0
    return values


def symbol_runs(table: pa.Table) -> dict[str, tuple[int, int]]:
    """symbol → [first, stop) rows of a table whose rows are grouped by symbol (e.g. sorted by it)."""
    if table.num_rows == 0:
        return {}
    symbol = table.column("symbol").combine_chunks()
    changes = np.flatnonzero(numpy_of(pc.not_equal(symbol[1:], symbol[:-1]))) + 1
    starts = np.concatenate([[0], changes]).astype(np.int64)
    stops = np.append(starts[1:], table.num_rows)
    names = symbol.take(pa.array(starts)).to_pylist()
    return {name: (int(a), int(b)) for name, a, b in zip(names, starts, stops, strict=True)}


def micros(column: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.int64]:
    """A timestamp column as int64 µs since the epoch."""
    if len(column) == 0:
        return np.empty(0, np.int64)
    whole = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.asarray(numpy_of(whole.cast(pa.int64())), np.int64)
