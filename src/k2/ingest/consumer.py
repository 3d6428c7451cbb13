"""Consumer: Kafka → decoded Arrow batches → Iceberg, exactly once per record.

The next offset of every partition is written into the Iceberg snapshot summary of the same commit that writes
the rows. On (re)assignment the consumer seeks to those offsets, so a crash between the Iceberg commit and the
Kafka commit neither loses nor duplicates rows. The Kafka group commit that follows is for visibility (lag tools).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from pyiceberg.table import Table

from k2.ingest.decoding import decode_records
from k2.ingest.dlq import DeadLetter, DeadLetterWriter, now_iso
from k2.ingest.kafka import cluster_id, consumer_config, ingest_group, topic_for
from k2.ingest.registry import SchemaRegistry
from k2.ingest.sequencing import Checked, NaturalKeyDeduper, SequenceTracker
from k2.ingest.validation import validate
from k2.lake import writer
from k2.lake.quality import append_quality
from k2.lake.sequences import NATURAL_KEYS, landed_keys, landed_ranges
from k2.obs.metrics import (
    INGEST_COMMIT_SECONDS,
    INGEST_COMMITS,
    INGEST_MESSAGES,
    INGEST_ROWS,
    SEQUENCE_GAPS,
    SEQUENCE_MISSING,
)
from k2.schemas import Dataset
from k2.settings import Settings

log = logging.getLogger(__name__)



@dataclass
class IngestReport:
    messages: int = 0
    rows_landed: int = 0
    commits: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    late: int = 0
    snapshot_id: int | None = None
    first_message_at: float | None = None
    last_commit_at: float | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    messages: list[Message] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)

    def add(self, message: Message) -> None:
        self.messages.append(message)
        self.next_offsets[message.partition() or 0] = (message.offset() or 0) + 1


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
        self._group = ingest_group(settings, dataset)
        self._consumer = Consumer(consumer_config(settings, bootstrap, self._group, f".{dataset.value}"))
        self._dlq = DeadLetterWriter(settings, bootstrap)
        self.report = IngestReport()
        self._tracker = self._make_tracker()
        self._quality_table = quality_table
        self._assigned_at: float | None = None
        self._unassigned_since = time.monotonic()
        self._pending = _Pending()

    def _make_tracker(self) -> SequenceTracker | NaturalKeyDeduper:
        if "sequence" in self._table.schema().column_names:
            return SequenceTracker(lambda keys: landed_ranges(self._table, keys))
        columns = NATURAL_KEYS[self._dataset]
        return NaturalKeyDeduper(columns, lambda cols: landed_keys(self._table, cols))

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
        log.debug("%s: lake offsets %s, group offsets %s", self._topic, landed, committed)
        for tp in partitions:
            if landed is not None and tp.partition in landed.next_offsets:
                tp.offset = landed.next_offsets[tp.partition]
            elif committed.get(tp.partition, -1) < 0:
                tp.offset = OFFSET_BEGINNING
            else:
                tp.offset = committed[tp.partition]
        consumer.assign(partitions)
        self._assigned_at = time.monotonic()
        log.info("%s: assigned %s", self._topic, {tp.partition: tp.offset for tp in partitions})

    def _land_pending(self) -> None:
        pending, self._pending = self._pending, _Pending()
        self._land(pending)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # land what was read from these partitions before another consumer takes them over: otherwise both
        # would land the same records (the new owner resumes from the lake's offsets)
        log.info("%s: revoking %s; landing %d pending records first", self._topic,
                 [tp.partition for tp in partitions], len(self._pending.messages))
        self._land_pending()
        # until the next assignment this consumer owns nothing: that wait (a rebalance, ~session timeout with
        # static members on some brokers) must not count as "idle", or it could exit with partitions unread
        self._assigned_at = None
        self._unassigned_since = time.monotonic()

    def _land(self, pending: _Pending) -> None:
        if not pending.messages:
            return
        started = time.perf_counter()
        decoded = decode_records([m.value() or b"" for m in pending.messages], self._registry, self._dataset)
        failures = decoded.failures
        batch = decoded.table
        if batch is not None:
            skew = dt.timedelta(seconds=self._settings.max_future_skew_seconds)
            batch, invalid = validate(self._dataset, batch, skew)
            failures = failures + invalid
        self._dead_letters(pending.messages, failures)  # acknowledged before anything is committed
        if batch is not None and batch.num_rows:
            checked = self._tracker.check(batch)
            snapshot_id = None
            if checked.keep.num_rows:
                offsets = writer.LandedOffsets(self._cluster, self._topic, dict(pending.next_offsets))
                snapshot_id = self.report.snapshot_id = writer.append(self._table, checked.keep, offsets)
                log.debug("%s: landed %d rows, offsets %s", self._topic, checked.keep.num_rows, pending.next_offsets)
            self._tracker.commit(checked)
            self.report.rows_landed += checked.keep.num_rows
            self.report.duplicates += batch.num_rows - checked.keep.num_rows
            self.report.late += sum(q.late for q in checked.quality.values())
            self._record_quality(snapshot_id, checked)
            self._export(checked, batch.num_rows - checked.keep.num_rows)
        # with no new rows there is nothing to land: re-reading these records after a crash is harmless
        self._commit_group_offsets(pending.next_offsets)
        self.report.commits += 1
        self.report.last_commit_at = time.monotonic()
        dataset = self._dataset.value
        INGEST_COMMITS.labels(dataset).inc()
        INGEST_COMMIT_SECONDS.labels(dataset).observe(time.perf_counter() - started)

    def _commit_group_offsets(self, next_offsets: dict[int, int]) -> None:
        """Mirror the landed offsets to the Kafka group for lag tooling. The lake is the record: a failure here
        (a rebalance bumped the generation) loses nothing, the next owner resumes from the lake."""
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self._topic, p, o) for p, o in next_offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            log.warning("%s: group offset commit skipped (%s); the lake holds the landed offsets", self._topic, exc)

    def _dead_letters(self, messages: list[Message], failures: list[tuple[int, str]]) -> None:
        if not failures:
            return
        failed_at = now_iso()
        letters = [
            DeadLetter(self._topic, messages[i].partition() or 0, messages[i].offset() or 0, reason,
                       messages[i].key(), messages[i].value() or b"", failed_at)
            for i, reason in failures
        ]
        self._dlq.send(letters)
        self.report.dead_lettered += len(letters)
        INGEST_ROWS.labels(self._dataset.value, "dead_letter").inc(len(letters))
        room = max(0, 20 - len(self.report.errors))
        self.report.errors.extend(
            f"partition {x.source_partition} offset {x.source_offset}: {x.error}" for x in letters[:room]
        )
        log.warning("%s: %d record(s) sent to dead-letter topic %s, e.g. %s", self._topic, len(letters),
                    self._settings.topic_dlq, letters[0].error)

    def _export(self, checked: Checked, duplicates: int) -> None:
        dataset = self._dataset.value
        INGEST_ROWS.labels(dataset, "landed").inc(checked.keep.num_rows)
        INGEST_ROWS.labels(dataset, "duplicate").inc(duplicates)
        INGEST_ROWS.labels(dataset, "late").inc(sum(q.late for q in checked.quality.values()))
        for (exchange, symbol, _), quality in checked.quality.items():
            SEQUENCE_GAPS.labels(dataset, exchange, symbol).set(quality.gaps)
            SEQUENCE_MISSING.labels(dataset, exchange, symbol).set(quality.missing)

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
        self._consumer.subscribe([self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._pending = _Pending()
        last_data = self._unassigned_since = time.monotonic()
        assignment_limit = 10.0 + 2 * self._settings.session_timeout_ms / 1000
        gc.freeze()
        gc.disable()  # the consume loop allocates millions of small objects that are never cyclic
        try:
            while max_messages is None or self.report.messages < max_messages:
                batch = self._settings.consume_batch
                want = batch if max_messages is None else min(batch, max_messages - self.report.messages)
                messages = self._consumer.consume(want, timeout=0.2)
                got = 0
                for message in messages:
                    error = message.error()
                    if error is None:
                        self._pending.add(message)
                        got += 1
                    elif error.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"Kafka error on {self._topic}: {error.str()}")
                self.report.messages += got
                INGEST_MESSAGES.labels(self._topic).inc(got)
                now = time.monotonic()
                if got:
                    last_data = now
                    if self.report.first_message_at is None:
                        self.report.first_message_at = now
                caught_up = not got  # an empty poll: land what we have rather than let it wait
                pending = self._pending
                if len(pending.messages) >= self._settings.ingest_commit_rows or (
                    pending.messages and (caught_up or now - pending.since >= self._settings.ingest_commit_seconds)
                ):
                    self._land_pending()
                    if on_progress:
                        on_progress(self.report)
                if self._assigned_at is None:
                    if now - self._unassigned_since > assignment_limit:
                        raise RuntimeError(
                            f"no partitions of {self._topic} were assigned within {assignment_limit:.0f}s "
                            f"(group {self._group!r}: is another consumer holding them?)"
                        )
                    continue
                last_data = max(last_data, self._assigned_at)
                if not got and now - last_data >= idle_limit:
                    break
            self._land_pending()
            if on_progress:
                on_progress(self.report)
        finally:
            gc.enable()
            gc.unfreeze()
            self._consumer.close()
            self._dlq.close()
        return self.report
