"""Snapshot expiry with a retention policy, and the removal of files no snapshot references any more.

What must survive an expiry, and how:
- **Time travel within the retention window**: snapshots younger than the cutoff are kept, and always the newest
  `keep_last` of the current history, the current snapshot, and every tagged or branch snapshot (Iceberg refs).
- **Landed Kafka offsets**: the newest snapshot in the current history that records them is always kept
  (ingest and compaction write them on every commit, so this is normally the current one).
- **Quality counts**: a batch's quality rows count while its snapshot is in the current history. Once that
  snapshot expires, they count because it was in the history when it expired: rows of batches that had been
  rolled back are deleted from the quality table first, so every remaining row of an expired batch is settled.
  Quality snapshots are expired only once no kept data snapshot refers to their batches, so that recovery after
  a crash (quality.reconcile, which compares the two) never mistakes a batch for a missing one.
Orphan files (of expired snapshots, or written by a commit that never happened) are removed only when older than
`min_age`: younger ones may belong to a commit in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import In
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from k2.lake.fileio import delete_file, list_files, readable
from k2.lake.offsets import OFFSETS_PROPERTY
from k2.lake.quality import APPLIED_PROPERTY, BATCH_PROPERTY, QUALITY_FILE_PROPERTY, SETTLED_PROPERTY
from k2.lake.snapshots import ancestry, property_of
from k2.retry import retry


@dataclass
class ExpiryReport:
    expired: list[int] = field(default_factory=list)
    kept: int = 0
    rolled_back_batches: list[str] = field(default_factory=list)  # their quality rows were deleted


def expire_snapshots(table: Table, quality_table: Table | None, older_than_ms: int, keep_last: int) -> ExpiryReport:
    """Expire the table's snapshots older than `older_than_ms` (epoch ms) that the policy does not keep."""

    def attempt() -> ExpiryReport:
        table.refresh()
        history = list(ancestry(table.metadata))
        in_history = {s.snapshot_id for s in history}
        kept = _protected(table, history, keep_last)
        doomed = [s for s in table.metadata.snapshots if s.timestamp_ms < older_than_ms and s.snapshot_id not in kept]
        report = ExpiryReport(kept=len(table.metadata.snapshots) - len(doomed))
        if not doomed:
            return report
        rolled_back = sorted({b for s in doomed if s.snapshot_id not in in_history
                              if (b := property_of(s, BATCH_PROPERTY))})
        _settle_cut_off(table, history, {s.snapshot_id for s in doomed})
        if rolled_back and quality_table is not None:
            quality_table.refresh()
            quality_table.delete(In("batch", rolled_back))  # type: ignore[call-arg,arg-type]
        table.maintenance.expire_snapshots().by_ids([s.snapshot_id for s in doomed]).commit()
        report.expired = [s.snapshot_id for s in doomed]
        report.rolled_back_batches = rolled_back
        return report

    return retry(attempt, CommitFailedException, give_up_after=120.0)


def _settle_cut_off(table: Table, history: list[Snapshot], doomed: set[int]) -> None:
    """Kept snapshots below the first expired one in the history will not be reachable from the current snapshot
    any more: record their batches as settled (a table property), so their quality counts keep standing."""
    first_cut = next((i for i, s in enumerate(history) if s.snapshot_id in doomed), None)
    if first_cut is None:
        return
    below = {b for s in history[first_cut:] if s.snapshot_id not in doomed if (b := property_of(s, BATCH_PROPERTY))}
    still_kept = {b for s in table.metadata.snapshots if s.snapshot_id not in doomed
                  if (b := property_of(s, BATCH_PROPERTY))}
    settled = {b for b in table.properties.get(SETTLED_PROPERTY, "").split(",") if b} & still_kept | below
    if settled != {b for b in table.properties.get(SETTLED_PROPERTY, "").split(",") if b}:
        with table.transaction() as transaction:
            transaction.set_properties({SETTLED_PROPERTY: ",".join(sorted(settled))})


def _protected(table: Table, history: list[Snapshot], keep_last: int) -> set[int]:
    kept = {s.snapshot_id for s in history[:max(1, keep_last)]}
    kept |= {ref.snapshot_id for ref in table.metadata.refs.values()}  # tags, branches (main = current)
    with_offsets = next((s for s in history if property_of(s, OFFSETS_PROPERTY)), None)
    if with_offsets is not None:
        kept.add(with_offsets.snapshot_id)
    return kept


def expire_quality_snapshots(quality_table: Table, data_tables: list[Table], older_than_ms: int,
                             keep_last: int) -> list[int]:
    """Expire quality snapshots older than the cutoff whose batches no kept data snapshot refers to."""
    referenced = {b for t in data_tables for s in t.metadata.snapshots if (b := property_of(s, BATCH_PROPERTY))}

    def attempt() -> list[int]:
        quality_table.refresh()
        history = list(ancestry(quality_table.metadata))
        kept = _protected(quality_table, history, keep_last)
        doomed = [
            s.snapshot_id for s in quality_table.metadata.snapshots
            if s.timestamp_ms < older_than_ms and s.snapshot_id not in kept
            and not referenced & set((property_of(s, APPLIED_PROPERTY) or "").split(","))
        ]
        if doomed:
            quality_table.maintenance.expire_snapshots().by_ids(doomed).commit()
        return doomed

    return retry(attempt, CommitFailedException, give_up_after=120.0)


@dataclass
class OrphanReport:
    removed: int = 0
    bytes: int = 0
    skipped: str | None = None  # why nothing was looked at


def remove_orphan_files(table: Table, min_age_seconds: float, also_referenced: set[str] | None = None) -> OrphanReport:
    """Delete files under the table's location that no kept snapshot or metadata refers to (nor
    `also_referenced`: quality files named by data snapshots) and that are older than `min_age_seconds`. Local
    warehouses and s3:// (listed and deleted with the settings' keys: lake/fileio.py)."""
    table.refresh()
    referenced = referenced_files(table) | {readable(p) for p in also_referenced or set()}
    cutoff = time.time() - min_age_seconds
    report = OrphanReport()
    try:
        stored = list(list_files(table.metadata.location))
    except (OSError, ValueError) as exc:  # an object store without listing rights, an unknown scheme
        return OrphanReport(skipped=f"cannot list {table.metadata.location}: {exc}")
    for found in stored:
        if found.location in referenced or found.modified >= cutoff:
            continue
        delete_file(found.location)
        report.removed += 1
        report.bytes += found.size
    return report


def referenced_files(table: Table) -> set[str]:
    """Every file the table's metadata refers to: metadata files (current and logged), manifest lists, manifests,
    the live data files of every kept snapshot, statistics files."""
    metadata = table.metadata
    paths = {table.metadata_location, *(entry.metadata_file for entry in metadata.metadata_log)}
    for snapshot in metadata.snapshots:
        paths.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            paths.add(manifest.manifest_path)
            # live entries only: a DELETED entry names a file its snapshot's parent held; if that parent is kept,
            # its own manifests list the file as live, and if it expired, nothing can read the file any more
            paths.update(entry.data_file.file_path for entry in manifest.fetch_manifest_entry(table.io, True))
    paths.update(s.statistics_path for s in getattr(metadata, "statistics", []))
    return {readable(p) for p in paths}


def quality_files_named(data_tables: list[Table]) -> set[str]:
    """The quality files the data tables' kept snapshots point to (recovery may still need them)."""
    return {p for t in data_tables for s in t.metadata.snapshots if (p := property_of(s, QUALITY_FILE_PROPERTY))}
