"""Compaction: every partition (day, symbol bucket) that holds several files is rewritten as few large files,
sorted by (symbol, ts, sequence), in one Iceberg overwrite that removes exactly the files it read.

Safe while ingestion appends: an append between the read and the commit makes the commit fail; the table is
refreshed and the same replacement committed on top of the append (appends never remove files, so the files
read are still there and hold the same rows). If another compaction removed one of them first, this one gives up
and changes nothing. The commit carries the newest landed Kafka offsets and batch ids of the ancestry forward,
so that readers of the newest snapshot find them even after older snapshots expire.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from k2.errors import K2Error
from k2.lake.metadata import BARS_SOURCE_PROPERTY, COMPACTION_PROPERTY
from k2.lake.offsets import OFFSETS_PROPERTY
from k2.lake.snapshots import ancestry, property_of
from k2.lake.writer import commit_with_retry, conform, write_data_files
from k2.obs.metrics import COMPACTED_FILES, COMPACTIONS


class CompactionConflict(K2Error):
    """Another compaction replaced files this one read: nothing was changed."""


@dataclass
class CompactionReport:
    partitions: int = 0
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    snapshot_id: int | None = None
    attempts: int = 0


def compact(table: Table, min_files: int = 2, on_partition: Callable[[int, int], None] | None = None,
            give_up_after: float = 300.0) -> CompactionReport:
    """Rewrite each partition with at least `min_files` data files. `on_partition(done, total)` reports
    progress. Returns what was done (nothing when every partition is already compact)."""
    table.refresh()
    report = CompactionReport()
    groups = _files_by_partition(table)
    chosen = [files for files in groups.values() if len(files) >= min_files]
    if not chosen:
        return report
    removed: list[DataFile] = []
    added: list[DataFile] = []
    for done, files in enumerate(chosen, 1):
        rows = pa.concat_tables([conform(_read(table, f), table) for f in files])
        added.extend(write_data_files(table, rows))
        removed.extend(files)
        report.rows += rows.num_rows
        if on_partition is not None:
            on_partition(done, len(chosen))
    report.partitions, report.files_before, report.files_after = len(chosen), len(removed), len(added)
    report.snapshot_id, report.attempts = _commit(table, removed, added, give_up_after)
    COMPACTIONS.labels(table.name()[-1]).inc()
    COMPACTED_FILES.labels(table.name()[-1]).inc(len(removed))
    return report


def _files_by_partition(table: Table) -> dict[tuple[object, ...], list[DataFile]]:
    groups: dict[tuple[object, ...], list[DataFile]] = defaultdict(list)
    if table.current_snapshot() is None:
        return groups
    for task in table.scan().plan_files():
        data = task.file
        groups[(data.spec_id, *(data.partition[i] for i in range(len(data.partition))))].append(data)
    return groups


def _read(table: Table, data_file: DataFile) -> pa.Table:
    with table.io.new_input(data_file.file_path).open() as stream:
        return pq.read_table(stream)


def _commit(table: Table, removed: list[DataFile], added: list[DataFile], give_up_after: float) -> tuple[int, int]:
    removed_paths = {f.file_path for f in removed}

    def attempt(number: int) -> None:
        live = {task.file.file_path for task in table.scan().plan_files()} if number > 1 else removed_paths
        if not removed_paths <= live:
            raise CompactionConflict(
                f"{table.name()[-1]}: another compaction replaced files this one read; nothing was changed"
            )
        summary = {COMPACTION_PROPERTY: f"{len(removed)} -> {len(added)}", **_carried_forward(table)}
        try:
            with table.transaction() as transaction, transaction.update_snapshot(
                snapshot_properties=summary
            ).overwrite() as overwrite:
                for data_file in removed:
                    overwrite.delete_data_file(data_file)
                for data_file in added:
                    overwrite.append_data_file(data_file)
        except ValidationException as exc:
            # pyiceberg checks the files to delete against its own view of the table, which an append landing
            # meanwhile can leave behind (seen in CI): a conflict like any other. The retry refreshes the table and
            # checks again that every file it read is still live before deleting anything.
            if "Missing required files to delete" not in str(exc):
                raise
            raise CommitFailedException(str(exc)[:200]) from None

    committed = commit_with_retry(table, attempt, give_up_after)
    return committed.snapshot_id, committed.attempts


def _carried_forward(table: Table) -> dict[str, str]:
    """The newest landed offsets (data tables) and covered trades snapshot (the bar table) of the ancestry, so
    that the compaction snapshot answers for them even after the snapshots that recorded them expire."""
    carried: dict[str, str] = {}
    for snapshot in ancestry(table.metadata):
        for name in (OFFSETS_PROPERTY, BARS_SOURCE_PROPERTY):
            value = property_of(snapshot, name)
            if value and name not in carried:
                carried[name] = value
        if len(carried) == 2:
            break
    return carried
