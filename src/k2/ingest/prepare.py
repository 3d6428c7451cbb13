"""Batch preparation: consumed records → rows ready to land. Decode, validate, send what fails to the dead-letter
topic, drop duplicates. Pure of Kafka reads and lake writes: its collaborators are injected, and constructing it
does no I/O."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol, cast

import pyarrow as pa
from confluent_kafka import Message

from k2.codec.records import SchemaLookup, decode_records
from k2.ingest.commit_policy import PendingBatch
from k2.ingest.dedup import Checked
from k2.ingest.lineage import ProducerBatches, with_lineage
from k2.ingest.validate import validate
from k2.kafka.dead_letters import DeadLetter, now_iso
from k2.obs import tracing
from k2.obs.metrics import INGEST_ROWS
from k2.schemas import Dataset

log = logging.getLogger(__name__)


class DeadLetterSink(Protocol):
    def send(self, letters: list[DeadLetter]) -> None: ...


class Deduper(Protocol):
    """Splits a batch into new rows and duplicates, given what already landed (k2.ingest.dedup)."""

    def reset(self) -> None: ...

    def check(self, batch: pa.Table) -> Checked: ...

    def commit(self, checked: Checked) -> None: ...


@dataclass
class PreparedBatch:
    """A batch decoded, validated and de-duplicated, ready to land with the offsets it came from."""

    checked: Checked | None  # None: no record of the batch decoded into a valid row
    messages: int
    received: int  # valid rows, before dropping duplicates
    next_offsets: dict[int, int]
    started: float
    dead_letters: list[DeadLetter] = field(default_factory=list)
    trace: tracing.Context | None = None  # the consume span's context, parent of the commit's span

    @property
    def duplicates(self) -> int:
        return self.received - self.checked.keep.num_rows if self.checked is not None else 0

    @property
    def late(self) -> int:
        return sum(q.late for q in self.checked.quality.values()) if self.checked is not None else 0


class BatchPreparer:
    def __init__(
        self, dataset: Dataset, topic: str, schemas: SchemaLookup, dead_letters: DeadLetterSink, deduper: Deduper,
        max_future_skew: dt.timedelta,
    ) -> None:
        self._dataset = dataset
        self._topic = topic
        self._schemas = schemas
        self._dead_letters = dead_letters
        self._deduper = deduper
        self._skew = max_future_skew
        self._producer_batches = ProducerBatches()

    def reset(self) -> None:
        """Forget what is known of the lake (after a rebalance another consumer may have landed rows)."""
        self._deduper.reset()

    def prepare(self, pending: PendingBatch) -> PreparedBatch:
        with tracing.span("k2.ingest.decode", {"messaging.batch.message_count": len(pending.messages)}) as span:
            prepared = self._prepare(pending)
            span.set_attribute("k2.rows", prepared.received)
            span.set_attribute("k2.dead_letters", len(prepared.dead_letters))
            span.set_attribute("k2.duplicates", prepared.duplicates)
            return prepared

    def _prepare(self, pending: PendingBatch) -> PreparedBatch:
        started = time.perf_counter()
        messages = pending.messages
        raw = list(map(Message.value, messages))  # map() over the C accessor: no bytecode per record
        # a tombstone (no value) is not a tick: as b"" it fails decoding and goes to the dead-letter topic
        values = [v or b"" for v in raw] if None in raw else cast(list[bytes], raw)
        decoded = decode_records(values, self._schemas, self._dataset)
        failures, batch = decoded.failures, decoded.table
        self._producer_batches.learn(messages)
        if batch is not None:
            batch = with_lineage(batch, pending, self._producer_batches)
            batch, invalid = validate(self._dataset, batch, self._skew)
            failures = failures + invalid
        letters = self._send_dead_letters(messages, failures)  # acknowledged before anything is committed
        checked = None
        if batch is not None and batch.num_rows:
            checked = self._deduper.check(batch)
            # adopted now, not after the Iceberg commit: the next batch is checked while this one lands. If the
            # commit fails the ingestor stops, and a restart derives the state from the lake again
            self._deduper.commit(checked)
        received = 0 if batch is None else batch.num_rows
        return PreparedBatch(checked, len(messages), received, dict(pending.next_offsets), started, letters)

    def _send_dead_letters(self, messages: list[Message], failures: list[tuple[int, str]]) -> list[DeadLetter]:
        if not failures:
            return []
        failed_at = now_iso()
        letters = [
            DeadLetter(self._topic, messages[i].partition() or 0, messages[i].offset() or 0, reason,
                       messages[i].key(), messages[i].value() or b"", failed_at)
            for i, reason in failures
        ]
        self._dead_letters.send(letters)
        INGEST_ROWS.labels(self._dataset.value, "dead_letter").inc(len(letters))
        log.warning("%s: %d record(s) sent to the dead-letter topic, e.g. %s", self._topic, len(letters),
                    letters[0].error)
        return letters
