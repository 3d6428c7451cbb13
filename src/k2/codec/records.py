"""Decoding a batch of Confluent-framed records into one Arrow table, isolating every record that does not decode.

Per writer schema id: the vectorised decoder (k2.codec.decoder) flags each malformed record with the reason, so a
bad record costs only itself. Schemas with field kinds it does not handle take the general path (k2.codec.container).
Schemas come from an injected lookup (the registry), so this module does no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from k2.codec.container import decode_bodies, decode_each
from k2.codec.decoder import decode_columns
from k2.codec.framing import WireRecords, split_headers
from k2.errors import DecodeError, SchemaNotFoundError, UnsupportedSchemaError
from k2.schemas import AvroSchema, Dataset, arrow_schema, field_infos

SchemaLookup = Callable[[int], AvroSchema]  # raises SchemaNotFoundError for an unknown id

MESSAGE_INDEX = "_msg"  # column carrying each row's index in the consumed batch


@dataclass
class Decoded:
    table: pa.Table | None  # rows in the dataset's Arrow schema + MESSAGE_INDEX
    failures: list[tuple[int, str]] = field(default_factory=list)  # (message index, reason)


def _missing_fields(columns: list[str], dataset: Dataset) -> list[str]:
    return [f.name for f in arrow_schema(dataset) if not f.nullable and f.name not in columns]


def _from_polars(frame: pl.DataFrame) -> pa.Table:
    return frame.with_columns(pl.col(pl.Categorical).cast(pl.String)).to_arrow()


def _to_dataset(table: pa.Table, dataset: Dataset) -> pa.Table:
    """Columns in the dataset's Arrow schema (an older writer's missing optional field reads as null)."""
    target = arrow_schema(dataset, lineage=True)
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in target
    ]
    return pa.Table.from_arrays([*columns, table.column(MESSAGE_INDEX)], names=[*target.names, MESSAGE_INDEX])


def _decode_vectorised(
    schema: AvroSchema, records: WireRecords, indices: npt.NDArray[np.int64]
) -> tuple[list[pa.Table], list[tuple[int, str]]]:
    """The fast path; raises UnsupportedSchemaError when the general decoder must take the batch."""
    starts, ends = records.body_starts[indices], records.body_ends[indices]
    try:
        infos = field_infos(schema)
    except ValueError as exc:  # e.g. a float field or a wider union, from another writer
        raise UnsupportedSchemaError(str(exc)) from exc
    columns = decode_columns(infos, records.data, starts, ends)
    table = columns.table.append_column(MESSAGE_INDEX, pa.array(indices))
    if not columns.bad.any():
        return [table], []
    failures = [(int(indices[position]), f"Avro body does not decode with schema {schema.get('name')}: {reason}")
                for position, reason in columns.failures()]
    return [table.filter(pa.array(~columns.bad))], failures


def _decode_general(
    schema: AvroSchema, records: WireRecords, indices: npt.NDArray[np.int64]
) -> tuple[list[pa.Table], list[tuple[int, str]]]:
    """Any schema: one native block decode by polars, or record by record if the block fails."""
    try:
        frame = decode_bodies(schema, records.bodies(indices), len(indices))
        return [_from_polars(frame.with_columns(pl.Series(MESSAGE_INDEX, indices)))], []
    except DecodeError:  # rare: isolate the bad records one by one
        good, kept, failures = decode_each(schema, records.body_list(indices), indices)
        if good is None:
            return [], failures
        return [_from_polars(good.with_columns(pl.Series(MESSAGE_INDEX, kept)))], failures


def decode_records(values: list[bytes], lookup: SchemaLookup, dataset: Dataset) -> Decoded:
    """Decode every value; rows keep their position in `values` in the MESSAGE_INDEX column."""
    records = split_headers(values)
    failures = [(int(i), "no Confluent wire-format header (magic byte 0 + schema id)")
                for i in np.flatnonzero(records.bad_header)]
    tables: list[pa.Table] = []
    for schema_id in np.unique(records.schema_ids[~records.bad_header]):
        indices = np.flatnonzero(records.schema_ids == schema_id)
        try:
            schema = lookup(int(schema_id))
        except SchemaNotFoundError as exc:
            failures.extend((int(i), str(exc)) for i in indices)
            continue
        try:
            decoded, bad = _decode_vectorised(schema, records, indices)
        except UnsupportedSchemaError:
            decoded, bad = _decode_general(schema, records, indices)
        failures.extend(bad)
        for table in decoded:
            missing = _missing_fields(table.column_names, dataset)
            if missing:
                reason = f"schema id {schema_id} lacks required {dataset} field(s) {missing}: wrong topic or schema?"
                failures.extend((int(i), reason) for i in table.column(MESSAGE_INDEX).to_pylist())
                continue
            tables.append(_to_dataset(table, dataset))
    if not tables:
        return Decoded(None, sorted(failures))
    table = pa.concat_tables(tables)
    if len(tables) > 1:  # keep arrival order: late-tick detection depends on it
        table = table.sort_by(MESSAGE_INDEX)
    return Decoded(table, sorted(failures))
