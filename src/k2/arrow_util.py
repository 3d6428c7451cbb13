"""Small vectorised Arrow helpers shared by ingest, lake and query."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa


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
        values[~column.is_valid().to_numpy(zero_copy_only=False)] = 0
    return values
