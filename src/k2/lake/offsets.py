"""The Kafka offsets a table has landed, recorded in the summary of the Iceberg snapshot that landed them.

See docs/decisions/0004: the lake, not the consumer group, is the record of what was consumed. The newest
offsets are found by walking back from the current snapshot (compactions and other writers record none), so a
rolled-back table resumes from the offsets of the state it was rolled back to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from k2.lake.snapshots import ancestry, property_of

if TYPE_CHECKING:
    from pyiceberg.table.metadata import TableMetadata

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


def landed_offsets(metadata: TableMetadata, topic: str) -> LandedOffsets | None:
    """The newest offsets recorded for `topic` in the current snapshot's ancestry (None if none ever landed).
    Normally the current snapshot has them, so this looks at one snapshot however many the table has."""
    for snapshot in ancestry(metadata):
        text = property_of(snapshot, OFFSETS_PROPERTY)
        if text:
            offsets = LandedOffsets.from_json(text)
            if offsets.topic == topic:
                return offsets
    return None


def merged(previous: LandedOffsets | None, offsets: LandedOffsets) -> LandedOffsets:
    """`offsets` over the newest recorded ones: consumers owning other partitions keep theirs, and a partition's
    offset only moves forward (the maximum wins)."""
    if previous is None or previous.cluster_id != offsets.cluster_id:
        return offsets
    combined = dict(previous.next_offsets)
    for partition, offset in offsets.next_offsets.items():
        combined[partition] = max(offset, combined.get(partition, offset))
    return LandedOffsets(offsets.cluster_id, offsets.topic, combined)
