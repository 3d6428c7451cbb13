"""The materialized 1-minute bar table (`bars_1m`): minute partials of the trades, kept up to date at ingest.

Each row is one (symbol, minute) partial (lake/partials.py): open and close with their (ts, sequence), high, low,
volume, trade count and the exact value sum(price x size). Rows of the same key from different batches are
merged when read, so the table only ever appends. Each bars snapshot records in its summary the trades snapshot
whose rows it covers (`k2.bars.source`); readers use the bars only for a trades state they cover exactly
(lake/metadata.bars_snapshot_for), and fall back to ticks otherwise. Why a table, with numbers:
docs/decisions/0011-query-engine.md.

`refresh` brings the table up to the trades table's current snapshot (ingest runs it off the commit path, in a
`BarsRefresher` thread: commits only notify it, commits during a refresh coalesce into the next one, and the end
of an ingest waits for a final refresh):
- appended trades since the covered snapshot: their files' partials are appended (the ingest committer calls
  this after each trades commit; a crash in between is caught up by the next call);
- compactions of the trades table: nothing to read (same rows); an empty commit records the new snapshot;
- anything else (a rollback, an expired covered snapshot, a foreign rewrite): the table is rebuilt from every
  live trades file in one overwrite.
Two refreshers racing (ingest and `k2 maintain`) cannot add a batch twice: the commit requires the bars table
to be unchanged since it was read, and the loser starts over from the new covered snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass

import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NamespaceAlreadyExistsError
from pyiceberg.manifest import DataFile, ManifestEntryStatus
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation, Snapshot
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import DecimalType, LongType, NestedField, StringType, TimestamptzType

from k2.lake.layout import TABLE_PROPERTIES
from k2.lake.metadata import BARS_SOURCE_PROPERTY, BARS_TABLE, COMPACTION_PROPERTY

__all__ = ["BARS_TABLE", "BarsRefresh", "BarsRefresher", "covered_source", "ensure_bars_table", "refresh"]
from k2.lake.partials import MINUTE_US, Partials, coarsen, raw_partials, to_arrow
from k2.lake.snapshots import ancestry, property_of
from k2.lake.writer import write_data_files
from k2.retry import retry
from k2.schemas import SORT_COLUMNS
from k2.settings import Settings

log = logging.getLogger(__name__)

_TS, _PRICE = TimestamptzType(), DecimalType(18, 8)
BARS_SCHEMA = Schema(
    NestedField(1, "exchange", StringType(), required=True),
    NestedField(2, "symbol", StringType(), required=True),
    NestedField(3, "minute", _TS, required=True, doc="start of the minute (UTC)"),
    NestedField(4, "open_ts", _TS, required=True, doc="exchange time of the first trade"),
    NestedField(5, "open_seq", LongType(), required=True, doc="its sequence"),
    NestedField(6, "open", _PRICE, required=True),
    NestedField(7, "close_ts", _TS, required=True, doc="exchange time of the last trade"),
    NestedField(8, "close_seq", LongType(), required=True, doc="its sequence"),
    NestedField(9, "close", _PRICE, required=True),
    NestedField(10, "high", _PRICE, required=True),
    NestedField(11, "low", _PRICE, required=True),
    NestedField(12, "volume", LongType(), required=True),
    NestedField(13, "trades", LongType(), required=True),
    NestedField(14, "value", DecimalType(38, 8), required=True, doc="sum(price x size), exact"),
)
_TRADE_COLUMNS = ["exchange", "symbol", "ts", "sequence", "price", "size"]


@dataclass
class BarsRefresh:
    source: int | None = None  # the trades snapshot the bars now cover
    files_read: int = 0
    rows_written: int = 0
    rebuilt: bool = False
    snapshot_id: int | None = None  # the bars snapshot committed (None: nothing to do)


class _Superseded(Exception):
    """Another refresher moved the bars table between our read and our commit."""


def ensure_bars_table(catalog: Catalog, settings: Settings) -> Table:
    identifier = (settings.namespace, BARS_TABLE)
    minute, symbol = BARS_SCHEMA.find_field("minute").field_id, BARS_SCHEMA.find_field("symbol").field_id
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(settings.namespace)
    try:
        return catalog.create_table_if_not_exists(
            identifier, schema=BARS_SCHEMA,
            partition_spec=PartitionSpec(PartitionField(minute, 1000, DayTransform(), "minute_day")),
            sort_order=SortOrder(SortField(symbol, IdentityTransform()), SortField(minute, IdentityTransform())),
            properties=TABLE_PROPERTIES,
        )
    except Exception:  # created concurrently by another process
        if not catalog.table_exists(identifier):
            raise
        return catalog.load_table(identifier)


def refresh(trades: Table, bars: Table, give_up_after: float = 120.0) -> BarsRefresh:
    """Bring `bars` up to `trades`' current snapshot (see the module doc)."""
    return retry(lambda: _refresh_once(trades, bars), _Superseded, give_up_after)


