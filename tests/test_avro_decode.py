"""The vectorised decoder must agree with a reference Avro implementation (fastavro) on every record: valid ones
decode to the same values, and corrupt ones are flagged (never raised, never silently mis-read)."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pytest

from k2.codec.decoder import decode_columns
from k2.codec.encoder import encode_batch
from k2.codec.framing import split_headers
from k2.codec.records import decode_records
from k2.errors import UnsupportedSchemaError
from k2.kafka.producer import with_ingest_ts
from k2.registry.local import LocalSchemaRegistry
from k2.schemas import Dataset, avro_schema, field_infos
from k2.sources.generator import generate_quotes, generate_reference, generate_trades
from tests.test_avro_codec import quotes_table

DAY = dt.date(2026, 3, 2)


def _fastavro(body: bytes, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The record fastavro reads from exactly these bytes, or None if it cannot."""
    parsed = fastavro.parse_schema(schema)
    buffer = io.BytesIO(body)
    try:
        record: dict[str, Any] = fastavro.schemaless_reader(buffer, parsed, parsed)
    except Exception:
        return None
    return record if buffer.tell() == len(body) else None


def _decode(values: list[bytes], schema: dict[str, Any]) -> tuple[list[dict[str, Any]], np.ndarray, list[str]]:
    records = split_headers(values)
    decoded = decode_columns(field_infos(schema), records.data, records.body_starts, records.body_ends)
    reasons = [decoded.reasons[p] if p >= 0 else "" for p in decoded.problem]
    return decoded.table.to_pylist(), decoded.bad, reasons


def _tables() -> dict[Dataset, pa.Table]:
    quotes = with_ingest_ts(generate_quotes(DAY, ["AAA", "BB"], 2_000, seed=6))
    return {
        Dataset.TRADES: with_ingest_ts(generate_trades(DAY, ["AAA", "é漢字", ""], 3_000, seed=5)),
        Dataset.QUOTES: pa.concat_tables([quotes_table(), quotes.select(quotes_table().column_names)
                                          .cast(quotes_table().schema)]),
        Dataset.REFERENCE: with_ingest_ts(generate_reference(["AAA", "BB", "CCC"], DAY)),
    }


@pytest.mark.parametrize("dataset", [Dataset.TRADES, Dataset.QUOTES, Dataset.REFERENCE])
def test_valid_records_decode_exactly_as_fastavro_reads_them(dataset: Dataset) -> None:
    schema = avro_schema(dataset)
    values = encode_batch(_tables()[dataset], schema, 1).values()
    rows, bad, _ = _decode(values, schema)
    assert not bad.any()
    assert rows == [_fastavro(v[5:], schema) for v in values]


def _corrupt(value: bytes, rng: np.random.Generator) -> bytes:
    body = bytearray(value)
    kind = rng.integers(5)
    position = int(rng.integers(5, len(body)))
    if kind == 0:  # flip a byte
        body[position] = int(rng.integers(256))
    elif kind == 1:  # truncate
        del body[position:]
    elif kind == 2:  # trailing garbage
        body += bytes(rng.integers(0, 256, int(rng.integers(1, 4)), dtype=np.uint8))
    elif kind == 3:  # drop a byte
        del body[position]
    else:  # set the continuation bit, making a varint run on
        body[position] |= 0x80
    return bytes(body)


@pytest.mark.parametrize("dataset", [Dataset.TRADES, Dataset.QUOTES, Dataset.REFERENCE])
def test_corrupt_records_are_flagged_or_read_exactly_as_fastavro_reads_them(dataset: Dataset) -> None:
    rng = np.random.default_rng(42)
    schema = avro_schema(dataset)
    good = encode_batch(_tables()[dataset], schema, 1).values()
    values = [_corrupt(good[i % len(good)], rng) for i in range(4_000)]
    rows, bad, reasons = _decode(values, schema)
    precision_limits = {i.name: Decimal(10) ** (i.precision - i.scale) for i in field_infos(schema)
                        if i.kind == "decimal"}
    flagged_only_by_k2 = 0
    for value, row, is_bad, reason in zip(values, rows, bad, reasons, strict=True):
        expected = _fastavro(value[5:], schema)
        if expected is None:
            assert is_bad, f"fastavro rejects {value!r}, K2 decoded {row}"
        elif is_bad:
            # K2 may only be stricter about a decimal's declared precision, and about negative enum / union
            # indexes, which fastavro reads like Python list indexes (-1 = the last symbol or branch)
            flagged_only_by_k2 += 1
            if "digits" in reason:
                assert any(abs(expected[name]) >= limit for name, limit in precision_limits.items()
                           if expected[name] is not None)
            else:
                assert "enum index" in reason or "union branch" in reason, (reason, expected)
        else:
            assert row == expected
    assert bad.sum() > 1_000 and (~bad).sum() > 100  # the corruption hit both outcomes
    assert flagged_only_by_k2 < bad.sum()


def test_each_problem_is_named() -> None:
    schema = avro_schema(Dataset.TRADES)
    [value] = encode_batch(with_ingest_ts(generate_trades(DAY, ["AAA"], 1, seed=1)), schema, 1).values()
    cases = {
        "trailing bytes after the last field": value + b"\x00",
        "record ends before its last field": value[:-1],
        "string runs past the end of the record": value[:5] + b"\x7e" + value[6:],  # exchange length 63
        "negative string length": value[:5] + b"\x01" + value[6:],  # zigzag 1 = -1
    }
    _, bad, reasons = _decode(list(cases.values()), schema)
    assert bad.all()
    for expected, reason in zip(cases, reasons, strict=True):
        assert expected in reason
    assert reasons[2].startswith("field 'exchange'")


def test_schemas_with_other_field_kinds_are_left_to_the_general_decoder() -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "double"}]}
    with pytest.raises(ValueError):
        field_infos(schema)
    with pytest.raises(UnsupportedSchemaError):
        decode_columns([*field_infos(avro_schema(Dataset.TRADES))[:1],
                        type(field_infos(avro_schema(Dataset.TRADES))[0])("x", "double", False)],
                       np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64))


def test_a_writer_schema_with_other_field_kinds_decodes_through_the_general_path(tmp_path: Path) -> None:
    # another producer's trade schema with a float field: the vectorised decoder does not handle it; polars'
    # block decoder does, and a corrupt record among them is isolated record by record
    schema = json.loads(json.dumps(avro_schema(Dataset.TRADES)))
    schema["fields"].append({"name": "score", "type": "double", "default": 0.0})
    registry = LocalSchemaRegistry(tmp_path / "registry")
    schema_id = registry.register("other-value", schema)
    rows = with_ingest_ts(generate_trades(DAY, ["AAA", "BB"], 50, seed=9)).to_pylist()
    parsed = fastavro.parse_schema(schema)
    header = b"\x00" + schema_id.to_bytes(4, "big")
    values = []
    for row in rows:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, {**row, "venue": None, "score": 0.5})
        values.append(header + buffer.getvalue())
    values[7] = values[7][:-3]  # truncated
    decoded = decode_records(values, registry.schema, Dataset.TRADES)
    assert [i for i, _ in decoded.failures] == [7]
    assert decoded.table is not None and decoded.table.num_rows == 49
    assert "score" not in decoded.table.column_names
    kept = [r for i, r in enumerate(rows) if i != 7]
    assert decoded.table.column("sequence").to_pylist() == [r["sequence"] for r in kept]
    assert decoded.table.column("price").to_pylist() == [r["price"] for r in kept]
