"""Appending batches to Iceberg with the Kafka offsets they came from, in the same atomic commit."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

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
    """Columns in the table's order and types, rows sorted by (symbol, ts, sequence)."""
    target = table.schema().as_arrow()
    columns = [
        batch.column(f.name) if f.name in batch.column_names else pa.nulls(batch.num_rows, f.type)  # optional field
        for f in target
    ]
    batch = pa.Table.from_arrays(columns, names=target.names).cast(target)
    present = [c for c in SORT_COLUMNS if c in batch.column_names]
    return batch.sort_by([(c, "ascending") for c in present]) if present else batch


def _merged_offsets(table: Table, offsets: LandedOffsets) -> dict[str, str]:
    previous = landed_offsets(table, offsets.topic)
    merged = dict(previous.next_offsets) if previous and previous.cluster_id == offsets.cluster_id else {}
    for partition, offset in offsets.next_offsets.items():  # offsets only move forward
        merged[partition] = max(offset, merged.get(partition, offset))
    return {OFFSETS_PROPERTY: LandedOffsets(offsets.cluster_id, offsets.topic, merged).to_json()}


def append(table: Table, batch: pa.Table, offsets: LandedOffsets | None = None, give_up_after: float = 120.0) -> int:
    """Append `batch` (plus merged landed offsets) in one Iceberg commit; returns the new snapshot id.

    Another writer committing first (a second consumer of the group, compaction) makes the commit fail; the
    table is refreshed, the offsets re-merged with the winner's, and the append retried.
    """
    rows = conform(batch, table)
    deadline = time.monotonic() + give_up_after
    attempt = 0
    while True:
        table.refresh()
        properties = _merged_offsets(table, offsets) if offsets is not None else {}
        try:
            table.append(rows, snapshot_properties=properties)
            break
        except CommitFailedException:
            if time.monotonic() > deadline:
                raise
            attempt += 1
            time.sleep(min(1.0, 0.02 * 2 ** min(attempt, 6)) * (0.5 + random.random()))  # jittered backoff
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id
