"""Wiring of the parts for callers (CLI, demo, tests, benches): sources → producer, topic → lake."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog

from k2.errors import DeliveryError, ProducerFatalError
from k2.faults import CrashPoints
from k2.ingest.committer import LakeCommitter
from k2.ingest.consumer import IngestReport, LakeIngestor
from k2.ingest.dedup import NaturalKeyDeduper, SequenceTracker
from k2.ingest.prepare import BatchPreparer, Deduper
from k2.kafka.admin import cluster_id, ensure_topics, wait_for_kafka
from k2.kafka.config import consumer_config, ingest_group, topic_for
from k2.kafka.dead_letters import DeadLetterWriter
from k2.kafka.producer import DeliveryReport, TickProducer
from k2.lake.bars import BarsRefresher, ensure_bars_table
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.quality import ensure_quality_table
from k2.lake.sequences import NATURAL_KEYS, landed_keys, landed_ranges
from k2.registry import registry_for
from k2.schemas import Dataset
from k2.schemas.lineage import file_source
from k2.settings import Settings
from k2.sources.csv_ticks import Layout, read_ticks
from k2.sources.reference import read_reference
from k2.sources.report import LoadStats

Progress = Callable[[int], None]
T = TypeVar("T")
log = logging.getLogger(__name__)


def produce_table(
    settings: Settings, bootstrap: str, table: pa.Table, dataset: Dataset = Dataset.TRADES,
    chunk_rows: int = 100_000, on_progress: Progress | None = None, source: Mapping[str, Any] | None = None,
) -> DeliveryReport:
    """Produce every row of an in-memory table; raises DeliveryError if any record was not acknowledged.
    `source` names where the table came from (schemas/lineage.py); each row's `source_line` is its row number in
    the table (1-based) unless the table has its own."""
    ensure_topics(settings, bootstrap)
    if "source_line" not in table.column_names:
        table = table.append_column("source_line", pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64)))

    def attempt() -> DeliveryReport:
        def send_all(producer: TickProducer) -> None:
            for offset in range(0, table.num_rows, chunk_rows):
                sent = producer.send(dataset, table.slice(offset, chunk_rows))
                if on_progress:
                    on_progress(sent)

        return _produced(settings, bootstrap, send_all, source)

    return _with_fresh_producers(settings, attempt)


def load_csv(
    settings: Settings, bootstrap: str, path: Path, layout: Layout | None = None, symbol: str | None = None,
    exchange: str | None = None, company_info: Path | None = None, on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None, dataset: Dataset = Dataset.TRADES,
) -> tuple[LoadStats, DeliveryReport]:
    """CSV file → its topic, streaming in chunks. Bad rows are in the returned stats, good ones are sent.

    `should_stop` is polled between chunks (SIGINT/SIGTERM): reading stops, and what was queued is still flushed.
    """
    if dataset not in (Dataset.TRADES, Dataset.QUOTES):
        raise ValueError(f"CSV loading supports trades and quotes, not {dataset}")
    ensure_topics(settings, bootstrap)
    source = file_source(path, layout=layout or "detected")

    def attempt() -> tuple[LoadStats, DeliveryReport]:
        stats = LoadStats()  # each attempt reads the file from its start
        chunks = read_ticks(dataset.value, path, layout, symbol, exchange, company_info,  # type: ignore[arg-type]
                            settings.csv_chunk_rows, stats)

        def send_all(producer: TickProducer) -> None:
            for chunk in chunks:
                sent = producer.send(dataset, chunk)
                if on_progress:
                    on_progress(sent)
                if should_stop and should_stop():
                    stats.interrupted = True
                    break

        return stats, _produced(settings, bootstrap, send_all, source)

    return _with_fresh_producers(settings, attempt)


def load_reference(
    settings: Settings, bootstrap: str, path: Path, exchange: str | None = None, company_info: Path | None = None,
) -> tuple[Dataset, LoadStats, DeliveryReport]:
    """A reference-data file (instruments or corporate actions, detected from its header) → its topic."""
    batch = read_reference(path, exchange, company_info)
    ensure_topics(settings, bootstrap)

    def send_all(producer: TickProducer) -> None:
        if batch.table.num_rows:
            producer.send(batch.dataset, batch.table)

    source = file_source(path, layout="reference")
    report = _with_fresh_producers(settings, lambda: _produced(settings, bootstrap, send_all, source))
    return batch.dataset, batch.stats, report


def _produced(settings: Settings, bootstrap: str, send_all: Callable[[TickProducer], None],
              source: Mapping[str, Any] | None = None) -> DeliveryReport:
    """One producer sends everything, then is flushed and closed; the report is checked (DeliveryError)."""
    producer = TickProducer(settings, bootstrap, registry_for(settings), source)
    try:
        send_all(producer)
    except ProducerFatalError:
        pass  # recorded in the report; the close below still says whether the cluster changed (that comes first)
    finally:
        report = producer.close()  # never raises: a close after a failure cannot replace the first error
    return _checked(report)


def _with_fresh_producers(settings: Settings, attempt: Callable[[], T]) -> T:
    """Run `attempt`; after the idempotent producer's fatal error, start over with a new producer (a new producer
    id), up to K2_PRODUCER_FATAL_RETRIES times. Re-sending from the start is what makes it safe: records the broker
    acknowledged before the failure may be gone with it, and the lake drops the ones that are not."""
    for retry in itertools.count():
        try:
            return attempt()
        except ProducerFatalError as exc:
            if retry >= settings.producer_fatal_retries:
                raise
            log.warning("%s. Starting over with a new producer (retry %d of %d)", exc, retry + 1,
                        settings.producer_fatal_retries)
    raise AssertionError("unreachable")


def _checked(report: DeliveryReport) -> DeliveryReport:
    if report.broker_restarted:
        raise DeliveryError(
            f"{report.delivered} of {report.queued} records were acknowledged, but {report.errors[-1]}. Re-run the "
            "load: re-loading is idempotent (records already in the lake are dropped as duplicates at ingest)"
        )
    if report.fatal:
        raise ProducerFatalError(report.fatal)
    if report.failed:
        advice = ""
        if any("Invalid timestamp" in e or "failed to validate record" in e for e in report.errors):
            advice = (". The broker refused the records as invalid; most often their timestamps: this host's clock "
                      "is off from the broker's by more than the topic allows (Kafka 4: an hour ahead). K2 creates "
                      "its topics with message.timestamp.type=LogAppendTime, which takes the producer's clock out "
                      "of it: set that on this topic (kafka-configs --alter --add-config "
                      "message.timestamp.type=LogAppendTime), or fix the clock")
        raise DeliveryError(
            f"{report.failed} of {report.queued} records were not delivered ({report.delivered} were): "
            + "; ".join(report.errors[:5]) + advice
        )
    return report


def _deduper(catalog: Catalog, settings: Settings, dataset: Dataset) -> Deduper:
    # the deduper reads the lake from the consumer thread while the lander commits: its own table object
    reader = ensure_table(catalog, settings, dataset)
    if "sequence" in reader.schema().column_names:
        return SequenceTracker(lambda keys: landed_ranges(reader, keys))
    return NaturalKeyDeduper(NATURAL_KEYS[dataset], lambda columns: landed_keys(reader, columns))


def build_ingestor(settings: Settings, bootstrap: str, dataset: Dataset) -> LakeIngestor:
    """A consumer of `dataset`'s topic wired to its table, the quality table, the registry and the DLQ."""
    catalog = open_catalog(settings)
    table = ensure_table(catalog, settings, dataset)
    quality_table = ensure_quality_table(catalog, settings)
    topic = topic_for(settings, dataset)
    cluster = cluster_id(bootstrap)
    crash = CrashPoints(settings.crash_at)
    preparer = BatchPreparer(
        dataset, topic, registry_for(settings).schema, DeadLetterWriter(settings, bootstrap),
        _deduper(catalog, settings, dataset), dt.timedelta(seconds=settings.max_future_skew_seconds),
    )
    refresher = None
    if dataset is Dataset.TRADES and settings.materialize_bars:
        refresher = BarsRefresher(ensure_table(catalog, settings, dataset), ensure_bars_table(catalog, settings))
    committer = LakeCommitter(dataset, table, quality_table, topic, cluster, crash, refresher)
    config = consumer_config(settings, bootstrap, ingest_group(settings, dataset), f".{dataset.value}")
    return LakeIngestor(settings, config, topic, preparer, committer, quality_table, cluster, crash)


