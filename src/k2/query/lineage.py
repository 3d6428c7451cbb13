"""`k2 lineage`: where one landed tick came from, and what happened to it in the lake (docs/decisions/0023).

A tick is found as `k2 query last` finds it (the symbol's last tick at or before a time); its lineage columns then
name the source (file and line, or generator and row), the Kafka record (topic, partition, offset), the producer
batch, the landing batch, and through the table's metadata the snapshot that landed it and, if its file was
rewritten since, the compaction snapshot. For bars back-adjusted for corporate actions, the actions that adjust
the tick are listed with the same lineage: the reference file, its version (SHA-256) and line.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
from pyiceberg.expressions import And, EqualTo, LessThanOrEqual
from pyiceberg.table import Table

from k2.errors import QueryError
from k2.lake.catalog import open_catalog, table_identifier
from k2.lake.fileio import readable
from k2.lake.metadata import COMPACTION_PROPERTY
from k2.lake.offsets import OFFSETS_PROPERTY, LandedOffsets
from k2.lake.quality import BATCH_PROPERTY
from k2.lake.snapshots import property_of
from k2.query.adjust import Adjust, action_instant
from k2.query.plan import to_micros
from k2.schemas import LINEAGE_COLUMNS, Dataset
from k2.schemas.lineage import ProducerBatch
from k2.settings import Settings


@dataclass
class SnapshotRef:
    snapshot_id: int
    committed_at: str  # UTC ISO-8601
    operation: str


@dataclass
class Lineage:
    """One landed row's story, from its source to its current data file."""

    dataset: str
    row: dict[str, Any]  # the row's record fields, as landed
    source: dict[str, Any] | None  # the producer batch's source (schemas/lineage.py), None if unknown
    source_line: int | None
    load: str | None
    producer_batch: int | None
    topic: str | None
    cluster: str | None
    partition: int | None
    offset: int | None
    landed_batch: str | None
    landed_in: SnapshotRef | None  # None: landed by a snapshot expired since (or before lineage was recorded)
    data_file: str
    compacted_in: SnapshotRef | None  # the snapshot that wrote the row's current file, if not the landing one
    adjusted_by: list[Lineage] = field(default_factory=list)  # corporate actions adjusting the tick (--adjust)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))  # type: ignore[no-any-return]


def lineage(settings: Settings, symbol: str, at: dt.datetime, dataset: Dataset = Dataset.TRADES,
            adjust: Adjust = Adjust.NONE) -> Lineage:
    """The lineage of `symbol`'s last `dataset` row at or before `at`."""
    catalog = open_catalog(settings, writable=False)
    table = _load(catalog, settings, dataset)
    time_column = "ts" if dataset in (Dataset.TRADES, Dataset.QUOTES) else (
        "valid_from" if dataset is Dataset.REFERENCE else "ex_date")
    bound: Any = at if time_column != "ex_date" else at.date()
    row = _last_row(table, symbol, time_column, bound)
    if row is None:
        raise QueryError(f"no {dataset} row of {symbol} at or before {at.isoformat()} in the lake")
    found = _explained(table, dataset, row)
    if adjust is not Adjust.NONE and dataset is Dataset.TRADES:
        found.adjusted_by = _adjusting_actions(settings, catalog, symbol, row["ts"], adjust)
    return found


def _load(catalog: Any, settings: Settings, dataset: Dataset) -> Table:
    from pyiceberg.exceptions import NoSuchTableError

    try:
        table: Table = catalog.load_table(table_identifier(settings, dataset))
    except NoSuchTableError:
        raise QueryError(f"the {dataset} table does not exist yet: nothing has landed") from None
    return table


def _paths(table: Table, symbol: str, time_column: str, bound: Any) -> list[str]:
    row_filter = And(EqualTo("symbol", symbol), LessThanOrEqual(time_column, bound.isoformat()))  # type: ignore[call-arg,arg-type]
    scan = table.scan(row_filter=row_filter)
    return [readable(task.file.file_path) for task in scan.plan_files()]


def _last_row(table: Table, symbol: str, time_column: str, bound: Any) -> dict[str, Any] | None:
    paths = _paths(table, symbol, time_column, bound)
    if not paths:
        return None
    order = f"{time_column} DESC" + (", sequence DESC" if "sequence" in table.schema().column_names else "")
    sql = (f"SELECT * FROM read_parquet(?, union_by_name = true, filename = true, hive_partitioning = false) "
           f"WHERE symbol = ? AND {time_column} <= ? ORDER BY {order} LIMIT 1")
    rows = duckdb.connect().execute(sql, [paths, symbol, bound]).to_arrow_table().to_pylist()
    return rows[0] if rows else None