def _refresh_once(trades: Table, bars: Table) -> BarsRefresh:
    trades.refresh()
    bars.refresh()
    report = BarsRefresh()
    current = trades.current_snapshot()
    covered = covered_source(bars)
    if current is None or covered == current.snapshot_id:
        report.source = covered
        return report
    added = _added_since(trades, covered)
    report.rebuilt = added is None
    files = _live_files(trades) if added is None else added
    # only compactions or empty appends since (added == []): nothing to read; the commit below still records
    # that the bars cover the new snapshot, so that expiring the old one does not force a rebuild
    partials = _partials(trades, files)
    report.files_read, report.source = len(files), current.snapshot_id
    if partials is None:
        log.warning("%s: a minute's value sum does not fit 64 bits; bars for it come from ticks", BARS_TABLE)
        return report
    rows = to_arrow(partials) if len(partials) else None
    data_files = write_data_files(bars, rows) if rows is not None else []
    report.rows_written = rows.num_rows if rows is not None else 0
    report.snapshot_id = _commit(bars, data_files, covered, current.snapshot_id, rebuild=added is None)
    return report


def covered_source(bars: Table) -> int | None:
    """The trades snapshot the bars cover now (the newest recorded in the bar table's ancestry)."""
    for snapshot in ancestry(bars.metadata):
        source = property_of(snapshot, BARS_SOURCE_PROPERTY)
        if source is not None:
            return int(source)
    return None


def _added_since(trades: Table, covered: int | None) -> list[DataFile] | None:
    """Data files the trades appended after `covered`; None when only a rebuild can say (see the module doc)."""
    if covered is None:
        return None
    added: list[DataFile] = []
    for snapshot in ancestry(trades.metadata):
        if snapshot.snapshot_id == covered:
            return added
        if property_of(snapshot, COMPACTION_PROPERTY) is not None:
            continue
        if snapshot.summary is None or snapshot.summary.operation != Operation.APPEND:
            return None
        added.extend(_files_added_by(trades, snapshot))
    return None  # the covered snapshot is not in the history (rolled back, or expired)


def _files_added_by(trades: Table, snapshot: Snapshot) -> list[DataFile]:
    files: list[DataFile] = []
    for manifest in snapshot.manifests(trades.io):
        if manifest.added_snapshot_id != snapshot.snapshot_id:
            continue
        files.extend(entry.data_file for entry in manifest.fetch_manifest_entry(trades.io, discard_deleted=True)
                     if entry.status == ManifestEntryStatus.ADDED and entry.snapshot_id == snapshot.snapshot_id)
    return files


def _live_files(trades: Table) -> list[DataFile]:
    return [task.file for task in trades.scan().plan_files()]


def _partials(trades: Table, files: list[DataFile]) -> Partials | None:
    """Minute partials of the files' trades, merged per (symbol, minute); None when not exact in 64 bits."""
    pieces = []
    for data_file in files:
        with trades.io.new_input(data_file.file_path).open() as stream:
            rows = pq.ParquetFile(stream).read(columns=_TRADE_COLUMNS)
        if rows.num_rows == 0:
            continue
        partials = raw_partials(rows.sort_by([(c, "ascending") for c in SORT_COLUMNS]))
        if partials is None:
            return None
        pieces.append(partials)
    if not pieces:
        return Partials.empty()
    return coarsen(Partials.concat(pieces), MINUTE_US)


def _commit(bars: Table, data_files: list[DataFile], covered: int | None, source: int, rebuild: bool) -> int:
    """One commit recording `source`; a rebuild replaces every bars file. Raises _Superseded when another
    refresher committed since `covered` was read."""
    if covered_source(bars) != covered:
        raise _Superseded
    summary = {BARS_SOURCE_PROPERTY: str(source)}
    existing = [task.file for task in bars.scan().plan_files()] if rebuild and bars.current_snapshot() else []
    try:
        with bars.transaction() as transaction:
            if existing:
                with transaction.update_snapshot(snapshot_properties=summary).overwrite() as overwrite:
                    for data_file in existing:
                        overwrite.delete_data_file(data_file)
                    for data_file in data_files:
                        overwrite.append_data_file(data_file)
            else:
                with transaction.update_snapshot(snapshot_properties=summary).fast_append() as append:
                    for data_file in data_files:
                        append.append_data_file(data_file)
    except CommitFailedException:
        raise _Superseded from None
    snapshot = bars.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id


class BarsRefresher:
    """Keeps the bar table up to date on a thread of its own: a small commit's refresh costs about as much as the
    commit itself (measured: 120 ms per 1,500-row append, 156 ms per refresh), so the lander must not wait for it.
    `notify()` after each trades commit; `close()` waits for a final refresh, so that an ingest that ends leaves
    the bars covering everything it landed. A failed refresh is logged; the next one catches up."""

    def __init__(self, trades: Table, bars: Table) -> None:
        self._trades, self._bars = trades, bars  # this thread's own table objects
        self._wanted = threading.Event()
        self._closing = False
        self._final = True
        self.refreshes = 0
        self._thread = threading.Thread(target=self._run, name="k2-bars", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wanted.set()

    def close(self, final: bool = True, timeout: float = 120.0) -> None:
        self._final = final
        self._closing = True
        self._wanted.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closing and not self._final:  # a failed ingest: nothing more is owed
                return
            try:
                refresh(self._trades, self._bars)
                self.refreshes += 1
            except Exception as exc:  # derived data: a failure here costs nothing the next refresh cannot redo
                log.warning("%s was not brought up to date (%s); the next refresh or `k2 maintain` will", BARS_TABLE,
                            " ".join(str(exc).split())[:300] or type(exc).__name__)
                log.debug("the failed bars refresh", exc_info=True)
            if self._closing and not self._wanted.is_set():
                return
