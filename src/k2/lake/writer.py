"""Appending batches to Iceberg with the Kafka offsets they came from, in the same atomic commit."""

from __future__ import annotations

import itertools
import json
import random
import time
import uuid
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

from k2.lake.layout import SORT_COLUMNS

OFFSETS_PROPERTY = "k2.kafka.offsets"


@dataclass(frozen=True)
class LandedOffsets:
    """The next Kafka offset to read per partition, as recorded in an Iceberg snapshot summary."""

    cluster_id: str
    topic: str
    next_offsets: dict[int, int]

    def to_json(self) -> str:
        return json.dumps(
            {"cluster": self.cluster_id, "topic": self.topic,
             "next": {str(p): o for p, o in sorted(self.next_offsets.items())}},
            separators=(",", ":"),
        )

    @staticmethod
    def from_json(text: str) -> LandedOffsets:
        data = json.loads(text)
        return LandedOffsets(data["cluster"], data["topic"], {int(p): int(o) for p, o in data["next"].items()})


def landed_offsets(table: Table, topic: str) -> LandedOffsets | None:
    """The newest offsets recorded for `topic` in the table's snapshots (compactions record none)."""
    snapshots = sorted(table.metadata.snapshots, key=lambda s: s.sequence_number or 0, reverse=True)
    for snapshot in snapshots:
        summary = snapshot.summary
        text = summary.additional_properties.get(OFFSETS_PROPERTY) if summary else None
        if text:
            offsets = LandedOffsets.from_json(text)
            if offsets.topic == topic:
                return offsets
    return None


def conform(batch: pa.Table, table: Table) -> pa.Table:
    """Columns in the table's order and types (an optional field the batch lacks is null)."""
    target = table.schema().as_arrow()
    columns = [
        batch.column(f.name) if f.name in batch.column_names else pa.nulls(batch.num_rows, f.type)  # optional field
        for f in target
    ]
    return pa.Table.from_arrays(columns, names=target.names).cast(target)


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


def _write_data_files(table: Table, parts: list[tuple[PartitionKey | None, pa.Table]]) -> list[DataFile]:
    """Parquet files for every partition slice (written in parallel by pyiceberg), not yet committed."""
    metadata = table.metadata
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


def _merged_offsets(table: Table, offsets: LandedOffsets) -> dict[str, str]:
    previous = landed_offsets(table, offsets.topic)
    merged = dict(previous.next_offsets) if previous and previous.cluster_id == offsets.cluster_id else {}
    for partition, offset in offsets.next_offsets.items():  # offsets only move forward
        merged[partition] = max(offset, merged.get(partition, offset))
    return {OFFSETS_PROPERTY: LandedOffsets(offsets.cluster_id, offsets.topic, merged).to_json()}


def append(table: Table, batch: pa.Table, offsets: LandedOffsets | None = None, give_up_after: float = 120.0) -> int:
    """Append `batch` (plus merged landed offsets) in one Iceberg commit; returns the new snapshot id.

    The data files are written once. Another writer committing first (a second consumer of the group, compaction)
    makes the commit fail; the table is refreshed, the offsets re-merged with the winner's, and the commit of the
    same files retried.
    """
    table.refresh()
    data_files = _write_data_files(table, split_by_partition(conform(batch, table), table.metadata))
    deadline = time.monotonic() + give_up_after
    attempt = 0
    while True:
        properties = _merged_offsets(table, offsets) if offsets is not None else {}
        try:
            with table.transaction() as transaction, transaction.update_snapshot(
                snapshot_properties=properties
            ).fast_append() as append_files:
                for data_file in data_files:
                    append_files.append_data_file(data_file)
            break
        except CommitFailedException:
            if time.monotonic() > deadline:
                raise
            attempt += 1
            time.sleep(min(1.0, 0.02 * 2 ** min(attempt, 6)) * (0.5 + random.random()))  # jittered backoff
            table.refresh()
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id
