"""Producer: Arrow batches of ticks → Confluent-framed Avro records on Kafka, keyed by symbol."""

from __future__ import annotations

import functools
import itertools
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import repeat
from operator import length_hint
from typing import NoReturn

import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from k2.codec.encoder import encode_batch
from k2.errors import ProducerFatalError
from k2.kafka.admin import cluster_id
from k2.kafka.config import producer_config, topic_for
from k2.obs import tracing
from k2.obs.metrics import PRODUCE_FAILURES, PRODUCED
from k2.registry.base import SchemaRegistry, subject_for
from k2.schemas import Dataset, avro_schema
from k2.schemas.lineage import SOURCE_HEADER, ProducerBatch, new_load_id
from k2.settings import Settings


@dataclass
class DeliveryReport:
    queued: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    broker_restarted: bool = False
    fatal: str = ""  # why the producer entered its fatal state, if it did

    @property
    def delivered(self) -> int:
        return self.queued - self.failed


def with_ingest_ts(table: pa.Table) -> pa.Table:
    """Stamp every row with the time K2 accepted it."""
    now = pa.scalar(time.time_ns() // 1000, pa.timestamp("us", tz="UTC"))
    column = pa.repeat(now, table.num_rows)
    if "ingest_ts" in table.column_names:
        return table.set_column(table.column_names.index("ingest_ts"), "ingest_ts", column)
    return table.append_column("ingest_ts", column)


class TickProducer:
    """Idempotent, keyed producer of one or more datasets; call `flush()` before exit.

    `source` names where the rows come from (schemas/lineage.py: a file, a generator); with the load id this
    producer draws and each batch's number, it goes with the first record of every batch (lineage)."""

    def __init__(self, settings: Settings, bootstrap: str, registry: SchemaRegistry,
                 source: Mapping[str, object] | None = None) -> None:
        self._settings = settings
        self._registry = registry
        self._report = DeliveryReport()
        self._producer = Producer({
            **producer_config(settings, bootstrap), "on_delivery": self._on_delivery, "error_cb": self._on_error,
        })
        self._bootstrap = bootstrap
        self._cluster = cluster_id(bootstrap)
        self._schema_ids: dict[Dataset, int] = {}
        self._topic = ""
        self.load_id = new_load_id()
        self._source = dict(source or {"kind": "table"})
        self._batch_numbers = itertools.count(1)

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        # called from librdkafka for failed records only; touches no Message method (seen raising SystemError
        # while the client tears down after a broker restart) and never raises
        if error is None:
            return
        self._report.failed += 1
        PRODUCE_FAILURES.labels(self._topic).inc()
        if len(self._report.errors) < 20:
            self._report.errors.append(f"{self._topic}: {error.str()}")

    def _on_error(self, error: KafkaError) -> None:
        # with an error callback, a fatal client error (UNKNOWN_PRODUCER_ID after a broker restart) is reported
        # here instead of being raised out of flush() as a bare KafkaError, which no `except` clause matches
        if error.fatal():
            self._report.fatal = self._report.fatal or f"the producer failed: {error.str()}"
            if len(self._report.errors) < 20:
                self._report.errors.append(f"the producer failed: {error.str()}")

    def _fatal_reason(self) -> str:
        """The broker's reason for a fatal client error ("Local: Fatal error" alone says nothing): the client
        raises it from poll() (sometimes only from the second call), or reports it to the error callback."""
        for _ in range(3):
            try:
                self._producer.poll(0)
            except KafkaException as exc:
                return _describe(exc)
            except:  # noqa: E722 - see flush(): the failed client has raised objects no `except` class matches
                return _describe_current()
        reasons = [e.removeprefix("the producer failed: ") for e in self._report.errors if "producer failed" in e]
        return reasons[0] if reasons else ""

    def schema_id(self, dataset: Dataset) -> int:
        if dataset not in self._schema_ids:
            topic = topic_for(self._settings, dataset)
            self._schema_ids[dataset] = self._registry.register(subject_for(topic), avro_schema(dataset))
        return self._schema_ids[dataset]

    def send(self, dataset: Dataset, table: pa.Table) -> int:
        """Queue every row of `table`; blocks (back-pressure) while the producer queue is full. One span per call:
        its trace context goes in the headers of every record, so the ingest of these records joins its trace."""
        topic = self._topic = topic_for(self._settings, dataset)
        attributes: tracing.Attributes = {
            "messaging.system": "kafka", "messaging.destination.name": topic,
            "messaging.batch.message_count": table.num_rows, "k2.dataset": dataset.value,
        }
        with tracing.span("k2.produce", attributes, kind="producer"):
            table = with_ingest_ts(table)
            encoded = encode_batch(table, avro_schema(dataset), self.schema_id(dataset))
            keys = table.column("symbol").cast(pa.binary()).to_pylist()
            values = encoded.values()
            if values:
                self._queue_first(topic, values[0], keys[0], self._batch_header(table))
            self._queue(topic, values[1:], keys[1:], tracing.kafka_headers())
        self._report.queued += len(encoded)
        PRODUCED.labels(topic).inc(len(encoded))
        return len(encoded)

    def _batch_header(self, table: pa.Table) -> tracing.KafkaHeaders:
        ingest_ts = table.column("ingest_ts")[0].cast(pa.int64()).as_py()
        batch = ProducerBatch(self.load_id, next(self._batch_numbers), ingest_ts, table.num_rows, self._source)
        return [(SOURCE_HEADER, batch.to_json().encode()), *(tracing.kafka_headers() or [])]

    def _queue_first(self, topic: str, value: bytes, key: bytes, headers: tracing.KafkaHeaders) -> None:
        """The batch's first record, with the lineage header: only one record a batch pays for headers."""
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                self._producer.poll(0.05)
            except (KafkaException, SystemError) as exc:
                self._stop_fatally(0, exc)

    def _queue(self, topic: str, values: list[bytes], keys: list[bytes], headers: tracing.KafkaHeaders | None) -> None:
        """produce() every record, driven by map() so the per-record loop runs in C, not in Python bytecode."""
        # the same headers on every record: a partial (C, like map) passes them without a per-record Python call
        produce = functools.partial(self._producer.produce, headers=headers) if headers else self._producer.produce
        done = 0
        while done < len(values):
            remaining = iter(values[done:] if done else values)
            try:
                # no per-record timestamp: passing one costs 0.5 µs a record in argument parsing (measured), the
                # client's clock is the host's anyway, and K2's topics take the broker's (LogAppendTime)
                deque(map(produce, repeat(topic), remaining, keys[done:] if done else keys), maxlen=0)
                done = len(values)
            except BufferError:  # queue full: map() had taken the record that did not fit; serve reports, retry it
                done = len(values) - length_hint(remaining) - 1
                self._producer.poll(0.05)
            except (KafkaException, SystemError) as exc:  # fatal, e.g. the idempotent producer after a broker restart
                self._stop_fatally(len(values) - length_hint(remaining) - 1, exc)
        self._producer.poll(0)  # serve delivery reports (failures only)

    def _stop_fatally(self, done: int, exc: BaseException) -> NoReturn:
        self._report.fatal = (
            f"the producer stopped after queueing {self._report.queued + done:,} records "
            f"({self._fatal_reason() or _describe(exc)}); "
            "records from there on were not delivered — the broker may have restarted. Re-run the load: "
            "re-loading is idempotent"
        )
        raise ProducerFatalError(self._report.fatal) from None

    def close(self, timeout: float = 60.0) -> DeliveryReport:
        """Flush, then release the client (its connections close now, not at garbage collection). Never raises:
        whatever went wrong is in the report, so a close after a failure cannot hide the first error."""
        report = self.flush(timeout)
        del self._producer
        self._check_same_cluster()
        return report

    def _check_same_cluster(self) -> None:
        """An in-memory broker that restarted is a new, empty cluster: acknowledged records may be gone."""
        try:
            now = cluster_id(self._bootstrap, timeout=5)
        except Exception as exc:  # unreachable now: the delivery reports already say what was acknowledged
            self._report.errors.append(f"could not re-check the broker after flushing: {exc}")
            return
        if now != self._cluster:
            self._report.broker_restarted = True
            self._report.errors.append(
                f"the Kafka cluster changed during the load (id {self._cluster} → {now}): the broker restarted, and "
                "an in-memory broker lost the records it held"
            )

    def flush(self, timeout: float = 60.0) -> DeliveryReport:
        """Wait for every queued record; records still unacknowledged at the timeout count as failed."""
        try:
            remaining = self._producer.flush(timeout)
        except:  # noqa: E722 - the C client has raised a bare KafkaError here, which is no BaseException
            # seen after a broker restart: the idempotent producer's fatal state (UNKNOWN_PRODUCER_ID)
            reason = f"the producer failed while flushing: {_describe_current()}"
            self._report.fatal = self._report.fatal or reason
            self._report.errors.append(reason)
            try:
                remaining = len(self._producer)
            except Exception:
                remaining = self._report.queued - self._report.failed
            remaining = max(remaining, 1)
        if remaining:
            self._report.failed += remaining
            self._report.errors.append(f"{remaining} records still unacknowledged after {timeout:.0f}s")
        return self._report


def _describe_current() -> str:
    """The error being handled, whatever object the C client raised."""
    value = sys.exc_info()[1]
    describe = getattr(value, "str", None)
    return str(describe() if callable(describe) else value)


def _describe(exc: BaseException) -> str:
    """A Kafka exception's error text (KafkaException carries a KafkaError as its first argument)."""
    describe = getattr(exc.args[0], "str", None) if exc.args else None
    return str(describe() if callable(describe) else exc)
