"""Avro schemas are the single source of truth: the Iceberg (schemas/iceberg.py) and Arrow schemas are derived
from them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import pyarrow as pa

AvroSchema = dict[str, Any]

# Rows are sorted this way before every write, and compaction keeps it: one symbol's ticks are contiguous.
SORT_COLUMNS = ("symbol", "ts", "sequence")

# Lake-only columns of every table, filled by the ingest, not by producers (docs/decisions/0023-lineage.md): the
# producer batch a row came in (JSON naming its load and source), the Kafka record it was read from, and the
# landing batch (the data snapshot's `k2.batch` property). The query API leaves them out of tick results.
LINEAGE_FIELDS = (
    ("source_batch", pa.string(), "The producer batch: JSON with its load id, batch number and source."),
    ("kafka_partition", pa.int32(), "The Kafka partition the row was read from."),
    ("kafka_offset", pa.int64(), "The Kafka offset the row was read from."),
    ("landed_batch", pa.string(), "The ingest batch that landed the row (its data snapshot's k2.batch)."),
)
# every lineage column: the producer's `source_line` (an Avro field) and the lake-only ones; tick answers and the
# query engine's hot tier leave them out
LINEAGE_COLUMNS = ("source_line", *(name for name, _, _ in LINEAGE_FIELDS))


class Dataset(StrEnum):
    """The kinds of record K2 lands; each has its own topic, Avro subject and Iceberg table."""

    TRADES = "trades"
    QUOTES = "quotes"
    REFERENCE = "reference"
    CORPORATE_ACTIONS = "corporate_actions"


# Every version a dataset has had, oldest first; the last one is what K2 writes. Each version may only add
# optional fields with defaults (backward compatible: readers of the new version read old records).
_AVSC_FILES = {
    Dataset.TRADES: ("trade_v1.avsc", "trade_v2.avsc", "trade_v3.avsc"),
    Dataset.QUOTES: ("quote_v1.avsc", "quote_v2.avsc"),
    Dataset.REFERENCE: ("reference_v1.avsc", "reference_v2.avsc", "reference_v3.avsc"),
    Dataset.CORPORATE_ACTIONS: ("corporate_action_v1.avsc", "corporate_action_v2.avsc"),
}


@dataclass(frozen=True)
class FieldInfo:
    """What the codec and the lake need to know about one Avro field."""

    name: str
    kind: str  # string | long | int | timestamp | date | decimal | enum
    nullable: bool
    symbols: tuple[str, ...] = ()
    precision: int = 0
    scale: int = 0
    fixed_size: int = 0
    doc: str = ""
    max_length: int | None = None  # strings: the schema's "k2.maxLength" in UTF-8 bytes, enforced on every row


@cache
def avro_schema(dataset: Dataset, version: int | None = None) -> AvroSchema:
    """The Avro schema of a dataset: the current one, or an older `version` (1-based)."""
    files = _AVSC_FILES[dataset]
    name = files[-1] if version is None else files[version - 1]
    loaded: AvroSchema = json.loads(resources.files(__package__).joinpath(name).read_text())
    return loaded


def schema_versions(dataset: Dataset) -> int:
    return len(_AVSC_FILES[dataset])


def avro_schema_json(dataset: Dataset) -> str:
    return json.dumps(avro_schema(dataset), separators=(",", ":"), sort_keys=True)


def field_infos(schema: AvroSchema) -> list[FieldInfo]:
    """Flatten a record schema of primitive / logical / enum / nullable fields into FieldInfo."""
    named: dict[str, AvroSchema] = {}
    return [_field_info(field, named, schema.get("namespace", "")) for field in schema["fields"]]


def _field_info(field: AvroSchema, named: dict[str, AvroSchema], namespace: str) -> FieldInfo:
    avro_type = field["type"]
    nullable = False
    if isinstance(avro_type, list):
        branches = [branch for branch in avro_type if branch != "null"]
        if len(branches) != 1 or avro_type[0] != "null":
            raise ValueError(f"field {field['name']!r}: only ['null', T] unions are supported")
        nullable, avro_type = True, branches[0]
    avro_type = _resolve(avro_type, named, namespace)
    doc = field.get("doc", "")
    name = field["name"]
    if isinstance(avro_type, str):
        if avro_type not in ("string", "long", "int"):
            raise ValueError(f"field {name!r}: unsupported Avro type {avro_type!r}")
        return FieldInfo(name, avro_type, nullable, doc=doc, max_length=field.get("k2.maxLength"))
    logical = avro_type.get("logicalType")
    if logical == "timestamp-micros":
        return FieldInfo(name, "timestamp", nullable, doc=doc)
    if logical == "date":
        return FieldInfo(name, "date", nullable, doc=doc)
    if logical == "decimal" and avro_type["type"] == "fixed":
        return FieldInfo(
            name, "decimal", nullable, precision=avro_type["precision"], scale=avro_type["scale"],
            fixed_size=avro_type["size"], doc=doc,
        )
    if avro_type["type"] == "enum":
        return FieldInfo(name, "enum", nullable, symbols=tuple(avro_type["symbols"]), doc=doc)
    raise ValueError(f"field {name!r}: unsupported Avro type {avro_type!r}")


@cache
def max_lengths(dataset: Dataset) -> dict[str, int]:
    """Bounded string fields of the dataset's current schema → their maximum length in UTF-8 bytes."""
    return {f.name: f.max_length for f in field_infos(avro_schema(dataset)) if f.max_length is not None}


def _resolve(avro_type: Any, named: dict[str, AvroSchema], namespace: str) -> Any:
    if isinstance(avro_type, dict) and "name" in avro_type:
        named[avro_type["name"]] = avro_type
        named[f"{namespace}.{avro_type['name']}"] = avro_type
    if isinstance(avro_type, str) and avro_type in named:
        return named[avro_type]
    return avro_type


def _arrow_type(info: FieldInfo) -> pa.DataType:
    match info.kind:
        case "string" | "enum":
            return pa.large_string()
        case "long":
            return pa.int64()
        case "int":
            return pa.int32()
        case "timestamp":
            return pa.timestamp("us", tz="UTC")
        case "date":
            return pa.date32()
        case "decimal":
            return pa.decimal128(info.precision, info.scale)
    raise ValueError(f"no Arrow type for {info}")


@cache
def arrow_schema(dataset: Dataset, lineage: bool = False) -> pa.Schema:
    """The Arrow schema rows of a dataset have on their way into and out of the lake: the types, nullability and
    field ids (`PARQUET:field_id`, declaration order) the Iceberg schema gives, without importing pyiceberg.
    Without `lineage`, the record's fields as queries answer them (no `source_line`)."""
    fields = []
    for field_id, info in enumerate(field_infos(avro_schema(dataset)), start=1):
        if not lineage and info.name in LINEAGE_COLUMNS:
            continue
        metadata = ({"doc": info.doc} if info.doc else {}) | {"PARQUET:field_id": str(field_id)}
        fields.append(pa.field(info.name, _arrow_type(info), nullable=info.nullable, metadata=metadata))
    return pa.schema(fields)

