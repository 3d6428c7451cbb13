"""Writing batches to Iceberg: data files first, then one commit that adds them with the Kafka offsets (and any
other properties) they carry, retried against concurrent writers with the offsets re-merged on every attempt."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.io.pyarrow import bin_pack_arrow_table, write_file
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import Table, TableProperties, WriteTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.utils.properties import property_as_int

from k2.lake.offsets import OFFSETS_PROPERTY, LandedOffsets, landed_offsets, merged
from k2.retry import retry
from k2.schemas import SORT_COLUMNS


@dataclass(frozen=True)
class Committed:
    snapshot_id: int
    attempts: int  # > 1: another writer committed first, and the commit was retried on the fresh table


def conform(batch: pa.Table, table: Table) -> pa.Table:
    """Columns in the table's order and types (an optional field the batch lacks is null). A dictionary-encoded
    column stays encoded (its values cast to the field's type) until `write_data_files` has sorted it."""
    target = pa.schema([_kept_encoded(f, batch) for f in table.schema().as_arrow()])
    columns = [
        batch.column(f.name) if f.name in batch.column_names else pa.nulls(batch.num_rows, f.type)  # optional field
        for f in target
    ]
    return pa.Table.from_arrays(columns, names=target.names).cast(target)


def _kept_encoded(field: pa.Field, batch: pa.Table) -> pa.Field:
    if field.name not in batch.column_names or not pa.types.is_dictionary(batch.schema.field(field.name).type):
        return field
    return field.with_type(pa.dictionary(batch.schema.field(field.name).type.index_type, field.type))


def _decoded(part: pa.Table) -> pa.Table:
    """Dictionary-encoded columns as plain ones: a file's Arrow schema says how its columns were held, and every
    file of a table must read back with the same types."""
    for index, field in enumerate(part.schema):
        if pa.types.is_dictionary(field.type):
            part = part.set_column(index, field.with_type(field.type.value_type), part.column(index).cast(
                field.type.value_type))
    return part


def split_by_partition(rows: pa.Table, metadata: TableMetadata) -> list[tuple[PartitionKey | None, pa.Table]]:
    """Rows sorted by (partition, symbol, ts, sequence) and cut into one zero-copy slice per partition.

    One sort replaces pyiceberg's filter pass per partition (16+ full scans of every commit). Within each slice,
    rows are in the table's sort order.
    """
    sort_keys = [(c, "ascending") for c in SORT_COLUMNS if c in rows.column_names]
    spec, schema = metadata.spec(), metadata.schema()
    if spec.is_unpartitioned() or not rows.num_rows:
        return [(None, rows.sort_by(sort_keys) if sort_keys else rows)]
    names = [f"_k2_partition_{i}" for i in range(len(spec.fields))]
    keyed = rows
    for name, field in zip(names, spec.fields, strict=True):
        source = schema.find_field(field.source_id)
        values = field.transform.pyarrow_transform(source.field_type)(rows.column(source.name))
        keyed = keyed.append_column(name, values)
    keyed = keyed.sort_by([(n, "ascending") for n in names] + sort_keys)
    starts = _run_starts([keyed.column(n) for n in names])
    ends = [*starts[1:], keyed.num_rows]
    sorted_rows = keyed.drop_columns(names)
    def key_at(row: int) -> PartitionKey:
        values = [PartitionFieldValue(f, keyed.column(n)[row].as_py()) for f, n in zip(spec.fields, names, strict=True)]
        return PartitionKey(values, spec, schema)

    return [(key_at(start), sorted_rows.slice(start, end - start)) for start, end in zip(starts, ends, strict=True)]


def _run_starts(columns: list[pa.ChunkedArray]) -> list[int]:
    """Row numbers where any of the (sorted, integer) key columns changes value; null is a value of its own."""
    change = np.zeros(len(columns[0]), dtype=bool)
    change[0] = True
    for column in columns:
        values = column.combine_chunks()
        valid = values.is_valid().to_numpy(zero_copy_only=False)
        numbers = pc.fill_null(values, 0).to_numpy(zero_copy_only=False)  # Iceberg's day/bucket/... are ints
        change[1:] |= (numbers[1:] != numbers[:-1]) | (valid[1:] != valid[:-1])
    return np.flatnonzero(change).tolist()


def write_data_files(table: Table, batch: pa.Table) -> list[DataFile]:
    """Parquet files of `batch`, one or more per partition, sorted (written in parallel by pyiceberg); not yet
    committed, so invisible to readers until `commit_files`."""
    metadata = table.metadata
    parts = [(key, _decoded(part)) for key, part in split_by_partition(conform(batch, table), metadata)]
    target = property_as_int(metadata.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                             TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)
    assert target is not None
    write_uuid, task_ids = uuid.uuid4(), itertools.count()
    tasks = (
        WriteTask(write_uuid, next(task_ids), metadata.schema(), batches, partition_key=key)
        for key, part in parts
        for batches in bin_pack_arrow_table(part, target)
    )
    return list(write_file(table.io, metadata, tasks))


def commit_files(
    table: Table, data_files: list[DataFile], offsets: LandedOffsets | None = None,
    properties: dict[str, str] | None = None, give_up_after: float = 120.0,
) -> Committed:
    """Add `data_files` (may be none: a snapshot that only records offsets) in one Iceberg commit whose summary
    holds `properties` and the offsets merged with the newest recorded ones.

    Another writer committing first (a second consumer of the group, compaction) makes the commit fail; the
    table is refreshed, the offsets re-merged with the winner's, and the same files committed again.
    """
    def attempt(_: int) -> None:
        summary = dict(properties or {})
        if offsets is not None:
            summary[OFFSETS_PROPERTY] = merged(landed_offsets(table.metadata, offsets.topic), offsets).to_json()
        with table.transaction() as transaction, transaction.update_snapshot(
            snapshot_properties=summary
        ).fast_append() as append_files:
            for data_file in data_files:
                append_files.append_data_file(data_file)

    return commit_with_retry(table, attempt, give_up_after)


def commit_with_retry(table: Table, attempt: Callable[[int], None], give_up_after: float) -> Committed:
    """Run `attempt(n)` (one Iceberg commit; n counts the attempts) until it does not lose the race to another
    writer: after a CommitFailedException the table is refreshed and `attempt` runs again on the new state."""
    attempts = 0

    def once() -> int:
        nonlocal attempts
        attempts += 1
        attempt(attempts)
        snapshot = table.current_snapshot()
        assert snapshot is not None
        return snapshot.snapshot_id

    def refresh(_: BaseException) -> None:
        table.refresh()

    snapshot_id = retry(once, CommitFailedException, give_up_after, before_retry=refresh)
    return Committed(snapshot_id, attempts)


def append(table: Table, batch: pa.Table, offsets: LandedOffsets | None = None) -> int:
    """Write and commit `batch` (plus merged landed offsets); returns the new snapshot id."""
    table.refresh()
    return commit_files(table, write_data_files(table, batch), offsets).snapshot_id