def ingest(
    settings: Settings, bootstrap: str, dataset: Dataset = Dataset.TRADES, max_messages: int | None = None,
    idle_seconds: float | None = None, on_progress: Callable[[IngestReport], None] | None = None,
) -> IngestReport:
    """Consume the dataset's topic into its Iceberg table until idle (or `max_messages`)."""
    ensure_topics(settings, bootstrap)
    ingestor = build_ingestor(settings, bootstrap, dataset)
    return ingestor.run(max_messages=max_messages, idle_seconds=idle_seconds, on_progress=on_progress)


def datasets_with_topics(settings: Settings, bootstrap: str) -> list[Dataset]:
    """The datasets whose topic exists on the cluster (what `k2 ingest` consumes by default)."""
    existing = set(wait_for_kafka(bootstrap, settings.kafka_connect_timeout_seconds).list_topics(timeout=10).topics)
    return [d for d in Dataset if topic_for(settings, d) in existing]


def ingest_many(
    settings: Settings, bootstrap: str, datasets: list[Dataset], idle_seconds: float | None = None,
    max_messages: int | None = None,
    on_progress: Callable[[Dataset, IngestReport], None] | None = None,
) -> dict[Dataset, IngestReport]:
    """Consume several datasets at once, one consumer thread each; the first error is raised once all stop."""
    ensure_topics(settings, bootstrap)
    catalog = open_catalog(settings)
    for dataset in datasets:  # tables are created here, not by several threads at once
        ensure_table(catalog, settings, dataset)
    ensure_quality_table(catalog, settings)

    ingestors = {d: build_ingestor(settings, bootstrap, d) for d in datasets}

    def run(dataset: Dataset) -> IngestReport:
        progress = (lambda report: on_progress(dataset, report)) if on_progress else None
        return ingestors[dataset].run(max_messages, idle_seconds, progress)

    first_error: BaseException | None = None
    with ThreadPoolExecutor(max(1, len(datasets)), thread_name_prefix="k2-ingest") as pool:
        futures = {d: pool.submit(run, d) for d in datasets}
        running = set(futures.values())
        while running:
            try:
                # short waits: a Ctrl-C delivered to another thread only runs its handler once this thread wakes
                done, running = wait(running, timeout=0.25, return_when=FIRST_EXCEPTION)
                failed = next((f.exception() for f in done if f.exception() is not None), None)
            except BaseException as exc:  # Ctrl-C
                failed = exc
            if failed is not None:  # stop the others, let each land what it read, then raise the first error
                first_error = first_error or failed
                for ingestor in ingestors.values():
                    ingestor.stop()
    if first_error is not None:
        raise first_error
    return {d: f.result() for d, f in futures.items()}
