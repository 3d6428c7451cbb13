"""Rich progress bars around the long-running pipeline stages."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from k2.cli.output import console
from k2.ingest import pipeline
from k2.ingest.consumer import IngestReport
from k2.kafka.producer import DeliveryReport
from k2.lake.maintenance import MaintenanceReport, maintain
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.csv_ticks import Layout
from k2.sources.report import LoadStats


class ShownOnFirstUpdate(Progress):
    """A progress display that appears with its first update, so a command that fails before any work, or finds
    none to do, prints its message alone: no empty bar, no blank line (rich prints one when a display stops)."""

    def __enter__(self) -> ShownOnFirstUpdate:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live.is_started:
            self.stop()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.start()  # a no-op once started
        super().update(*args, **kwargs)

    def advance(self, *args: Any, **kwargs: Any) -> None:
        self.start()
        super().advance(*args, **kwargs)


def _progress() -> Progress:
    return ShownOnFirstUpdate(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    )


def bytes_progress() -> Progress:
    """Bytes done of a total, with the transfer rate: copies (`k2 backup`, `k2 restore`)."""
    return ShownOnFirstUpdate(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                              TimeElapsedColumn(), console=console)


def produce_with_progress(
    settings: Settings, bootstrap: str, table: pa.Table, dataset: Dataset = Dataset.TRADES,
    source: Mapping[str, Any] | None = None,
) -> DeliveryReport:
    with _progress() as bar:
        task = bar.add_task(f"produce {dataset} → Kafka", total=table.num_rows)
        return pipeline.produce_table(
            settings, bootstrap, table, dataset, on_progress=lambda n: bar.advance(task, n), source=source,
        )


def load_with_progress(
    settings: Settings, bootstrap: str, path: Path, layout: Layout | None, symbol: str | None,
    exchange: str | None, company_info: Path | None, dataset: Dataset = Dataset.TRADES,
) -> tuple[LoadStats, DeliveryReport]:
    with _progress() as bar, StopOnSignal() as stop:
        task = bar.add_task(f"load {path.name} ({dataset}) → Kafka", total=None)
        return pipeline.load_csv(
            settings, bootstrap, path, layout, symbol, exchange, company_info,
            on_progress=lambda n: bar.advance(task, n), should_stop=stop.requested, dataset=dataset,
        )


class StopOnSignal:
    """While active, SIGINT/SIGTERM ask the running stage to stop cleanly instead of killing it mid-flush."""

    def __init__(self) -> None:
        self._stop = False
        self._previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self._stop

    def _handle(self, signum: int, _frame: object) -> None:
        self._stop = True
        console.print(f"[yellow]{signal.Signals(signum).name}: finishing the current chunk and flushing …[/]")

    def __enter__(self) -> StopOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        # pyarrow would otherwise cancel a CSV read in progress on SIGINT (ArrowCancelled), losing the chunk
        # instead of letting this handler finish it and stop cleanly
        pa.enable_signal_handlers(False)
        return self

    def __exit__(self, *exc: object) -> None:
        pa.enable_signal_handlers(True)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def ingest_with_progress(
    settings: Settings, bootstrap: str, datasets: list[Dataset], max_messages: int | None = None,
    idle_seconds: float | None = None,
) -> dict[Dataset, IngestReport]:
    """One consumer per dataset, at once, with a bar each counting landed rows."""
    with _progress() as bar:
        tasks = {d: bar.add_task(f"consume {d} → Iceberg", total=max_messages) for d in datasets}
        bar.start()  # shown while it waits for the first records: ingest can wait long

        def update(dataset: Dataset, report: IngestReport) -> None:
            bar.update(tasks[dataset], completed=report.rows_landed)

        return pipeline.ingest_many(settings, bootstrap, datasets, idle_seconds, max_messages, on_progress=update)


def maintain_with_progress(settings: Settings, datasets: tuple[Dataset, ...], min_files: int, compaction: bool,
                           expiry: bool) -> MaintenanceReport:
    with _progress() as bar:
        tasks: dict[str, TaskID] = {}

        def advance(dataset: str, done: int, total: int) -> None:
            if dataset not in tasks:
                tasks[dataset] = bar.add_task(f"compact {dataset}", total=total)
            bar.update(tasks[dataset], completed=done, total=total)

        return maintain(settings, None, datasets, min_files, compaction, expiry, on_partition=advance)
