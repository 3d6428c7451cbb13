"""The general decode path, for any Avro record schema: the bodies of one schema id wrapped as one block of an
in-memory Avro object container file, decoded natively by polars; record by record with fastavro when the block
fails, so that a bad record costs only itself. No I/O.
"""

from __future__ import annotations

import io
import json
import os

import fastavro
import numpy as np
import numpy.typing as npt
import polars as pl

from k2.errors import DecodeError
from k2.schemas import AvroSchema


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


def decode_each(
    schema: AvroSchema, bodies: list[bytes], indices: npt.NDArray[np.int64]
) -> tuple[pl.DataFrame | None, list[int], list[tuple[int, str]]]:
    """Record by record with fastavro: the rows that decode, their `indices`, and (index, reason) for each record
    that does not. Only for a block that failed as a whole, so this per-record loop is rare."""
    parsed = fastavro.parse_schema(schema)
    rows, kept, failures = [], [], []
    for index, body in zip(indices.tolist(), bodies, strict=True):
        buffer = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(buffer, parsed, parsed)
            if buffer.tell() != len(body):
                raise ValueError(f"{len(body) - buffer.tell()} trailing bytes")
        except Exception as exc:  # fastavro raises many types on corrupt input
            failures.append((index, f"Avro body does not decode with schema {schema.get('name')}: {exc}"))
            continue
        rows.append(record)
        kept.append(index)
    if not rows:
        return None, kept, failures
    frame = pl.DataFrame(rows, infer_schema_length=None)
    frame = frame.with_columns(
        pl.col(c).dt.convert_time_zone("UTC") for c, t in frame.schema.items() if isinstance(t, pl.Datetime)
    )
    return frame, kept, failures
