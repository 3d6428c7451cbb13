"""One maintenance pass over the lake (materialized bars, compaction, snapshot expiry, orphan files), on demand or
on a schedule.

`k2 maintain` runs one pass; `k2 ingest --maintain-every S` runs one every S seconds on a background thread while
it ingests (each step is safe beside the appends: lake/compaction.py and lake/expiry.py say why).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from k2.lake import bars
from k2.lake.catalog import load_table, open_catalog, table_identifier, with_current_properties
from k2.lake.compaction import CompactionReport, compact
from k2.lake.expiry import (
    ExpiryReport,
    OrphanReport,
    expire_quality_snapshots,
    expire_snapshots,
    quality_files_named,
    remove_orphan_files,
)
from k2.lake.quality import QUALITY_TABLE
from k2.obs.metrics import COMPACTED_FILES, COMPACTIONS
from k2.schemas import Dataset
from k2.settings import Settings

log = logging.getLogger(__name__)
TICK_DATASETS = (Dataset.TRADES, Dataset.QUOTES)


@dataclass
class MaintenanceReport:
    compactions: dict[str, CompactionReport] = field(default_factory=dict)
    expiries: dict[str, ExpiryReport] = field(default_factory=dict)
    quality_expired: int = 0
    bars: bars.BarsRefresh | None = None
    orphans: dict[str, OrphanReport] = field(default_factory=dict)


def maintain(
    settings: Settings, catalog: Catalog | None = None, datasets: tuple[Dataset, ...] = TICK_DATASETS,
    min_files: int = 2, compaction: bool = True, expiry: bool = True,
    on_partition: Callable[[str, int, int], None] | None = None,
) -> MaintenanceReport:
    """Bring the materialized bars up to date, compact the chosen tick tables (and the bars), then expire
    snapshots and remove orphan files across the lake."""
    catalog = catalog or open_catalog(settings)
    report = MaintenanceReport()
    if compaction:
        for dataset in datasets:
            table = load_table(catalog, settings, dataset)
            if table is not None:
                table = with_current_properties(table, settings)  # compaction writes today's layout
                progress = (lambda done, total, d=dataset.value: on_partition(d, done, total)) if on_partition else None
                report.compactions[dataset.value] = compact(table, min_files, on_partition=progress)
    # after the compaction (the bars then cover its snapshot: expiring the ones before it forces no rebuild)
    bars_table = _refresh_bars(settings, catalog, report)
    if compaction and bars_table is not None:
        report.compactions[bars.BARS_TABLE] = compact(bars_table, min_files)
    if expiry:
        _expire(settings, catalog, report)
    return report


def _refresh_bars(settings: Settings, catalog: Catalog, report: MaintenanceReport) -> Table | None:
    """The bar table, up to date with the trades (created and built here for a lake that predates it)."""
    trades = load_table(catalog, settings, Dataset.TRADES)
    if trades is None or not settings.materialize_bars:
        return None
    bars_table = bars.ensure_bars_table(catalog, settings)
    report.bars = bars.refresh(trades, bars_table)
    return bars_table


def _expire(settings: Settings, catalog: Catalog, report: MaintenanceReport) -> None:
    cutoff_ms = int((time.time() - settings.maintain_retain_hours * 3600) * 1000)
    identifier = (settings.namespace, QUALITY_TABLE)
    quality = catalog.load_table(identifier) if catalog.table_exists(identifier) else None
    tables = [t for d in Dataset if (t := load_table(catalog, settings, d)) is not None]
    for table in tables:
        report.expiries[table.name()[-1]] = expire_snapshots(table, quality, cutoff_ms,
                                                             settings.maintain_keep_snapshots)
    if quality is not None:
        report.quality_expired = len(expire_quality_snapshots(quality, tables, cutoff_ms,
                                                              settings.maintain_keep_snapshots))
    named = quality_files_named(tables)
    min_age = settings.maintain_orphan_min_age_hours * 3600
    derived = [catalog.load_table(i) for i in [(settings.namespace, bars.BARS_TABLE)] if catalog.table_exists(i)]
    for table in derived:
        report.expiries[table.name()[-1]] = expire_snapshots(table, None, cutoff_ms, settings.maintain_keep_snapshots)
    for table in [*tables, *([quality] if quality is not None else []), *derived]:
        report.orphans[table.name()[-1]] = remove_orphan_files(table, min_age, named)


class MaintenanceLoop:
    """Runs `maintain` every `every_seconds` on a daemon thread until stopped; a failed pass is logged and the
    next one tries again (maintenance must never stop ingestion)."""

    def __init__(self, settings: Settings, every_seconds: float, datasets: tuple[Dataset, ...]) -> None:
        self._settings = settings
        self._every = every_seconds
        self._datasets = tuple(d for d in datasets if d in TICK_DATASETS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="k2-maintenance", daemon=True)
        self.passes = 0

    def __enter__(self) -> MaintenanceLoop:
        for dataset in self._datasets:  # exported at zero from the start (see obs.metrics.declare_ingest)
            name = table_identifier(self._settings, dataset)[1]
            COMPACTIONS.labels(name)
            COMPACTED_FILES.labels(name)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                maintain(self._settings, datasets=self._datasets)
                self.passes += 1
            except Exception:
                log.warning("maintenance pass failed; the next one tries again", exc_info=True)
