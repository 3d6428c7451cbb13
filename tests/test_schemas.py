"""One source of truth: the Iceberg schema is derived from the Avro schema."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.types import DecimalType, LongType, StringType, TimestamptzType

from k2.schemas import LINEAGE_COLUMNS, LINEAGE_FIELDS, Dataset, arrow_schema, avro_schema, field_infos
from k2.schemas.iceberg import iceberg_schema


@pytest.mark.parametrize("dataset", list(Dataset))
def test_iceberg_fields_follow_avro_fields(dataset: Dataset) -> None:
    """The Avro fields in their order, then the lake-only lineage columns (optional)."""
    infos = field_infos(avro_schema(dataset))
    schema = iceberg_schema(dataset)
    lake_only = [name for name, _, _ in LINEAGE_FIELDS]
    assert [f.name for f in schema.fields] == [i.name for i in infos] + lake_only
    assert [not f.required for f in schema.fields] == [i.nullable for i in infos] + [True] * len(lake_only)


def test_trade_types() -> None:
    schema = iceberg_schema(Dataset.TRADES)
    assert schema.find_field("ts").field_type == TimestamptzType()
    assert schema.find_field("price").field_type == DecimalType(18, 8)
    assert schema.find_field("size").field_type == LongType()
    assert schema.find_field("side").field_type == StringType()
    assert not schema.find_field("conditions").required


def test_quote_sides_are_optional() -> None:
    schema = iceberg_schema(Dataset.QUOTES)
    for name in ("bid_price", "ask_price", "bid_size", "ask_size"):
        assert not schema.find_field(name).required


@pytest.mark.parametrize("dataset", list(Dataset))
def test_arrow_schema_is_the_iceberg_schema_as_arrow(dataset: Dataset) -> None:
    """The read path derives Arrow schemas without pyiceberg; they must be what pyiceberg derives (types,
    nullability, docs and the PARQUET:field_id of every field), or reads and writes would disagree."""
    lake = iceberg_schema(dataset).as_arrow()
    lake_only = {name for name, _, _ in LINEAGE_FIELDS}
    record = pa.schema([f for f in lake if f.name not in lake_only])
    assert arrow_schema(dataset, lineage=True).equals(record, check_metadata=True)
    assert arrow_schema(dataset).names == [n for n in lake.names if n not in LINEAGE_COLUMNS]
