"""The Iceberg schema of each dataset, derived from its Avro schema (writers only: importing pyiceberg is slow)."""

from __future__ import annotations

from pyiceberg.schema import Schema
from pyiceberg.types import (
    DateType,
    DecimalType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from k2.schemas import LINEAGE_FIELDS, Dataset, FieldInfo, avro_schema, field_infos

_LINEAGE_TYPES: dict[str, IcebergType] = {"string": StringType(), "int32": IntegerType(), "int64": LongType()}


def _iceberg_type(info: FieldInfo) -> IcebergType:
    match info.kind:
        case "string" | "enum":
            return StringType()
        case "long":
            return LongType()
        case "int":
            return IntegerType()
        case "timestamp":
            return TimestamptzType()
        case "date":
            return DateType()
        case "decimal":
            return DecimalType(info.precision, info.scale)
    raise ValueError(f"no Iceberg type for {info}")


def iceberg_schema(dataset: Dataset, version: int | None = None) -> Schema:
    """The Iceberg schema derived from the dataset's Avro schema (field ids in declaration order), then the
    lake-only lineage columns (optional)."""
    fields = [
        NestedField(i, info.name, _iceberg_type(info), required=not info.nullable, doc=info.doc or None)
        for i, info in enumerate(field_infos(avro_schema(dataset, version)), start=1)
    ]
    fields += [
        NestedField(len(fields) + i, name, _LINEAGE_TYPES[str(arrow_type)], required=False, doc=doc)
        for i, (name, arrow_type, doc) in enumerate(LINEAGE_FIELDS, start=1)
    ]
    return Schema(*fields)
