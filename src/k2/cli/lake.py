"""`k2 rollback` (undo landed batches by making an earlier snapshot current again) and `k2 maintain` (compaction)."""

from __future__ import annotations

from typing import Annotated

import typer

from k2.cli.common import HomeOption, choice, settings_for, writer_settings


def rollback(
    to: Annotated[int, typer.Option("--to", help="Snapshot id to make current (see `k2 query snapshots`).")],
    home: HomeOption = None,
    dataset: Annotated[str, typer.Option(help="trades | quotes | reference | corporate_actions")] = "trades",
) -> None:
    """Roll a table back to an earlier snapshot. The next `k2 ingest` resumes from that snapshot's Kafka offsets
    and lands again what the rollback removed (as long as Kafka still holds it); the removed batches' quality
    counts stop counting."""
    from k2.errors import SnapshotNotFoundError
    from k2.lake.catalog import load_table, open_catalog
    from k2.lake.snapshots import rollback as roll_back
    from k2.schemas import Dataset

    choice(dataset, [d.value for d in Dataset], "--dataset")
    settings_for(home).existing_home()  # nothing to roll back in a home that does not exist
    settings = writer_settings(home)
    table = load_table(open_catalog(settings), settings, Dataset(dataset))
    if table is None:
        raise SnapshotNotFoundError(f"there is no {dataset} table in {settings.home} yet")
    before = table.current_snapshot()
    snapshot = roll_back(table, to)
    was = before.snapshot_id if before else None
    typer.echo(f"{dataset}: current snapshot is now {snapshot.snapshot_id} (was {was}); run `k2 ingest` to land "
               "again what was rolled back")


def maintain(
    home: HomeOption = None,
    dataset: Annotated[list[str] | None, typer.Option(help="trades | quotes (repeatable; default: both)")] = None,
    min_files: Annotated[int, typer.Option(min=2, help="Rewrite partitions with at least this many files.")] = 2,
) -> None:
    """Compact the tick tables: each partition (day, symbol bucket) with several files becomes a few large files
    sorted by (symbol, ts, sequence), in one commit that never changes an answer. Safe while `k2 ingest` runs."""
    from k2.cli.progress import compact_with_progress
    from k2.lake.catalog import load_table, open_catalog
    from k2.schemas import Dataset

    chosen = dataset or [Dataset.TRADES.value, Dataset.QUOTES.value]
    for name in chosen:
        choice(name, [Dataset.TRADES.value, Dataset.QUOTES.value], "--dataset")
    settings_for(home).existing_home()
    settings = writer_settings(home)
    catalog = open_catalog(settings)
    for name in chosen:
        table = load_table(catalog, settings, Dataset(name))
        if table is None:
            typer.echo(f"{name}: no table yet")
            continue
        report = compact_with_progress(table, min_files)
        if report.partitions == 0:
            typer.echo(f"{name}: already compact (no partition has {min_files} or more files)")
            continue
        typer.echo(f"{name}: {report.partitions} partitions, {report.files_before} files -> {report.files_after}, "
                   f"{report.rows:,} rows rewritten in snapshot {report.snapshot_id}")
