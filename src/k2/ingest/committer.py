"""The lake committer: lands a prepared batch so that a crash at any step loses nothing and counts nothing twice.

Steps, each a named crash point (k2.faults):
1. write the data files and the batch's quality file (invisible until committed);
2. one Iceberg commit: the data files, the Kafka offsets they came from, and a pointer to the quality file;
3. add the quality file to the data_quality table (reconciled on the next start if a crash skipped it);
   trades also notify the materialized 1-minute bars' refresher (lake/bars.py: a thread of its own);
4. hand the offsets to the consumer thread, which mirrors them to the Kafka group (for lag tools only).
A batch whose every row was a duplicate still commits 2 (an empty snapshot): its offsets and counts must stick.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.table import Table

from k2 import faults
from k2.ingest.prepare import PreparedBatch
from k2.lake import bars, quality, writer
from k2.lake.offsets import LandedOffsets
from k2.obs import tracing
from k2.obs.metrics import (
    INGEST_COMMIT_SECONDS,
    INGEST_COMMITS,
    INGEST_ROWS,
    LAKE_FILES_WRITTEN,
    SEQUENCE_GAPS,
    SEQUENCE_MISSING,
    SEQUENCE_ROWS,
)
from k2.schemas import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Landed:
    snapshot_id: int | None  # None: nothing to commit (every record of the batch was a dead letter)
    rows: int
    commit_attempts: int
    files: int = 0  # data files written


class LakeCommitter:
    def __init__(
        self, dataset: Dataset, table: Table, quality_table: Table | None, topic: str, cluster_id: str,
        crash: faults.CrashPoints, bars_refresher: bars.BarsRefresher | None = None,
    ) -> None:
        self._dataset = dataset
        self._bars = bars_refresher
        self._table = table
        self._quality = quality_table
        self._topic = topic
        self._cluster = cluster_id
        self._crash = crash

    @property
    def table(self) -> Table:
        return self._table

    def follow_cluster(self, cluster_id: str) -> None:
        """Record later offsets as the new cluster's (the broker came back as another cluster)."""
        self._cluster = cluster_id

    def commit(self, batch: PreparedBatch) -> Landed:
        """Land `batch` (runs on the lander thread, strictly in order)."""
        attributes: tracing.Attributes = {"k2.table": ".".join(self._table.name()),
                                          "messaging.destination.name": self._topic}
        with tracing.span("k2.ingest.commit", attributes, parent=batch.trace) as span:
            landed = self._land(batch)
            span.set_attribute("k2.rows", landed.rows)
            span.set_attribute("k2.commit_attempts", landed.commit_attempts)
            span.set_attribute("k2.files", landed.files)
            if landed.snapshot_id is not None:
                span.set_attribute("k2.snapshot_id", landed.snapshot_id)
            return landed

    def _land(self, batch: PreparedBatch) -> Landed:
        checked = batch.checked
        if checked is None:  # nothing decoded into a valid row: re-reading these after a crash is harmless
            return Landed(None, 0, 0)
        self._table.refresh()
        batch_id = quality.new_batch_id()  # names the snapshot, its quality rows and (landed_batch) its rows
        rows = checked.keep
        if rows.num_rows:
            # one dictionary entry: the writer's sort moves indices, not the id (see writer.conform)
            landed = pa.DictionaryArray.from_arrays(pa.repeat(pa.scalar(0, pa.int32()), rows.num_rows), [batch_id])
            rows = rows.append_column("landed_batch", landed)
        data_files = writer.write_data_files(self._table, rows) if rows.num_rows else []
        LAKE_FILES_WRITTEN.labels(self._dataset.value).inc(len(data_files))
        properties = {quality.BATCH_PROPERTY: batch_id}
        quality_file = None
        if self._quality is not None and checked.quality:
            counts = quality.quality_rows(self._dataset.value, batch_id, checked.quality)
            quality_file = (batch_id, quality.write_quality_file(self._quality, counts))
            properties[quality.QUALITY_FILE_PROPERTY] = quality_file[1].file_path
        self._crash.reach(faults.BEFORE_ICEBERG_COMMIT)
        offsets = LandedOffsets(self._cluster, self._topic, batch.next_offsets)
        committed = writer.commit_files(self._table, data_files, offsets, properties)
        log.debug("%s: landed %d rows in snapshot %d, offsets %s", self._topic, checked.keep.num_rows,
                  committed.snapshot_id, batch.next_offsets)
        self._crash.reach(faults.AFTER_ICEBERG_COMMIT)
        if quality_file is not None and self._quality is not None:
            snapshot = self._table.current_snapshot()
            since = snapshot.timestamp_ms if snapshot is not None else None
            quality.apply(self._quality, {quality_file[0]: quality_file[1]}, since_ms=since)
        self._crash.reach(faults.AFTER_QUALITY)
        self._refresh_bars()
        self._export(batch)
        return Landed(committed.snapshot_id, checked.keep.num_rows, committed.attempts, len(data_files))

    def _refresh_bars(self) -> None:
        """The bars are derived data, refreshed off the commit path (lake/bars.BarsRefresher): their readers fall
        back to ticks until a refresh covers the new snapshot."""
        if self._bars is not None:
            self._bars.notify()

    def close(self, failed: bool = False) -> None:
        """After the last commit: wait for the bars to cover it (not after a failure: nothing more is owed)."""
        if self._bars is not None:
            self._bars.close(final=not failed)
            self._bars = None

    def _export(self, batch: PreparedBatch) -> None:
        checked = batch.checked
        assert checked is not None
        dataset = self._dataset.value
        INGEST_ROWS.labels(dataset, "landed").inc(checked.keep.num_rows)
        INGEST_ROWS.labels(dataset, "duplicate").inc(batch.duplicates)
        INGEST_ROWS.labels(dataset, "late").inc(batch.late)
        INGEST_COMMITS.labels(dataset).inc()
        INGEST_COMMIT_SECONDS.labels(dataset).observe(time.perf_counter() - batch.started)
        by_exchange: dict[str, tuple[int, int]] = {}
        for (exchange, symbol, _), counts in checked.quality.items():
            SEQUENCE_GAPS.labels(dataset, exchange, symbol).set(counts.gaps)
            SEQUENCE_MISSING.labels(dataset, exchange, symbol).set(counts.missing)
            duplicates, late = by_exchange.get(exchange, (0, 0))
            by_exchange[exchange] = (duplicates + counts.duplicates, late + counts.late)
        for exchange, (duplicates, late) in by_exchange.items():
            SEQUENCE_ROWS.labels(dataset, exchange, "duplicate").inc(duplicates)
            SEQUENCE_ROWS.labels(dataset, exchange, "late").inc(late)
