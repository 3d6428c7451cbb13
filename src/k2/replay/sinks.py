"""Where a replay goes besides a Python loop: Parquet or CSV files, or Kafka topics in K2's own wire format."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from k2.errors import DeliveryError, QueryError
from k2.kafka.admin import ensure_topics
from k2.kafka.producer import DeliveryReport, TickProducer
from k2.registry import registry_for
from k2.replay.order import DATASET_COLUMNS, KEY_COLUMNS, RANK, SCHEMA
from k2.schemas import Dataset, arrow_schema
from k2.settings import Settings

Progress = Callable[[int], None]

if TYPE_CHECKING:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq


def to_parquet(batches: Iterable[pa.RecordBatch], path: Path, on_batch: Progress | None = None) -> int:
    import pyarrow.parquet as pq

    with pq.ParquetWriter(path, SCHEMA, compression="zstd") as writer:
        return _write(writer, batches, on_batch)


def to_csv(batches: Iterable[pa.RecordBatch], path: Path, on_batch: Progress | None = None) -> int:
    import pyarrow.csv as pacsv

    with pacsv.CSVWriter(path, SCHEMA) as writer:
        return _write(writer, batches, on_batch)


def _write(writer: pq.ParquetWriter | pacsv.CSVWriter, batches: Iterable[pa.RecordBatch],
           on_batch: Progress | None) -> int:
    written = 0
    for batch in batches:
        writer.write_batch(batch)
        written += batch.num_rows
        if on_batch:
            on_batch(batch.num_rows)
    return written


def live_topics(settings: Settings) -> set[str]:
    return {settings.topic_trades, settings.topic_quotes, settings.topic_reference, settings.topic_corporate_actions,
            settings.topic_dlq}


def check_targets(settings: Settings, topics: dict[Dataset, str]) -> None:
    """QueryError when a target is one of K2's live topics."""
    clash = sorted(set(topics.values()) & live_topics(settings))
    if clash:
        raise QueryError(
            f"refusing to replay into the live topic {', '.join(clash)}: name a separate target topic (a replay "
            "must never be mistaken for live data by K2's own ingest)"
        )


def to_kafka(
    settings: Settings, bootstrap: str, batches: Iterable[pa.RecordBatch], topics: dict[Dataset, str],
    on_batch: Progress | None = None,
) -> DeliveryReport:
    """Republish each event to its dataset's target topic, Avro-encoded and keyed by symbol exactly as live data
    is (a consumer cannot tell them apart). A target that is one of K2's live topics is refused."""
    check_targets(settings, topics)
    target = settings.model_copy(update={
        "topic_trades": topics.get(Dataset.TRADES, settings.topic_trades),
        "topic_quotes": topics.get(Dataset.QUOTES, settings.topic_quotes),
    })
    ensure_topics(target, bootstrap)
    producer = TickProducer(target, bootstrap, registry_for(target))
    try:
        for batch in batches:
            for dataset in topics:
                rows = _rows_of(batch, dataset)
                if rows.num_rows:
                    producer.send(dataset, rows)
            if on_batch:
                on_batch(batch.num_rows)
    finally:
        report = producer.close()
    if report.failed:
        raise DeliveryError(f"{report.failed} replayed records were not delivered: " + "; ".join(report.errors[:3]))
    return report


def _rows_of(batch: pa.RecordBatch, dataset: Dataset) -> pa.Table:
    """The batch's events of `dataset`, as that dataset's own columns and types (ingest_ts is stamped anew)."""
    mine = batch.filter(pc.equal(batch.column("rank"), RANK[dataset]))
    target = arrow_schema(dataset)
    columns = [c for c in (*KEY_COLUMNS, *DATASET_COLUMNS[dataset]) if c in target.names]
    return pa.table({c: mine.column(c).cast(target.field(c).type) for c in columns})
