"""Consumer: Kafka → decoded Arrow batches → Iceberg, exactly once per record.

The next offset of every partition is written into the Iceberg snapshot summary of the same commit that writes
the rows. On (re)assignment the consumer seeks to those offsets, so a crash between the Iceberg commit and the
Kafka commit neither loses nor duplicates rows. The Kafka group commit that follows is for visibility (lag tools).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from pyiceberg.table import Table

from k2.ingest.avro_codec import DecodeError, decode_bodies, split_headers
from k2.ingest.kafka import cluster_id, consumer_config, topic_for
from k2.ingest.registry import SchemaNotFoundError, SchemaRegistry
from k2.ingest.sequencing import Checked, SequenceTracker
from k2.lake import writer
from k2.lake.quality import append_quality
from k2.lake.sequences import landed_ranges
from k2.schemas import Dataset
from k2.settings import Settings

log = logging.getLogger(__name__)

_CONSUME_BATCH = 10_000


@dataclass
class IngestReport:
    messages: int = 0
    rows_landed: int = 0
    commits: int = 0
    undecodable: int = 0
    duplicates: int = 0
    late: int = 0
    snapshot_id: int | None = None
    last_commit_at: float | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    values: list[bytes] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)

    def add(self, message: Message) -> None:
        self.values.append(message.value() or b"")
        self.next_offsets[message.partition() or 0] = (message.offset() or 0) + 1


def decode_values(values: list[bytes], registry: SchemaRegistry) -> tuple[pa.Table | None, list[str]]:
    """Decode Confluent-framed Avro records, one native block per writer schema; returns rows and problems."""
    framed = split_headers(values)
    problems = [f"record {i}: no Confluent wire-format header" for i in np.flatnonzero(framed.bad_header)]
    starts = np.concatenate(([0], framed.body_ends[:-1]))
    frames: list[pl.DataFrame] = []
    for schema_id in np.unique(framed.schema_ids[~framed.bad_header]):
        rows = np.flatnonzero(framed.schema_ids == schema_id)
        try:
            schema = registry.schema(int(schema_id))
        except SchemaNotFoundError as exc:
            problems.append(f"{len(rows)} records: {exc}")
            continue
        if len(rows) == int((~framed.bad_header).sum()):
            bodies = framed.bodies.tobytes()
        else:
            bodies = b"".join(framed.bodies[starts[r] : framed.body_ends[r]].tobytes() for r in rows)
        try:
            frames.append(decode_bodies(schema, bodies, len(rows)))
        except DecodeError as exc:
            problems.append(f"{len(rows)} records with schema id {schema_id}: {exc}")
    if not frames:
        return None, problems
    frame = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    frame = frame.with_columns(pl.col(pl.Categorical).cast(pl.String))
    return frame.to_arrow(), problems


class LakeIngestor:
    """Consumes one dataset's topic into its Iceberg table."""

    def __init__(
        self, settings: Settings, bootstrap: str, dataset: Dataset, table: Table, registry: SchemaRegistry,
        quality_table: Table | None = None,
    ) -> None:
        self._settings = settings
        self._dataset = dataset
        self._table = table
        self._registry = registry
        self._topic = topic_for(settings, dataset)
        self._cluster = cluster_id(bootstrap)
        self._consumer = Consumer(consumer_config(settings, bootstrap))
        self.report = IngestReport()
        self._tracker = SequenceTracker(lambda keys: landed_ranges(self._table, keys))
        self._quality_table = quality_table
        self._assigned_at: float | None = None

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._table.refresh()
        self._tracker.reset()  # symbols may have moved between consumers: re-derive their state from the lake
        landed = writer.landed_offsets(self._table, self._topic)
        if landed is not None and landed.cluster_id != self._cluster:
            log.info(  # normal with the in-memory local broker, which is a new cluster after every start
                "offsets in the lake were recorded on Kafka cluster %s, now on %s: starting from the group offsets",
                landed.cluster_id, self._cluster,
            )
            landed = None
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
        for tp in partitions:
            if landed is not None and tp.partition in landed.next_offsets:
                tp.offset = landed.next_offsets[tp.partition]
            elif committed.get(tp.partition, -1) < 0:
                tp.offset = OFFSET_BEGINNING
            else:
                tp.offset = committed[tp.partition]
        consumer.assign(partitions)
        self._assigned_at = time.monotonic()

    def _land(self, pending: _Pending) -> None:
        if not pending.values:
            return
        batch, problems = decode_values(pending.values, self._registry)
        for problem in problems:
            log.error("%s: %s", self._topic, problem)
        self.report.errors.extend(problems[: max(0, 50 - len(self.report.errors))])
        decoded_rows = batch.num_rows if batch is not None else 0
        self.report.undecodable += len(pending.values) - decoded_rows
        if batch is not None and batch.num_rows:
            checked = self._tracker.check(batch)
            snapshot_id = None
            if checked.keep.num_rows:
                offsets = writer.LandedOffsets(self._cluster, self._topic, dict(pending.next_offsets))
                snapshot_id = self.report.snapshot_id = writer.append(self._table, checked.keep, offsets)
            self._tracker.commit(checked)
            self.report.rows_landed += checked.keep.num_rows
            self.report.duplicates += batch.num_rows - checked.keep.num_rows
            self.report.late += sum(q.late for q in checked.quality.values())
            self._record_quality(snapshot_id, checked)
        # with no new rows there is nothing to land: re-reading these records after a crash is harmless
        self._consumer.commit(
            offsets=[TopicPartition(self._topic, p, o) for p, o in pending.next_offsets.items()],
            asynchronous=False,
        )
        self.report.commits += 1
        self.report.last_commit_at = time.monotonic()

    def _record_quality(self, snapshot_id: int | None, checked: Checked) -> None:
        if self._quality_table is None:
            return
        try:
            append_quality(self._quality_table, self._dataset.value, snapshot_id, checked.quality)
        except Exception:  # counters are best effort; the data commit already succeeded
            log.exception("could not record data quality for snapshot %s", snapshot_id)

    def run(
        self,
        max_messages: int | None = None,
        idle_seconds: float | None = None,
        on_progress: Callable[[IngestReport], None] | None = None,
    ) -> IngestReport:
        """Consume until `max_messages` have been landed, or nothing arrived for `idle_seconds`."""
        idle_limit = self._settings.ingest_idle_seconds if idle_seconds is None else idle_seconds
        self._consumer.subscribe([self._topic], on_assign=self._on_assign)
        pending = _Pending()
        last_data = time.monotonic()
        assignment_limit = 10.0 + 2 * self._settings.session_timeout_ms / 1000
        gc.freeze()
        gc.disable()  # the consume loop allocates millions of small objects that are never cyclic
        try:
            while max_messages is None or self.report.messages < max_messages:
                want = _CONSUME_BATCH if max_messages is None else min(
                    _CONSUME_BATCH, max_messages - self.report.messages
                )
                messages = self._consumer.consume(want, timeout=0.2)
                for message in messages:
                    error = message.error()
                    if error is None:
                        pending.add(message)
                    elif error.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"Kafka error on {self._topic}: {error.str()}")
                got = sum(1 for m in messages if m.error() is None)
                self.report.messages += got
                now = time.monotonic()
                if got:
                    last_data = now
                caught_up = not got  # an empty poll: land what we have rather than let it wait
                if len(pending.values) >= self._settings.ingest_commit_rows or (
                    pending.values and (caught_up or now - pending.since >= self._settings.ingest_commit_seconds)
                ):
                    self._land(pending)
                    pending = _Pending()
                    if on_progress:
                        on_progress(self.report)
                if self._assigned_at is None:
                    if now - last_data > assignment_limit:
                        raise RuntimeError(
                            f"no partitions of {self._topic} were assigned within {assignment_limit:.0f}s "
                            f"(group {self._settings.consumer_group!r}: is another consumer holding them?)"
                        )
                    continue
                last_data = max(last_data, self._assigned_at)
                if not got and now - last_data >= idle_limit:
                    break
            self._land(pending)
            if on_progress:
                on_progress(self.report)
        finally:
            gc.enable()
            gc.unfreeze()
            self._consumer.close()
        return self.report
