"""The `data_quality` table: per landed batch and (exchange, symbol, day), what arrived, landed, was dropped or late.

Exact after any crash (docs/decisions/0009): a batch's quality rows are written to a Parquet file *before* its data
commit, and that data snapshot's summary points to the file and names the batch. Adding the file to this table
is a second commit; if a crash comes between the two, `reconcile` adds it on the next start. Each batch is added
at most once (the quality snapshot names the batch, and a racing writer re-checks after a lost commit), and the
quality view counts only batches in the data table's current ancestry, so a rollback removes their counts too.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.io.pyarrow import parquet_file_to_data_file, write_file
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import Table, WriteTask
from pyiceberg.types import DateType, LongType, NestedField, StringType, TimestamptzType

from k2.lake.snapshots import History, ancestry, property_of
from k2.retry import retry
from k2.settings import Settings

if TYPE_CHECKING:  # the query side imports this module: keep polars (sequences) out of its start-up
    from k2.lake.sequences import Key

QUALITY_TABLE = "data_quality"
BATCH_PROPERTY = "k2.batch"  # on a data snapshot: the id of the batch it landed
QUALITY_FILE_PROPERTY = "k2.quality.file"  # on a data snapshot: that batch's quality rows (a Parquet file)
APPLIED_PROPERTY = "k2.quality.batches"  # on a quality snapshot: the batch ids whose rows it added
# on a data table: batches of kept snapshots that were in the history when an expiry cut the history above them
SETTLED_PROPERTY = "k2.quality.settled"

QUALITY_SCHEMA = Schema(
    NestedField(1, "dataset", StringType(), required=True),
    NestedField(2, "exchange", StringType(), required=True),
    NestedField(3, "symbol", StringType(), required=True),
    NestedField(4, "day", DateType(), required=True, doc="UTC day of the ticks"),
    NestedField(5, "committed_at", TimestamptzType(), required=True),
    NestedField(6, "snapshot_id", LongType(), required=False, doc="unused since batch ids (kept for old rows)"),
    NestedField(7, "received", LongType(), required=True),
    NestedField(8, "landed", LongType(), required=True),
    NestedField(9, "duplicates", LongType(), required=True, doc="dropped: sequence already landed"),
    NestedField(10, "late", LongType(), required=True, doc="landed, but arrived after a higher sequence"),
    NestedField(11, "first_sequence", LongType(), required=True),
    NestedField(12, "last_sequence", LongType(), required=True),
    NestedField(13, "gaps", LongType(), required=True, doc="holes in the landed sequences after this batch"),
    NestedField(14, "missing", LongType(), required=True, doc="sequence numbers inside those holes"),
    NestedField(15, "batch", StringType(), required=False, doc="the batch (data snapshot property k2.batch)"),
)

# K2 retries its own commits to this table, re-checking which batches are in it on every attempt; pyiceberg's
# built-in retry would re-apply the same append blindly and could add a batch twice
QUALITY_PROPERTIES = {"commit.retry.num-retries": "0"}

_COUNTS = ("received", "landed", "duplicates", "late", "first_sequence", "last_sequence", "gaps", "missing")


class QualityCounts(Protocol):
    received: int
    landed: int
    duplicates: int
    late: int
    first_sequence: int
    last_sequence: int
    gaps: int
    missing: int


def new_batch_id() -> str:
    return uuid.uuid4().hex


def ensure_quality_table(catalog: Catalog, settings: Settings) -> Table:
    identifier = (settings.namespace, QUALITY_TABLE)
    try:
        table = catalog.create_table_if_not_exists(identifier, schema=QUALITY_SCHEMA, properties=QUALITY_PROPERTIES)
    except Exception:  # created concurrently by another consumer
        if not catalog.table_exists(identifier):
            raise
        table = catalog.load_table(identifier)
    if "batch" not in table.schema().column_names:  # a table made by an older K2
        with table.update_schema() as update:
            update.union_by_name(QUALITY_SCHEMA)
    if table.properties.get("commit.retry.num-retries") != "0":
        with table.transaction() as transaction:
            transaction.set_properties(QUALITY_PROPERTIES)
    return table


def quality_rows(dataset: str, batch: str, quality: Mapping[Key, QualityCounts]) -> pa.Table:
    keys = list(quality)
    stats = [quality[k] for k in keys]
    now = dt.datetime.now(dt.UTC)
    return pa.table({
        "dataset": [dataset] * len(keys),
        "exchange": [k[0] for k in keys],
        "symbol": [k[1] for k in keys],
        "day": [k[2] for k in keys],
        "committed_at": [now] * len(keys),
        "snapshot_id": pa.nulls(len(keys), pa.int64()),
        **{name: [getattr(s, name) for s in stats] for name in _COUNTS},
        "batch": [batch] * len(keys),
    })


def write_quality_file(table: Table, rows: pa.Table) -> DataFile:
    """The rows as one Parquet file in the quality table's location, not yet part of the table."""
    metadata = table.metadata
    task = WriteTask(uuid.uuid4(), next(itertools.count()), metadata.schema(),
                     rows.cast(metadata.schema().as_arrow()).to_batches())
    (data_file,) = write_file(table.io, metadata, iter([task]))
    return data_file


