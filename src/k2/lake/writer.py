"""Appending batches to Iceberg with the Kafka offsets they came from, in the same atomic commit."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
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
    batch = batch.select([f.name for f in target]).cast(target)
    present = [c for c in SORT_COLUMNS if c in batch.column_names]
    return batch.sort_by([(c, "ascending") for c in present]) if present else batch


def append(table: Table, batch: pa.Table, offsets: LandedOffsets | None = None) -> int:
    """Append `batch` (plus merged landed offsets) in one Iceberg commit; returns the new snapshot id."""
    properties: dict[str, str] = {}
    if offsets is not None:
        table.refresh()
        previous = landed_offsets(table, offsets.topic)
        merged = dict(previous.next_offsets) if previous and previous.cluster_id == offsets.cluster_id else {}
        merged.update(offsets.next_offsets)
        properties[OFFSETS_PROPERTY] = LandedOffsets(offsets.cluster_id, offsets.topic, merged).to_json()
    table.append(conform(batch, table), snapshot_properties=properties)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id
