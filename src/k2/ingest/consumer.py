"""Consumer: Kafka → decoded Arrow batches → Iceberg, exactly once per record.

The next offset of every partition is written into the Iceberg snapshot summary of the same commit that writes
the rows. On (re)assignment the consumer seeks to those offsets, so a crash between the Iceberg commit and the
Kafka commit neither loses nor duplicates rows. The Kafka group commit that follows is for visibility (lag tools).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from pyiceberg.table import Table

from k2.ingest.decoding import decode_records
from k2.ingest.dlq import DeadLetter, DeadLetterWriter, now_iso
from k2.ingest.kafka import cluster_id, consumer_config, ingest_group, topic_for
from k2.ingest.lander import Lander
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
    since: float = field(default_factory=time.monotonic)  # when the first of these messages arrived

    def add(self, messages: list[Message]) -> None:
        """Take the records of one `consume()` call (no error events among them)."""
        if not self.messages:
            self.since = time.monotonic()  # the oldest row's wait starts now
        self.messages.extend(messages)
        # map() over the C accessors: no Python bytecode per record on the hot path; the last offset per partition wins
        last = dict(zip(map(Message.partition, messages), map(Message.offset, messages), strict=True))
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


@dataclass
class _Prepared:
    """A batch decoded, validated and sequence-checked, ready to be appended with the offsets it came from."""

    checked: Checked | None
    received: int  # decoded rows, before dropping duplicates
    next_offsets: dict[int, int]
    started: float


class LakeIngestor:
    """Consumes one dataset's topic into its Iceberg table.

    Two stages overlap: this thread consumes and prepares batch N+1 while a lander thread appends batch N to
    Iceberg (k2.ingest.lander). Commits stay in order; a rebalance or the end of the run waits for the lander.
    """

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
        # the sequence tracker reads the lake from this thread while the lander commits through `table`
        self._reader = table.catalog.load_table(table.name())
        self._tracker = self._make_tracker()
        self._lander: Lander[_Prepared] | None = None
        self._failed = False
        self._to_mirror: dict[int, int] = {}  # landed offsets not yet committed to the Kafka group
        self._mirror_lock = threading.Lock()
        self._quality_table = quality_table
        self._assigned_at: float | None = None
        self._unassigned_since = time.monotonic()
        self._pending = _Pending()

    def _make_tracker(self) -> SequenceTracker | NaturalKeyDeduper:
        if "sequence" in self._table.schema().column_names:
            return SequenceTracker(lambda keys: landed_ranges(self._reader, keys))
        columns = NATURAL_KEYS[self._dataset]
        return NaturalKeyDeduper(columns, lambda cols: landed_keys(self._reader, cols))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drain()  # the lake must hold everything landed so far before offsets and state are read from it
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
        if self._failed:
            return
        pending, self._pending = self._pending, _Pending()
        prepared = self._prepare(pending)
        if prepared is None:
            return
        if self._lander is None:
            self._commit(prepared)
        else:
            self._lander.submit(prepared)

    def _drain(self) -> None:
        if self._lander is not None:
            self._lander.drain()
        self._mirror_group_offsets()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # land what was read from these partitions before another consumer takes them over: otherwise both
        # would land the same records (the new owner resumes from the lake's offsets)
        log.info("%s: revoking %s; landing %d pending records first", self._topic,
                 [tp.partition for tp in partitions], len(self._pending.messages))
        self._land_pending()
        self._drain()
        # until the next assignment this consumer owns nothing: that wait (a rebalance, ~session timeout with
        # static members on some brokers) must not count as "idle", or it could exit with partitions unread
        self._assigned_at = None
        self._unassigned_since = time.monotonic()

    def _prepare(self, pending: _Pending) -> _Prepared | None:
        """Decode, validate (invalid records → dead letters, acknowledged first) and sequence-check a batch."""
        if not pending.messages:
            return None
        started = time.perf_counter()
        raw = list(map(Message.value, pending.messages))
        # a tombstone (no value) is not a tick: as b"" it fails decoding and goes to the dead-letter topic
        values = [v or b"" for v in raw] if None in raw else cast(list[bytes], raw)
        decoded = decode_records(values, self._registry, self._dataset)
        failures = decoded.failures
        batch = decoded.table
        if batch is not None:
            skew = dt.timedelta(seconds=self._settings.max_future_skew_seconds)
            batch, invalid = validate(self._dataset, batch, skew)
            failures = failures + invalid
        self._dead_letters(pending.messages, failures)  # acknowledged before anything is committed
        checked = None
        if batch is not None and batch.num_rows:
            checked = self._tracker.check(batch)
            # adopted now, not after the Iceberg commit: the next batch is checked while this one lands. If the
            # commit fails the ingestor stops, and a restart derives the state from the lake again
            self._tracker.commit(checked)
            self.report.duplicates += batch.num_rows - checked.keep.num_rows
            self.report.late += sum(q.late for q in checked.quality.values())
        return _Prepared(checked, 0 if batch is None else batch.num_rows, dict(pending.next_offsets), started)

    def _commit(self, prepared: _Prepared) -> None:
        """Append a prepared batch with its offsets in one Iceberg commit (on the lander thread)."""
        checked = prepared.checked
        if checked is not None:
            snapshot_id = None
            if checked.keep.num_rows:
                offsets = writer.LandedOffsets(self._cluster, self._topic, prepared.next_offsets)
                snapshot_id = self.report.snapshot_id = writer.append(self._table, checked.keep, offsets)
                log.debug("%s: landed %d rows, offsets %s", self._topic, checked.keep.num_rows, offsets.next_offsets)
            self.report.rows_landed += checked.keep.num_rows
            self._record_quality(snapshot_id, checked)
            self._export(checked, prepared.received - checked.keep.num_rows)
        # with no new rows there is nothing to land: re-reading these records after a crash is harmless
        with self._mirror_lock:  # the consumer thread mirrors them to the group
            self._to_mirror.update(prepared.next_offsets)
        self.report.commits += 1
        self.report.last_commit_at = time.monotonic()
        dataset = self._dataset.value
        INGEST_COMMITS.labels(dataset).inc()
        INGEST_COMMIT_SECONDS.labels(dataset).observe(time.perf_counter() - prepared.started)

    def _mirror_group_offsets(self) -> None:
        """Mirror the landed offsets to the Kafka group for lag tooling, from the consumer's own thread (a
        synchronous commit from the lander would wait on this thread's consume()). The lake is the record: a
        failure here (a rebalance bumped the generation) loses nothing, the next owner resumes from the lake."""
        with self._mirror_lock:
            next_offsets, self._to_mirror = self._to_mirror, {}
        if not next_offsets:
            return
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

    def _records_only(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(f"Kafka error on {self._topic}: {error.str()}")
        return [m for m in messages if m.error() is None]

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
        self._lander = Lander(self._commit, name=f"k2-lander-{self._dataset.value}")
        try:
            while max_messages is None or self.report.messages < max_messages:
                self._lander.raise_if_failed()
                self._mirror_group_offsets()
                batch = self._settings.consume_batch
                want = batch if max_messages is None else min(batch, max_messages - self.report.messages)
                messages = self._consumer.consume(want, timeout=0.2)
                if any(map(Message.error, messages)):  # rare: events and errors among the records
                    messages = self._records_only(messages)
                self._pending.add(messages)
                got = len(messages)
                self.report.messages += got
                INGEST_MESSAGES.labels(self._topic).inc(got)
                now = time.monotonic()
                if got:
                    last_data = now
                    if self.report.first_message_at is None:
                        self.report.first_message_at = now
                if self._pending.due(self._settings, now, caught_up=not got):
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
            self._drain()
            if on_progress:
                on_progress(self.report)
        except BaseException:
            # nothing more may land (not even from the revoke that closing triggers): the tracker may have adopted
            # a batch that never committed. A restart resumes from the offsets and state in the lake
            self._failed = True
            raise
        finally:
            self._lander.close()  # lets a batch already prepared land (it is complete: rows + offsets)
            self._lander = None
            gc.enable()
            gc.unfreeze()
            self._consumer.close()
            self._dlq.close()
        return self.report
