"""When the consumer lands what it holds: on size, on age, or once caught up with rows that waited a moment."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import Message

from k2.settings import Settings


@dataclass
class PendingBatch:
    """Records consumed since the last landing, with each one's partition and offset (lineage columns) and the next
    offset to read per partition."""

    messages: list[Message] = field(default_factory=list)
    partitions: list[int | None] = field(default_factory=list)  # None only on error events, never added
    offsets: list[int | None] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)  # when the first of these messages arrived

    def add(self, messages: list[Message]) -> None:
        """Take the records of one `consume()` call (no error events among them)."""
        if not self.messages:
            self.since = time.monotonic()  # the oldest row's wait starts now
        self.messages.extend(messages)
        # map() over the C accessors: no Python bytecode per record on the hot path; the last offset per partition wins
        partitions = list(map(Message.partition, messages))
        offsets = list(map(Message.offset, messages))
        self.partitions.extend(partitions)
        self.offsets.extend(offsets)
        last = dict(zip(partitions, offsets, strict=True))
        for partition, offset in last.items():
            self.next_offsets[partition or 0] = (offset or 0) + 1

    def due(self, settings: Settings, now: float, caught_up: bool) -> bool:
        """Land on size, on age, or once caught up (an empty poll) with rows that have waited a moment."""
        if not self.messages:
            return False
        waited = now - self.since
        return (
            len(self.messages) >= settings.ingest_commit_rows
            or waited >= settings.ingest_commit_seconds
            or (caught_up and waited >= settings.ingest_commit_min_seconds)
        )
