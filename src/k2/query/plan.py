"""Which data files a query must read: kept per table snapshot, pruned with numpy.

A long-lived reader (the API, a notebook, the bench) checks the catalog's pointer to the current metadata on each
query (~0.1 ms on the SQL catalog); only when it moved does it load the new metadata and decode the manifests it
has not seen (one per append). Pruning by time bounds, symbol bounds and the symbol's bucket is then a few numpy
comparisons over the file list. See docs/decisions/0011-query-engine.md for the numbers.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from k2.errors import QueryError
from k2.lake.files import NO_BUCKET, DataFiles, ManifestIndex, symbol_bucket
from k2.lake.locate import Locator
from k2.lake.metadata import SnapshotInfo, TableState, load_state
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

    table: TableState | None
    snapshot_id: int | None
    paths: list[str]
    newest: list[int] = field(default_factory=list)  # per path: the upper bound of its ts (µs), when known
    oldest: list[int] = field(default_factory=list)  # per path: the lower bound of its ts (µs), when known


@dataclass
class _Known:
    state: TableState
    manifests: ManifestIndex
    files: OrderedDict[int, DataFiles] = field(default_factory=OrderedDict)


class Planner:
    """Plans for every dataset of one catalog, reused across queries until the table changes."""

    _SNAPSHOTS_KEPT = 8  # file lists of recent snapshots (the current one, and a few time-travel targets)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._locator = Locator(settings)
        self._known: dict[str, _Known] = {}
        self._lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def decoded_manifests(self) -> int:
        return sum(known.manifests.decoded for known in self._known.values())

    def table(self, dataset: Dataset | str) -> TableState | None:
        """The table's metadata as it is now (None: it does not exist yet)."""
        known = self._current(dataset)
        return known.state if known is not None else None

    def _current(self, dataset: Dataset | str) -> _Known | None:
        name = dataset.value if isinstance(dataset, Dataset) else dataset
        location = self._locator.location(name)
        with self._lock:
            known = self._known.get(name)
            if location is None:
                self._known.pop(name, None)
                return None
            if known is not None and known.state.metadata_location == location:
                return known
        state = load_state(f"{self._settings.namespace}.{name}", location)
        with self._lock:
            manifests = known.manifests if known is not None else ManifestIndex()
            known = self._known[name] = _Known(state, manifests)
            return known

    def plan(
        self, dataset: Dataset | str, symbols: list[str] | None = None, start: dt.datetime | None = None,
        end: dt.datetime | None = None, snapshot_id: int | None = None, as_of: dt.datetime | None = None,
    ) -> Plan:
        """Files that may hold rows of `symbols` in [start, end), as of a snapshot id, a wall-clock time, or now."""
        known = self._current(dataset)
        if known is None:
            if snapshot_id is not None:
                name = dataset.value if isinstance(dataset, Dataset) else dataset
                raise QueryError(f"snapshot {snapshot_id}: the {name} table does not exist yet")
            return Plan(None, None, [])
        state = known.state
        snapshot = resolve_snapshot(state, snapshot_id, as_of)
        if snapshot is None:
            return Plan(state, None, [])
        files = self._files(known, snapshot)
        mask = np.ones(len(files), bool)
        if start is not None:
            mask &= files.ts_high >= to_micros(start)
        if end is not None:
            mask &= files.ts_low < to_micros(end)
        if symbols:
            mask &= _may_hold(files, symbols)
        return Plan(state, snapshot.snapshot_id, files.paths[mask].tolist(), files.ts_high[mask].tolist(),
                    files.ts_low[mask].tolist())

    def _files(self, known: _Known, snapshot: SnapshotInfo) -> DataFiles:
        with self._lock:  # decoding is once per manifest; the caches are not thread-safe on their own
            files = known.files.get(snapshot.snapshot_id)
            if files is not None:
                known.files.move_to_end(snapshot.snapshot_id)
                return files
            files = known.manifests.files(known.state, snapshot)
            known.files[snapshot.snapshot_id] = files
            if len(known.files) > self._SNAPSHOTS_KEPT:
                known.files.popitem(last=False)
            return files


def resolve_snapshot(state: TableState, snapshot_id: int | None, as_of: dt.datetime | None) -> SnapshotInfo | None:
    """The snapshot a query reads: the one named, the newest committed at or before `as_of`, or the current."""
    if snapshot_id is not None and as_of is not None:
        raise QueryError("give a snapshot id or an as-of time, not both")
    if snapshot_id is not None:
        return state.require_snapshot(snapshot_id)
    if as_of is not None:
        cutoff_ms = to_micros(as_of) // 1000
        return next((s for s in state.ancestry() if s.timestamp_ms <= cutoff_ms), None)
    return state.current_snapshot()


def _may_hold(files: DataFiles, symbols: list[str]) -> np.ndarray:
    bucketed = files.bucket != NO_BUCKET
    counts = sorted(set(files.buckets[bucketed].tolist()))  # np.unique would import numpy.ma (~10 ms a process)
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
