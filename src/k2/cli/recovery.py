"""`k2 backup` (a consistent, incremental copy of lake and registry, taken while ingestion runs) and `k2 restore`
(a working K2 from one of its points)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from k2.cli.common import HomeOption, parse_time, settings_for, writer_settings

if TYPE_CHECKING:
    from k2.recovery.points import BackupPoint

WorkersOption = Annotated[int, typer.Option(min=1, max=64, help="Files copied at once.")]


@contextmanager
def _bytes_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    from k2.cli.progress import bytes_progress

    with bytes_progress() as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def backup(
    to: Annotated[str, typer.Argument(help="Where the backups go: a directory or s3://bucket/prefix (S3 with the "
                                      "K2_S3_* settings).", show_default=False)],
    home: HomeOption = None,
    workers: WorkersOption = 4,
    list_points: Annotated[bool, typer.Option("--list", help="List the points already in TO instead.")] = False,
) -> None:
    """Back up every table of the lake (all kept snapshots: time travel survives) and the schema registry to TO,
    as a new point. Files a point there already holds are not copied again (incremental). Safe while `k2 ingest`
    and `k2 maintain` run: the point is the lake as one read of the catalog found it."""
    from k2.lake.fileio import use_object_store
    from k2.recovery.points import list_points as points_in

    if list_points:
        use_object_store(settings_for(home))
        _print_points(points_in(to))
        return
    from k2.recovery.backup import backup as back_up

    settings = settings_for(home)
    if settings.embedded_catalog:  # the lake is in K2_HOME: it must be there (a remote catalog needs no home)
        settings.existing_home()
    with _bytes_bar("backup") as progress:
        report = back_up(settings, to, workers, on_progress=progress)
    point = report.point
    typer.echo(f"backup point {point.id}: {len(point.tables)} tables, {len(point.files):,} files; copied "
               f"{report.files_copied:,} ({report.bytes_copied / 1e6:,.1f} MB), {report.files_already_there:,} "
               f"already in {to}; {report.seconds:.1f} s")
    for name, table in sorted(point.tables.items()):
        typer.echo(f"  {name}: snapshot {table.snapshot_id}, {table.rows:,} rows")
    for note in point.notes:
        typer.echo(f"note: {note}")


def restore(
    source: Annotated[str, typer.Argument(help="The backup location given to `k2 backup`.", show_default=False)],
    home: HomeOption = None,
    point: Annotated[str | None, typer.Option(help="The point to restore (default: the newest; see --list).")] = None,
    at: Annotated[str | None, typer.Option(help="Restore the newest point taken at or before this time (ISO, -1h).")]
    = None,
    replace: Annotated[bool, typer.Option(help="Drop the catalog entries of tables the home already has (their "
                                          "files stay).")] = False,
    workers: WorkersOption = 4,
    list_points: Annotated[bool, typer.Option("--list", help="List the points in SOURCE instead.")] = False,
) -> None:
    """Rebuild the lake and schema registry from a backup point: files back in place, tables registered in the
    configured catalog at the point's snapshots. The next `k2 ingest` resumes from the Kafka offsets those
    snapshots recorded and lands again what the topic holds beyond them."""
    from k2.lake.fileio import use_object_store
    from k2.recovery.points import list_points as points_in

    if list_points:
        use_object_store(settings_for(home))
        _print_points(points_in(source))
        return
    from k2.recovery.restore import restore as restore_from

    settings = writer_settings(home)
    with _bytes_bar("restore") as progress:
        report = restore_from(settings, source, point, parse_time(at, "--at"), replace, workers, progress)
    typer.echo(f"restored point {report.point.id} ({report.point.created_at}): {len(report.tables)} tables; "
               f"copied {report.files_copied:,} files ({report.bytes_copied / 1e6:,.1f} MB), "
               f"{report.files_already_there:,} already in place; {report.schemas_added} schemas added; "
               f"{report.seconds:.1f} s")
    for name, snapshot in sorted(report.tables.items()):
        typer.echo(f"  {name}: snapshot {snapshot}, {report.point.tables[name].rows:,} rows")
    if report.replaced:
        typer.echo(f"replaced the catalog entries of: {', '.join(report.replaced)}")
    typer.echo("run `k2 ingest` to land what Kafka holds beyond the restored offsets")


def _print_points(points: list[BackupPoint]) -> None:
    if not points:
        typer.echo("no backup points")
    for point in points:
        rows = ", ".join(f"{name} {t.rows:,}" for name, t in sorted(point.tables.items()) if t.rows)
        typer.echo(f"{point.id}  {point.created_at}  {len(point.files):,} files  {rows}")
