"""`k2 rollback` (undo landed batches by making an earlier snapshot current again), `k2 tag` (pin a snapshot) and
`k2 maintain` (compaction)."""

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
    min_files: Annotated[int, typer.Option(
        min=1, help="Rewrite partitions with at least this many files (1: every partition, e.g. to apply a new "
        "K2_ROW_GROUP_ROWS to files written before).")] = 2,
    compaction: Annotated[bool, typer.Option("--compact/--no-compact", help="Compact partitions.")] = True,
    expiry: Annotated[bool, typer.Option("--expire/--no-expire", help="Expire old snapshots, remove orphans.")] = True,
    retain_hours: Annotated[float | None, typer.Option(min=0, help="Keep snapshots younger than this "
                                                       "(default K2_MAINTAIN_RETAIN_HOURS).")] = None,
    keep: Annotated[int | None, typer.Option(min=1, help="Always keep the newest N snapshots "
                                             "(default K2_MAINTAIN_KEEP_SNAPSHOTS).")] = None,
    orphan_age_hours: Annotated[float | None, typer.Option(min=0, help="Remove unreferenced files older than "
                                                           "this (default K2_MAINTAIN_ORPHAN_MIN_AGE_HOURS).")] = None,
) -> None:
    """Keep the lake fast: compact each partition (day, symbol bucket) with several files into a few large files
    sorted by (symbol, ts, sequence); expire snapshots outside the retention policy (tagged snapshots, the newest
    --keep and those younger than --retain-hours stay); delete files nothing refers to any more. Safe while
    `k2 ingest` runs, and never changes an answer."""
    from k2.cli.progress import maintain_with_progress
    from k2.schemas import Dataset

    chosen = dataset or [Dataset.TRADES.value, Dataset.QUOTES.value]
    for name in chosen:
        choice(name, [Dataset.TRADES.value, Dataset.QUOTES.value], "--dataset")
    settings_for(home).existing_home()
    settings = writer_settings(home, maintain_retain_hours=retain_hours, maintain_keep_snapshots=keep,
                               maintain_orphan_min_age_hours=orphan_age_hours)
    report = maintain_with_progress(settings, tuple(Dataset(n) for n in chosen), min_files, compaction, expiry)
    if (compaction or expiry) and not report.compactions and not report.expiries:
        typer.echo(f"nothing to maintain: the lake has no {' or '.join(chosen)} table yet (`k2 ingest` lands them)")
        return
    for name, done in report.compactions.items():
        if done.partitions == 0:
            typer.echo(f"{name}: already compact (no partition has {min_files} or more files)")
        else:
            typer.echo(f"{name}: {done.partitions} partitions, {done.files_before} files -> {done.files_after}, "
                       f"{done.rows:,} rows rewritten in snapshot {done.snapshot_id}")
    if report.bars is not None:
        built = report.bars
        how = "rebuilt from every trade file" if built.rebuilt else f"{built.files_read} new trade files read"
        typer.echo(f"bars_1m: covers trades snapshot {built.source} ({how}, {built.rows_written:,} minute rows)")
    for name, expired in report.expiries.items():
        if expired.expired:
            typer.echo(f"{name}: expired {len(expired.expired)} snapshots, kept {expired.kept}")
    if report.quality_expired:
        typer.echo(f"data_quality: expired {report.quality_expired} snapshots")
    for name, orphans in report.orphans.items():
        if orphans.skipped:
            typer.echo(f"{name}: orphan files not checked ({orphans.skipped})")
        elif orphans.removed:
            typer.echo(f"{name}: removed {orphans.removed} unreferenced files ({orphans.bytes / 1e6:,.1f} MB)")


def tag(
    name: Annotated[str, typer.Argument(help="The tag: letters, digits, '.', '_' or '-' (e.g. eod-2026-03-02).")],
    snapshot: Annotated[int | None, typer.Option("--snapshot", help="Snapshot id (default: the current one).")] = None,
    home: HomeOption = None,
    dataset: Annotated[str, typer.Option(help="trades | quotes | reference | corporate_actions")] = "trades",
) -> None:
    """Tag a snapshot so that expiry keeps it and it stays answerable (`--snapshot` on every query): what the lake
    held at a day's close, or when a report was made. A tag is never moved."""
    from k2.errors import SnapshotNotFoundError
    from k2.lake.catalog import load_table, open_catalog
    from k2.lake.snapshots import tag_snapshot
    from k2.schemas import Dataset

    choice(dataset, [d.value for d in Dataset], "--dataset")
    settings_for(home).existing_home()
    settings = writer_settings(home)
    table = load_table(open_catalog(settings), settings, Dataset(dataset))
    current = table.current_snapshot() if table is not None else None
    if table is None or current is None:
        raise SnapshotNotFoundError(f"there is no {dataset} snapshot in {settings.home} yet")
    chosen = tag_snapshot(table, snapshot if snapshot is not None else current.snapshot_id, name)
    typer.echo(f"{dataset}: tagged snapshot {chosen.snapshot_id} as {name} (expiry keeps it)")
