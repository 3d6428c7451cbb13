"""The Kafka loop of ingestion: consume a dataset's topic, hand batches to preparation and to the lake committer.

Exactly once (docs/decisions/0004): each Iceberg commit records the next offset of every partition it consumed.
On every assignment the consumer seeks to the offsets recorded in the lake's current ancestry; a partition the
lake has no offset for starts at the beginning. The Kafka group offsets never decide where reading resumes (only
when the lake's offsets come from another cluster, e.g. a restarted in-memory broker); they are a mirror for lag
tools, committed after the lake.

Two stages overlap: this thread consumes and prepares batch N+1 while a lander thread commits batch N
(k2.ingest.lander). Commits stay in order; a rebalance or the end of the run waits for the lander.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from pyiceberg.table import Table

from k2 import faults
from k2.errors import KafkaUnavailableError, NoPartitionsAssignedError
from k2.ingest.commit_policy import PendingBatch
from k2.ingest.committer import LakeCommitter
from k2.ingest.lander import Lander
from k2.ingest.prepare import BatchPreparer, PreparedBatch
from k2.kafka.config import close_consumer
from k2.kafka.groups import committed as committed_offsets
from k2.lake import quality
from k2.lake.catalog import catalog_outage, storage_outage
from k2.lake.offsets import landed_offsets
from k2.obs import tracing
from k2.obs.metrics import INGEST_MESSAGES
from k2.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    messages: int = 0
    rows_landed: int = 0
    commits: int = 0
    commit_retries: int = 0  # commits that lost a race with another writer and were retried
    dead_lettered: int = 0
    duplicates: int = 0
    late: int = 0
    snapshot_id: int | None = None
    start_offsets: dict[int, int] = field(default_factory=dict)  # where reading began, per partition
    quality_recovered: int = 0  # batches whose quality rows a crash had kept out, added on start
    first_message_at: float | None = None
    last_commit_at: float | None = None
    errors: list[str] = field(default_factory=list)


_CLUSTER_CHECK_SECONDS = 10.0  # how often a consuming ingest confirms the broker is still the same cluster


class LakeIngestor:
    """Consumes one dataset's topic into its Iceberg table, until idle or `max_messages`."""

    def __init__(
        self, settings: Settings, consumer_config: dict[str, object], topic: str, preparer: BatchPreparer,
        committer: LakeCommitter, quality_table: Table | None, cluster_id: str, crash: faults.CrashPoints,
    ) -> None:
        self._settings = settings
        self._consumer_config = consumer_config
        self._consumer: Consumer | None = None  # created by run(): constructing an ingestor does no I/O
        self._topic = topic
        self._preparer = preparer
        self._committer = committer
        self._quality_table = quality_table
        self._cluster = cluster_id
        self._crash = crash
        self.report = IngestReport()
        crash.context = lambda: f"{self.report.messages} records read, {self.report.rows_landed} rows landed"
        self._lander: Lander[PreparedBatch] | None = None
        self._failed = False
        self._to_mirror: dict[int, int] = {}  # landed offsets not yet committed to the Kafka group
        self._mirror_lock = threading.Lock()
        self._assigned_at: float | None = None
        self._unassigned_since = time.monotonic()
        self._broker_down_since: float | None = None
        self._cluster_checked_at = 0.0
        self._unread = False  # records beyond the position, as of the last check (see _still_to_read)
        self._unread_checked_at = 0.0
        self._pending = PendingBatch()
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask a running `run()` to finish: it lands what it has read, commits, and returns (any thread)."""
        self._stop.set()

    # ------------------------------------------------------------------------------------------- assignment

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._crash.reach(faults.GROUP_JOIN)
        self._drain()  # the lake must hold everything landed so far before offsets and state are read from it
        table = self._committer.table
        table.refresh()
        if self._quality_table is not None:
            self.report.quality_recovered += len(quality.reconcile(table, self._quality_table))
        self._preparer.reset()  # symbols may have moved between consumers: re-derive their state from the lake
        starts = self._start_offsets(consumer, partitions, table)
        for tp in partitions:
            tp.offset = starts[tp.partition]
            self.report.start_offsets[tp.partition] = starts[tp.partition]
        consumer.assign(partitions)
        with self._mirror_lock:  # the group shows where the lake is, also for partitions with nothing new
            self._to_mirror.update({p: o for p, o in starts.items() if o >= 0})
        # an empty assignment (other members hold every partition) is no assignment: it is not "idle"
        self._assigned_at = time.monotonic() if partitions else None
        log.info("%s: assigned %s", self._topic, starts)

    def _start_offsets(self, consumer: Consumer, partitions: list[TopicPartition], table: Table) -> dict[int, int]:
        """The lake's offsets; a partition the lake never landed from starts at the beginning."""
        landed = landed_offsets(table.metadata, self._topic)
        if landed is not None and landed.cluster_id == self._cluster:
            return {tp.partition: landed.next_offsets.get(tp.partition, OFFSET_BEGINNING) for tp in partitions}
        if landed is None:
            return {tp.partition: OFFSET_BEGINNING for tp in partitions}
        # recorded on another cluster (an in-memory broker restarts as a new one): its offsets mean nothing here,
        # the group's on this cluster are all there is; re-read ticks are dropped as duplicates
        log.info("%s: the lake's offsets were recorded on Kafka cluster %s, this is %s: starting from the group's",
                 self._topic, landed.cluster_id, self._cluster)
        committed = committed_offsets(consumer, partitions)
        return {tp.partition: tp.offset if tp.offset >= 0 else OFFSET_BEGINNING for tp in committed}

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

    # ----------------------------------------------------------------------------------------------- landing

    def _land_pending(self) -> None:
        if self._failed or not self._pending.messages:
            return
        pending, self._pending = self._pending, PendingBatch()
        with self._consume_span(pending):
            prepared = self._preparer.prepare(pending)
            prepared.trace = tracing.current()  # the commit, on the lander thread, is a child of this span too
            self.report.dead_lettered += len(prepared.dead_letters)
            room = max(0, 20 - len(self.report.errors))
            self.report.errors.extend(
                f"partition {x.source_partition} offset {x.source_offset}: {x.error}"
                for x in prepared.dead_letters[:room]
            )
            self.report.duplicates += prepared.duplicates
            self.report.late += prepared.late
            if self._lander is None:
                self._commit(prepared)
            else:
                self._lander.submit(prepared)

    def _consume_span(self, pending: PendingBatch) -> AbstractContextManager[tracing.Span]:
        """The batch's span, from its first record's arrival to its hand-over to the lander.

        A batch holds the records of several producer batches, each with a trace of its own. The first record's is
        the parent, so the batch shows inside the trace of a load that sent it (a span has one parent); the others
        are span links, OpenTelemetry's way to relate one operation to several traces."""
        # map() over the C accessor; a consumed record's headers are a list of (key, value) tuples, never a dict
        headers = cast(Iterable[tracing.KafkaHeaders | None], map(Message.headers, pending.messages))
        contexts = tracing.from_kafka_headers(headers)
        waited_ns = int((time.monotonic() - pending.since) * 1e9)
        attributes: tracing.Attributes = {
            "messaging.system": "kafka", "messaging.destination.name": self._topic,
            "messaging.batch.message_count": len(pending.messages), "k2.producer_batches": len(contexts),
        }
        return tracing.span("k2.ingest.consume", attributes, kind="consumer", parent=contexts[0] if contexts else None,
                            links=contexts[1:], start_ns=time.time_ns() - waited_ns)

    def _commit(self, batch: PreparedBatch) -> None:
        """Land one batch (on the lander thread) and account for it."""
        landed = self._committer.commit(batch)
        if landed.snapshot_id is not None:
            self.report.snapshot_id = landed.snapshot_id
            self.report.commits += 1
            self.report.commit_retries += landed.commit_attempts > 1
        self.report.rows_landed += landed.rows
        self.report.last_commit_at = time.monotonic()
        with self._mirror_lock:  # the consumer thread mirrors them to the group
            self._to_mirror.update(batch.next_offsets)

    def _drain(self) -> None:
        if self._lander is not None:
            self._lander.drain()
        self._mirror_group_offsets()

    def _mirror_group_offsets(self) -> None:
        """Mirror the landed offsets to the Kafka group for lag tooling, from the consumer's own thread (a
        synchronous commit from the lander would wait on this thread's consume()). The lake is the record: a
        failure here (a rebalance bumped the generation) loses nothing, the next owner resumes from the lake."""
        with self._mirror_lock:
            next_offsets, self._to_mirror = self._to_mirror, {}
        if not next_offsets or self._consumer is None:
            return
        try:  # asynchronous: a broker that stopped answering must not stall ingestion on a mirror
            self._consumer.commit(
                offsets=[TopicPartition(self._topic, p, o) for p, o in next_offsets.items()], asynchronous=True
            )
        except KafkaException as exc:
            log.warning("%s: group offset commit skipped (%s); the lake holds the landed offsets", self._topic, exc)

    # ----------------------------------------------------------------------------------------------- the loop

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's client-level errors (from consume()); transport errors are retried by the client."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN and self._broker_down_since is None:
            self._broker_down_since = time.monotonic()
            log.warning("%s: lost every Kafka broker (%s); retrying", self._topic, error.str())

    def _check_broker(self, now: float) -> None:
        if self._broker_down_since is not None and now - self._broker_down_since > (
                self._settings.kafka_connect_timeout_seconds):
            raise KafkaUnavailableError(
                f"lost the Kafka broker while ingesting {self._topic} and it did not come back within "
                f"{self._settings.kafka_connect_timeout_seconds:.0f}s; {self.report.rows_landed:,} rows landed. Re-run "
                "`k2 ingest` once it is back: it resumes exactly where the lake left off"
            )

    def _check_cluster(self, consumer: Consumer, now: float) -> None:
        """After every broker was lost, once one answers again (checked at most once a second): is it still the
        same cluster? A broker that lost its log (Tansu keeps it in memory; a cluster rebuilt from scratch) comes
        back as a new cluster whose offsets mean nothing next to the ones this consumer holds: positions beyond
        its log would read nothing, and the run would end as "idle" with records unread. Also checked every
        `_CLUSTER_CHECK_SECONDS` while records flow: a rebuilt cluster may serve records at the old positions."""
        after_outage = self._broker_down_since is not None and now >= self._cluster_checked_at + 1.0
        if not after_outage and now < self._cluster_checked_at + _CLUSTER_CHECK_SECONDS:
            return
        self._cluster_checked_at = now
        try:
            found = consumer.list_topics(self._topic, timeout=1.0).cluster_id
        except KafkaException:
            return  # still down
        if not found:
            return
        self._broker_down_since = None
        if found != self._cluster:
            self._follow_new_cluster(consumer, str(found))

    def _follow_new_cluster(self, consumer: Consumer, found: str) -> None:
        """Land what was read from the old cluster (under its id), then read the topic on the new one from the
        beginning: the lake drops the records it already holds as duplicates (a fresh `k2 ingest` does the same)."""
        log.warning("%s: the Kafka cluster changed from %s to %s (a broker that lost its log); reading the topic "
                    "again from the beginning, records the lake holds are dropped as duplicates",
                    self._topic, self._cluster, found)
        self._land_pending()
        self._drain()
        self._cluster = found
        self._committer.follow_cluster(found)
        self._preparer.reset()  # sequence state again from the lake
        assignment = consumer.assignment()
        for tp in assignment:
            tp.offset = OFFSET_BEGINNING
            self.report.start_offsets[tp.partition] = OFFSET_BEGINNING
        if assignment:
            consumer.assign(assignment)

    def _still_to_read(self, consumer: Consumer, now: float, quiet: float, idle_limit: float) -> bool:
        """Whether records beyond this consumer's position exist although none arrived for `quiet` seconds:
        then it is not idle, only waiting on the broker (checked at most once a second). A broker that has
        records and serves none for long is an error, not the end of the run."""
        if now < self._unread_checked_at + 1.0:
            return self._unread
        self._unread_checked_at = now
        try:
            assignment = consumer.assignment()
            # a partition nothing was consumed from since its assignment has no position yet: it stands
            # where it was assigned (the lake's offset, or the beginning)
            positions = {tp.partition: tp.offset if tp.offset >= 0 else self.report.start_offsets.get(tp.partition, -1)
                         for tp in consumer.position(assignment)}
            self._unread = False
            for tp in assignment:
                low, high = consumer.get_watermark_offsets(tp, timeout=2, cached=False)
                if high > max(positions[tp.partition], low):
                    self._unread = True
                    break
        except KafkaException:  # a broker too busy to say is a broker that may still deliver
            self._unread = True
        stall_limit = max(60.0, 20 * idle_limit)
        if self._unread and quiet > stall_limit:
            raise KafkaUnavailableError(
                f"the broker reports unread records on {self._topic} but delivered none for {quiet:.0f}s; "
                f"{self.report.rows_landed:,} rows landed. Re-run `k2 ingest`: it resumes where the lake left off"
            )
        return self._unread

    def _records_only(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise KafkaUnavailableError(f"Kafka error on {self._topic}: {error.str()}")
        return [m for m in messages if m.error() is None]

    def run(
        self,
        max_messages: int | None = None,
        idle_seconds: float | None = None,
        on_progress: Callable[[IngestReport], None] | None = None,
    ) -> IngestReport:
        """Consume until `max_messages` have been landed, or nothing arrived for `idle_seconds`."""
        doing, advice = f"ingesting {self._topic}", "; `k2 ingest` resumes where the lake left off once it works again"
        with catalog_outage(self._settings, doing, advice), storage_outage(self._settings, doing, advice):
            return self._run(max_messages, idle_seconds, on_progress)

    def _run(
        self, max_messages: int | None, idle_seconds: float | None,
        on_progress: Callable[[IngestReport], None] | None,
    ) -> IngestReport:
        idle_limit = self._settings.ingest_idle_seconds if idle_seconds is None else idle_seconds
        self._crash.reach(faults.STARTUP)
        consumer = self._consumer = Consumer({**self._consumer_config, "error_cb": self._on_error})
        consumer.subscribe([self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._pending = PendingBatch()
        last_data = self._unassigned_since = time.monotonic()
        assignment_limit = 10.0 + 2 * self._settings.session_timeout_ms / 1000
        self._lander = Lander(self._commit, name=f"k2-lander-{self._topic}")
        try:
            while (max_messages is None or self.report.messages < max_messages) and not self._stop.is_set():
                self._lander.raise_if_failed()
                self._mirror_group_offsets()
                batch = self._settings.consume_batch
                want = batch if max_messages is None else min(batch, max_messages - self.report.messages)
                messages = consumer.consume(want, timeout=0.2)
                if any(map(Message.error, messages)):  # rare: events and errors among the records
                    messages = self._records_only(messages)
                self._pending.add(messages)
                got = len(messages)
                self.report.messages += got
                INGEST_MESSAGES.labels(self._topic).inc(got)
                now = time.monotonic()
                if got:
                    last_data = now
                    self._broker_down_since = None
                    if self.report.first_message_at is None:
                        self.report.first_message_at = now
                self._check_broker(now)
                self._check_cluster(consumer, now)
                if self._pending.due(self._settings, now, caught_up=not got):
                    self._land_pending()
                    if on_progress:
                        on_progress(self.report)
                if self._assigned_at is None:
                    if self._broker_down_since is not None:  # an outage is timed by _check_broker, on its own limit
                        self._unassigned_since = now
                    elif now - self._unassigned_since > assignment_limit:
                        raise NoPartitionsAssignedError(
                            f"no partitions of {self._topic} were assigned within {assignment_limit:.0f}s "
                            f"(group {self._settings.consumer_group!r}: is another consumer holding them, or is the "
                            "broker unreachable?)"
                        )
                    continue
                last_data = max(last_data, self._assigned_at)
                if not got and now - last_data >= idle_limit:
                    if self._broker_down_since is not None:  # quiet because the broker is gone, not idle
                        continue
                    if self._still_to_read(consumer, now, now - last_data, idle_limit):
                        continue  # quiet because the broker is slow to answer (noida builds huge fetches)
                    break
            self._land_pending()
            self._drain()
            if on_progress:
                on_progress(self.report)
        except BaseException:
            # nothing more may land (not even from the revoke that closing triggers): the deduper may have adopted
            # a batch that never committed. A restart resumes from the offsets and state in the lake
            self._failed = True
            raise
        finally:
            self._lander.close()  # lets a batch already prepared land (it is complete: rows + offsets)
            self._lander = None
            self._committer.close(failed=self._failed)
            if not close_consumer(consumer):  # it also waits for the last group commit (the mirror)
                log.warning("%s: the consumer did not close in time; the broker may have stopped", self._topic)
        return self.report
