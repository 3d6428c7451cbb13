"""The vectorised Avro encoder must produce exactly what a reference Avro implementation (fastavro) reads."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import fastavro
import numpy as np
import pyarrow as pa
import pytest

from k2.arrow_util import decimal_from_unscaled
from k2.codec.container import decode_bodies
from k2.codec.encoder import encode_batch
from k2.codec.framing import split_headers
from k2.errors import DecodeError, EncodeError
from k2.schemas import Dataset, avro_schema

UTC = dt.UTC


def _fastavro_read(value: bytes, schema: dict) -> dict:
    parsed = fastavro.parse_schema(schema)
    return fastavro.schemaless_reader(io.BytesIO(value[5:]), parsed, parsed)


def quotes_table() -> pa.Table:
    edge_longs = [0, 1, -1, 63, 64, -64, -65, 2**62, -(2**63), 2**63 - 1]
    n = len(edge_longs)
    return pa.table({
        "exchange": ["ASX"] * n,
        "symbol": ["DVN", "", "é漢字", "X" * 300, "A", "B", "C", "D", "E", "F"],
        "ts": pa.array([abs(v) // 1000 for v in edge_longs], pa.timestamp("us", tz="UTC")),
        "sequence": edge_longs,
        "bid_price": pa.array([Decimal("0.665"), None, Decimal("-1.5"), Decimal("9999999999.99999999"),
                               Decimal(0), None, None, Decimal("0.00000001"), None, Decimal(1)],
                              pa.decimal128(18, 8)),
        "ask_price": pa.array([None] * n, pa.decimal128(18, 8)),
        "bid_size": pa.array([1, None, 63, 64, 2**63 - 1, None, 0, -1, 127, 128], pa.int64()),
        "ask_size": pa.array(edge_longs, pa.int64()),
        "ingest_ts": pa.array([5] * n, pa.timestamp("us", tz="UTC")),
    })


def _fastavro_bytes(row: dict, schema: dict) -> bytes:
    parsed = fastavro.parse_schema(schema)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, row)
    return buffer.getvalue()


def test_encoded_bytes_are_exactly_fastavros() -> None:
    """Byte for byte, not just values read back: same varints, same fixed decimals, same union branches."""
    table = quotes_table()
    schema = avro_schema(Dataset.QUOTES)
    for value, row in zip(encode_batch(table, schema, schema_id=7).values(), table.to_pylist(), strict=True):
        assert value[5:] == _fastavro_bytes(row, schema), row
    trades = _random_trades(2_000)
    schema = avro_schema(Dataset.TRADES)
    for value, row in zip(encode_batch(trades, schema, 1).values(), trades.to_pylist(), strict=True):
        assert value[5:] == _fastavro_bytes({**row, "venue": row.get("venue")}, schema), row


def test_encoded_quotes_read_back_exactly_with_fastavro() -> None:
    table = quotes_table()
    lines = [None if i % 3 == 0 else 1_000 * i for i in range(table.num_rows)]  # lineage: set or not
    table = table.append_column("source_line", pa.array(lines, pa.int64()))
    schema = avro_schema(Dataset.QUOTES)
    encoded = encode_batch(table, schema, schema_id=7)
    values = encoded.values()
    assert len(values) == table.num_rows
    for value, row in zip(values, table.to_pylist(), strict=True):
        assert value[:5] == b"\x00\x00\x00\x00\x07"
        assert _fastavro_read(value, schema) == row


def _random_trades(n: int) -> pa.Table:
    rng = np.random.default_rng(3)
    return pa.table({
        "exchange": ["K2X"] * n,
        "symbol": rng.choice(["AAA", "BB", "CCCC"], n),
        "ts": pa.array(rng.integers(0, 2**52, n), pa.timestamp("us", tz="UTC")),
        "sequence": np.arange(n),
        "trade_id": [f"T{i}" for i in range(n)],
        "price": decimal_from_unscaled(rng.integers(1, 10**15, n), 18, 8),
        "size": rng.integers(1, 10**6, n),
        "side": rng.choice(["BUY", "SELL", "UNKNOWN"], n),
        "conditions": pa.array([None if i % 3 else "I" for i in range(n)]),
        "ingest_ts": pa.array(np.zeros(n, np.int64), pa.timestamp("us", tz="UTC")),
    })


def test_trades_round_trip_through_native_block_decode() -> None:
    n = 5000
    table = _random_trades(n)
    schema = avro_schema(Dataset.TRADES)
    values = encode_batch(table, schema, 1).values()
    records = split_headers(values)
    assert not records.bad_header.any() and (records.schema_ids == 1).all()
    decoded = decode_bodies(schema, records.bodies(np.arange(n)), n)
    assert decoded["side"].cast(str).to_list() == table["side"].to_pylist()
    expected = table.drop_columns(["side"]).to_pylist()
    for row in expected:
        row["venue"] = None  # added in trade v2: absent from the batch, encoded as its default
        row["source_line"] = None  # likewise, v3
    assert [dict(sorted(r.items())) for r in decoded.drop("side").to_arrow().to_pylist()] == [
        dict(sorted(r.items())) for r in expected]


def test_split_headers_flags_records_without_wire_format() -> None:
    good = encode_batch(quotes_table().slice(0, 2), avro_schema(Dataset.QUOTES), 3).values()
    records = split_headers([good[0], b"\x01junk", b"ab", good[1]])
    assert records.bad_header.tolist() == [False, True, True, False]
    assert records.schema_ids.tolist() == [3, -1, -1, 3]
    decoded = decode_bodies(avro_schema(Dataset.QUOTES), records.bodies(np.array([0, 3])), 2)
    assert decoded["symbol"].to_list() == ["DVN", ""]


def test_wrong_record_count_is_an_error_not_silent_truncation() -> None:
    values = encode_batch(quotes_table().slice(0, 3), avro_schema(Dataset.QUOTES), 3).values()
    bodies = split_headers(values).bodies(np.arange(3))
    with pytest.raises(DecodeError):
        decode_bodies(avro_schema(Dataset.QUOTES), bodies, 4)


def test_unknown_enum_value_names_the_field() -> None:
    table = pa.table({
        "exchange": ["X"], "symbol": ["A"], "ts": pa.array([0], pa.timestamp("us", tz="UTC")), "sequence": [1],
        "trade_id": ["t"], "price": pa.array([Decimal(1)], pa.decimal128(18, 8)), "size": [1], "side": ["SIDEWAYS"],
        "conditions": pa.array([None], pa.string()), "ingest_ts": pa.array([0], pa.timestamp("us", tz="UTC")),
    })
    with pytest.raises(EncodeError, match=r"side.*SIDEWAYS"):
        encode_batch(table, avro_schema(Dataset.TRADES), 1)