# how far before a batch's data commit another host's clock may be, when looking for who added its quality rows
_CLOCK_SLACK_MS = 10 * 60 * 1000


def applied_batches(table: Table, since_ms: int | None = None) -> set[str]:
    """Batch ids whose quality rows the table holds (from its snapshot summaries: metadata only). With
    `since_ms`, only quality snapshots from about then on are looked at: rows of a batch committed at that time
    cannot have been added earlier."""
    found: set[str] = set()
    for snapshot in ancestry(table.metadata):
        if since_ms is not None and snapshot.timestamp_ms < since_ms - _CLOCK_SLACK_MS:
            break
        text = property_of(snapshot, APPLIED_PROPERTY)
        if text:
            found.update(text.split(","))
    return found


def apply(
    table: Table, files: dict[str, DataFile], since_ms: int | None = None, give_up_after: float = 120.0
) -> list[str]:
    """Add the quality files of `files` (batch id → file) not yet in the table, in one commit; returns the batch
    ids it added. Several consumers share this table: after a lost commit race it re-checks what is there.
    `since_ms`: the batches' data commit time, which bounds how far back to look."""

    def attempt() -> list[str]:
        table.refresh()
        done = applied_batches(table, since_ms)
        todo = {batch: file for batch, file in files.items() if batch not in done}
        if todo:
            with table.transaction() as transaction, transaction.update_snapshot(
                snapshot_properties={APPLIED_PROPERTY: ",".join(sorted(todo))}
            ).fast_append() as append_files:
                for data_file in todo.values():
                    append_files.append_data_file(data_file)
        return sorted(todo)

    return retry(attempt, CommitFailedException, give_up_after)


def reconcile(data_table: Table, quality_table: Table) -> list[str]:
    """Add the quality files of landed batches that a crash kept out of the quality table; returns their batch
    ids. Looks at the data table's ancestry (metadata only) and reads the footers of just the missing files."""
    data_table.refresh()
    quality_table.refresh()
    done = applied_batches(quality_table)
    missing = {}
    for snapshot in ancestry(data_table.metadata):
        batch, path = property_of(snapshot, BATCH_PROPERTY), property_of(snapshot, QUALITY_FILE_PROPERTY)
        if batch and path and batch not in done:
            missing[batch] = parquet_file_to_data_file(quality_table.io, quality_table.metadata, path)
    return apply(quality_table, missing) if missing else []


def landed_batches(properties: Mapping[str, str], history: History[Any]) -> list[str]:
    """Batch ids whose quality counts stand: those of the current ancestry, and those an expiry settled (kept
    snapshots, e.g. tagged ones, that it cut off from the ancestry; see lake/expiry.py). `properties` and
    `history` are the data table's (pyiceberg's metadata, or the read path's TableState: same shape)."""
    settled = [b for b in properties.get(SETTLED_PROPERTY, "").split(",") if b]
    return [b for s in ancestry(history) if (b := property_of(s, BATCH_PROPERTY))] + settled