def _explained(table: Table, dataset: Dataset, row: dict[str, Any]) -> Lineage:
    batch_text = row.get("source_batch") or _sibling_batch(table, row)
    batch = ProducerBatch.from_json(batch_text) if batch_text else None
    snapshots = {s.snapshot_id: s for s in table.metadata.snapshots}
    landing = next((s for s in table.metadata.snapshots if row.get("landed_batch")
                    and property_of(s, BATCH_PROPERTY) == row["landed_batch"]), None)
    offsets_text = property_of(landing, OFFSETS_PROPERTY) if landing is not None else None
    offsets = LandedOffsets.from_json(offsets_text) if offsets_text else None
    data_file = row["filename"]
    writer_id = _writing_snapshot(table, data_file)
    writer = snapshots.get(writer_id) if writer_id is not None else None
    compacted = writer if writer is not None and (landing is None or writer.snapshot_id != landing.snapshot_id) \
        else None
    record = {k: v for k, v in row.items() if k not in LINEAGE_COLUMNS and k != "filename"}
    return Lineage(
        dataset=dataset.value, row=record, source=dict(batch.source) if batch else None,
        source_line=row.get("source_line"), load=batch.load if batch else None,
        producer_batch=batch.batch if batch else None, topic=offsets.topic if offsets else None,
        cluster=offsets.cluster_id if offsets else None, partition=row.get("kafka_partition"),
        offset=row.get("kafka_offset"), landed_batch=row.get("landed_batch"),
        landed_in=_ref(landing), data_file=data_file, compacted_in=_ref(compacted),
    )


def _sibling_batch(table: Table, row: dict[str, Any]) -> str | None:
    """The producer batch named on another row of the same batch (same ingest_ts): a consumer that started after
    a batch's first record, or owned another partition, did not see the header that names it."""
    if row.get("ingest_ts") is None:
        return None
    paths = [readable(task.file.file_path) for task in table.scan().plan_files()]
    if not paths:
        return None
    sql = ("SELECT source_batch FROM read_parquet(?, union_by_name = true, hive_partitioning = false) "
           "WHERE ingest_ts = ? AND source_batch IS NOT NULL LIMIT 1")
    found = duckdb.connect().execute(sql, [paths, row["ingest_ts"]]).fetchone()
    return str(found[0]) if found else None


def _writing_snapshot(table: Table, path: str) -> int | None:
    """The snapshot that added the data file now holding the row (a manifest entry keeps it)."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return None
    for entry in _entries(table, snapshot):
        if readable(entry.data_file.file_path) == path:
            return int(entry.snapshot_id)
    return None


def _entries(table: Table, snapshot: Any) -> Iterator[Any]:
    for manifest in snapshot.manifests(table.io):
        yield from manifest.fetch_manifest_entry(table.io, discard_deleted=True)


def _ref(snapshot: Any) -> SnapshotRef | None:
    if snapshot is None:
        return None
    when = dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.UTC).isoformat()
    summary = snapshot.summary
    operation = str(summary.operation.value) if summary is not None else "?"
    if property_of(snapshot, COMPACTION_PROPERTY):
        operation += f" (k2 compaction {property_of(snapshot, COMPACTION_PROPERTY)})"
    return SnapshotRef(snapshot.snapshot_id, when, operation)


def _adjusting_actions(settings: Settings, catalog: Any, symbol: str, at: dt.datetime,
                       adjust: Adjust) -> list[Lineage]:
    """The corporate actions that back-adjust a tick of `symbol` at `at` (query/adjust.py): each one's own
    lineage, so an adjusted price names the files and lines that changed it."""
    from k2.query.engine import QueryEngine
    from k2.query.sessions import Zones

    try:
        table = _load(catalog, settings, Dataset.CORPORATE_ACTIONS)
    except QueryError:
        return []
    paths = [readable(task.file.file_path) for task in table.scan(
        row_filter=EqualTo("symbol", symbol)).plan_files()]  # type: ignore[call-arg,arg-type]
    if not paths:
        return []
    sql = ("SELECT * FROM read_parquet(?, union_by_name = true, filename = true, "
           "hive_partitioning = false) WHERE symbol = ? ORDER BY ex_date")
    rows = duckdb.connect().execute(sql, [paths, symbol]).to_arrow_table().to_pylist()
    zones = Zones(QueryEngine(settings).reference(Dataset.REFERENCE))
    at_us = to_micros(at)
    adjusting = [
        r for r in rows
        if (r["action"] == "SPLIT" and r.get("ratio")) or (r["action"] == "DIVIDEND" and adjust is Adjust.ALL)
        if at_us < action_instant(r["ex_date"], zones.zone(r["exchange"], symbol))
    ]
    return [_explained(table, Dataset.CORPORATE_ACTIONS, r) for r in adjusting]
