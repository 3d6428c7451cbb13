"""The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro body. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAGIC_BYTE = 0
HEADER_SIZE = 5  # magic byte + 4-byte big-endian schema id

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]


def confluent_header(schema_id: int) -> bytes:
    return bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big")


@dataclass
class WireRecords:
    """Kafka record values in one buffer, with each record's Avro body bounds and Confluent header fields."""

    data: U8  # every value, back to back
    body_starts: I64  # just after the 5-byte header
    body_ends: I64
    schema_ids: I64  # -1 where the header is bad
    bad_header: npt.NDArray[np.bool_]

    def bodies(self, indices: I64) -> bytes:
        """The Avro bodies of records `indices`, concatenated (one ragged gather, no per-record slicing)."""
        lengths = self.body_ends[indices] - self.body_starts[indices]
        positions = np.repeat(self.body_starts[indices], lengths) + _ragged_arange(lengths)
        return bytes(self.data[positions].tobytes())

    def body_list(self, indices: I64) -> list[bytes]:
        """The Avro bodies of records `indices`, one bytes object each (for record-by-record decoding)."""
        return [self.data[self.body_starts[i] : self.body_ends[i]].tobytes() for i in indices.tolist()]


def split_headers(values: list[bytes]) -> WireRecords:
    """Vectorised check of the 5-byte Confluent header (magic byte 0 + big-endian schema id) of every record."""
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    data = np.frombuffer(b"".join(values), dtype=np.uint8)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    bad = lengths < HEADER_SIZE
    safe_starts = np.where(bad, 0, starts)
    header = data[safe_starts[:, None] + np.arange(HEADER_SIZE)[None, :]] if len(data) else np.zeros(
        (len(values), HEADER_SIZE), np.uint8
    )
    bad |= header[:, 0] != MAGIC_BYTE
    schema_ids = (header[:, 1:].astype(np.int64) << np.array([24, 16, 8, 0])).sum(axis=1)
    body_starts = np.where(bad, ends, starts + HEADER_SIZE)
    return WireRecords(data, body_starts, ends, np.where(bad, -1, schema_ids), bad)


def _ragged_arange(lengths: I64) -> I64:
    if not len(lengths):
        return np.empty(0, dtype=np.int64)
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - offsets
