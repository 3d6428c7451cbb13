"""Wiring of the ingest parts for callers (CLI, demo, tests): sources → producer, topic → lake."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from k2.ingest.consumer import IngestReport, LakeIngestor
from k2.ingest.csv_loader import Layout, LoadStats, read_ticks
from k2.ingest.kafka import ensure_topics
from k2.ingest.producer import DeliveryError, DeliveryReport, TickProducer
from k2.ingest.reference_loader import read_reference
from k2.ingest.registry import ConfluentSchemaRegistry, LocalSchemaRegistry, SchemaRegistry
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.quality import ensure_quality_table
from k2.schemas import Dataset
from k2.settings import Settings

Progress = Callable[[int], None]


def registry_for(settings: Settings) -> SchemaRegistry:
    """The Confluent Schema Registry at K2_SCHEMA_REGISTRY_URL, else the local file registry in K2_HOME."""
    if settings.schema_registry_url:
        return ConfluentSchemaRegistry(settings.schema_registry_url)
    return LocalSchemaRegistry(settings.registry_dir)


def produce_table(
    settings: Settings, bootstrap: str, table: pa.Table, dataset: Dataset = Dataset.TRADES,
    chunk_rows: int = 100_000, on_progress: Progress | None = None,
) -> DeliveryReport:
    """Produce every row of an in-memory table; raises DeliveryError if any record was not acknowledged."""
    ensure_topics(settings, bootstrap)
    producer = TickProducer(settings, bootstrap, registry_for(settings))
    for offset in range(0, table.num_rows, chunk_rows):
        sent = producer.send(dataset, table.slice(offset, chunk_rows))
        if on_progress:
            on_progress(sent)
    return _checked(producer.close())


def load_csv(
    settings: Settings, bootstrap: str, path: Path, layout: Layout | None = None, symbol: str | None = None,
    exchange: str | None = None, company_info: Path | None = None, on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None, dataset: Dataset = Dataset.TRADES,
) -> tuple[LoadStats, DeliveryReport]:
    """CSV file → trades topic, streaming in chunks. Bad rows are in the returned stats, good ones are sent.

    `should_stop` is polled between chunks (SIGINT/SIGTERM): reading stops, and what was queued is still flushed.
    """
    ensure_topics(settings, bootstrap)
    producer = TickProducer(settings, bootstrap, registry_for(settings))
    stats = LoadStats()
    try:
        if dataset not in (Dataset.TRADES, Dataset.QUOTES):
            raise ValueError(f"CSV loading supports trades and quotes, not {dataset}")
        chunks = read_ticks(dataset.value, path, layout, symbol, exchange, company_info,  # type: ignore[arg-type]
                            settings.csv_chunk_rows, stats)
        for chunk in chunks:
            sent = producer.send(dataset, chunk)
            if on_progress:
                on_progress(sent)
            if should_stop and should_stop():
                stats.interrupted = True
                break
    finally:
        report = producer.close()
    return stats, _checked(report)


def load_reference(
    settings: Settings, bootstrap: str, path: Path, exchange: str | None = None, company_info: Path | None = None,
) -> tuple[Dataset, LoadStats, DeliveryReport]:
    """A reference-data file (instruments or corporate actions, detected from its header) → its topic."""
    batch = read_reference(path, exchange, company_info)
    ensure_topics(settings, bootstrap)
    producer = TickProducer(settings, bootstrap, registry_for(settings))
    try:
        if batch.table.num_rows:
            producer.send(batch.dataset, batch.table)
    finally:
        report = producer.close()
    return batch.dataset, batch.stats, _checked(report)


def _checked(report: DeliveryReport) -> DeliveryReport:
    if report.broker_restarted:
        raise DeliveryError(
            f"{report.delivered} of {report.queued} records were acknowledged, but {report.errors[-1]}. Re-run the "
            "load: re-loading is idempotent (records already in the lake are dropped as duplicates at ingest)"
        )
    if report.failed:
        raise DeliveryError(
            f"{report.failed} of {report.queued} records were not delivered ({report.delivered} were): "
            + "; ".join(report.errors[:5])
        )
    return report


def ingest(
    settings: Settings, bootstrap: str, dataset: Dataset = Dataset.TRADES, max_messages: int | None = None,
    idle_seconds: float | None = None, on_progress: Callable[[IngestReport], None] | None = None,
) -> IngestReport:
    """Consume the dataset's topic into its Iceberg table until idle (or `max_messages`)."""
    ensure_topics(settings, bootstrap)
    catalog = open_catalog(settings)
    table = ensure_table(catalog, settings, dataset)
    quality = ensure_quality_table(catalog, settings)
    ingestor = LakeIngestor(settings, bootstrap, dataset, table, registry_for(settings), quality)
    return ingestor.run(max_messages=max_messages, idle_seconds=idle_seconds, on_progress=on_progress)
