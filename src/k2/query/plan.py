"""Which data files a query must read: kept per table snapshot, pruned with numpy.

A long-lived reader (the API, a notebook, the bench) checks the catalog's pointer to the current metadata on each
query (~0.1 ms on the SQL catalog); only when it moved does it load the new metadata and decode the manifests it
has not seen (one per append). Pruning by time bounds, symbol bounds and the symbol's bucket is then a few numpy
comparisons over the file list. See docs/decisions/0011-query-engine.md for the numbers.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from k2.errors import QueryError
from k2.lake.catalog import catalog_errors, load_table, metadata_location
from k2.lake.files import NO_BUCKET, DataFiles, ManifestIndex, symbol_bucket
from k2.lake.snapshots import ancestry, require_snapshot
from k2.schemas import Dataset
from k2.settings import Settings


def to_micros(value: dt.datetime) -> int:
    """µs since the epoch; a naive datetime is taken as UTC."""
    aware = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
    delta = aware - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class Plan:
    """The files to read for one query, and the snapshot they come from (None: the table is empty)."""

    table: Table | None
    snapshot_id: int | None
    paths: list[str]
    newest: list[int] = field(default_factory=list)  # per path: the upper bound of its ts (µs), when known


@dataclass
class _Known:
    location: str
    table: Table
    manifests: ManifestIndex
    files: OrderedDict[int, DataFiles] = field(default_factory=OrderedDict)


class Planner:
    """Plans for every dataset of one catalog, reused across queries until the table changes."""

    _SNAPSHOTS_KEPT = 8  # file lists of recent snapshots (the current one, and a few time-travel targets)

    def __init__(self, catalog: Catalog, settings: Settings) -> None:
        self._catalog = catalog
        self._settings = settings
        self._known: dict[Dataset, _Known] = {}

    @property
    def decoded_manifests(self) -> int:
        return sum(known.manifests.decoded for known in self._known.values())

    def table(self, dataset: Dataset) -> Table | None:
        """The table as it is now (None: it does not exist yet)."""
        location = metadata_location(self._catalog, self._settings, dataset)
        if location is None:
            self._known.pop(dataset, None)
            return None
        known = self._known.get(dataset)
        if known is None or known.location != location:
            table = load_table(self._catalog, self._settings, dataset)
            if table is None:
                return None
            manifests = known.manifests if known is not None else ManifestIndex(table)
            known = self._known[dataset] = _Known(table.metadata_location, table, manifests)
        return known.table

    def plan(
        self, dataset: Dataset, symbols: list[str] | None = None, start: dt.datetime | None = None,
        end: dt.datetime | None = None, snapshot_id: int | None = None, as_of: dt.datetime | None = None,
    ) -> Plan:
        """Files that may hold rows of `symbols` in [start, end), as of a snapshot id, a wall-clock time, or now."""
        table = self.table(dataset)
        if table is None:
            if snapshot_id is not None:
                raise QueryError(f"snapshot {snapshot_id}: the {dataset.value} table does not exist yet")
            return Plan(None, None, [])
        snapshot = resolve_snapshot(table, snapshot_id, as_of)
        if snapshot is None:
            return Plan(table, None, [])
        files = self._files(dataset, table, snapshot)
        mask = np.ones(len(files), bool)
        if start is not None:
            mask &= files.ts_high >= to_micros(start)
        if end is not None:
            mask &= files.ts_low < to_micros(end)
        if symbols:
            mask &= _may_hold(files, symbols)
        return Plan(table, snapshot.snapshot_id, files.paths[mask].tolist(), files.ts_high[mask].tolist())

    def _files(self, dataset: Dataset, table: Table, snapshot: Snapshot) -> DataFiles:
        known = self._known[dataset]
        files = known.files.get(snapshot.snapshot_id)
        if files is None:
            with catalog_errors(".".join(table.name())):
                files = known.manifests.files(table.io, snapshot)
            known.files[snapshot.snapshot_id] = files
            if len(known.files) > self._SNAPSHOTS_KEPT:
                known.files.popitem(last=False)
        else:
            known.files.move_to_end(snapshot.snapshot_id)
        return files


def resolve_snapshot(table: Table, snapshot_id: int | None, as_of: dt.datetime | None) -> Snapshot | None:
    """The snapshot a query reads: the one named, the newest committed at or before `as_of`, or the current."""
    if snapshot_id is not None and as_of is not None:
        raise QueryError("give a snapshot id or an as-of time, not both")
    if snapshot_id is not None:
        return require_snapshot(table, snapshot_id)
    if as_of is not None:
        cutoff_ms = to_micros(as_of) // 1000
        return next((s for s in ancestry(table.metadata) if s.timestamp_ms <= cutoff_ms), None)
    return table.current_snapshot()


def _may_hold(files: DataFiles, symbols: list[str]) -> np.ndarray:
    bucketed = files.bucket != NO_BUCKET
    counts = np.unique(files.buckets[bucketed]).tolist()
    mask = np.zeros(len(files), bool)
    for symbol in set(symbols):
        in_bounds = (files.symbol_low <= symbol) & (files.symbol_high >= symbol)
        in_bucket = ~bucketed
        for count in counts:
            in_bucket |= (files.buckets == count) & (files.bucket == _bucket(symbol, count))
        mask |= in_bounds & in_bucket
    return mask


@functools.lru_cache(maxsize=65_536)
def _bucket(symbol: str, buckets: int) -> int:
    return symbol_bucket(symbol, buckets)
