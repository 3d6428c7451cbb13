"""`k2 backup`: a consistent, incremental copy of the lake's tables and the schema registry, taken while
ingestion runs.

Consistency comes from Iceberg itself: the catalog names one metadata file per table, and every file that
metadata reaches (manifest lists, manifests, data files of every kept snapshot) is immutable. One read of the
catalog fixes the state; its files are then copied at leisure while new commits add other files. Only `k2
maintain` deletes files, and only files that expired snapshots held: if one vanishes mid-copy, the backup reads
the catalog again and goes on (what it copied stays). The point's record is written last.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pyiceberg.table import StaticTable

import k2
from k2.errors import RecoveryError
from k2.lake.catalog import open_catalog, table_locations
from k2.lake.expiry import quality_files_named, referenced_files
from k2.lake.fileio import copy_file, file_size, readable
from k2.recovery.points import (
    BackupPoint,
    TablePoint,
    new_point_id,
    object_location,
    save_point,
    stored_objects,
)
from k2.registry.local import LocalSchemaRegistry
from k2.settings import Settings

Progress = Callable[[int, int], None]  # (bytes done, bytes to copy)
_ATTEMPTS = 5


@dataclass(frozen=True)
class BackupReport:
    point: BackupPoint
    files_copied: int
    bytes_copied: int
    files_already_there: int
    attempts: int
    seconds: float


class _Vanished(Exception):
    """A file of the state being copied was deleted (by an expiry) before it was copied."""


@dataclass(frozen=True)
class _LakeState:
    tables: dict[str, TablePoint]
    sources: dict[str, tuple[str, int | None]]  # key → (location, size when known)


def backup(settings: Settings, target: str, workers: int = 4, on_progress: Progress | None = None) -> BackupReport:
    """Copy the lake's current state and the local registry to `target` (a directory or s3://bucket/prefix),
    skipping files an earlier backup there already holds; returns what was done."""
    started = time.monotonic()
    catalog = open_catalog(settings, writable=False)  # also points s3:// locations at the settings' endpoint
    copied = kept = copied_bytes = 0
    for attempt in range(1, _ATTEMPTS + 1):
        created = dt.datetime.now(dt.UTC).replace(microsecond=0)
        state = _lake_state(settings, table_locations(catalog, settings))
        registry = _registry_state(settings)
        present = stored_objects(target)
        missing = {k: v for k, v in state.sources.items() if present.get(k) is None or (
            v[1] is not None and present[k] != v[1])}
        try:
            sizes = _copy_all(missing, target, workers, on_progress)
        except _Vanished:
            continue
        copied += len(sizes)
        copied_bytes += sum(sizes.values())
        kept = len(state.sources) - len(missing)
        files = {k: present[k] for k in state.sources if k not in sizes} | sizes
        point = BackupPoint(
            id=new_point_id(created), created_at=created.isoformat(), namespace=settings.namespace,
            tables=state.tables, files=dict(sorted(files.items())), registry=registry, k2_version=k2.__version__,
            notes=[] if registry is not None else [
                f"schemas are in the external registry {settings.schema_registry_url}: back it up there (its "
                "_schemas topic); K2 records only the lake"],
        )
        save_point(target, point)
        return BackupReport(point, copied, copied_bytes, kept, attempt, time.monotonic() - started)
    raise RecoveryError(f"the lake changed under the backup {_ATTEMPTS} times in a row (files deleted by `k2 "
                        "maintain` before they were copied): run the backup again, or outside maintenance")


def _lake_state(settings: Settings, locations: dict[str, str]) -> _LakeState:
    tables: dict[str, TablePoint] = {}
    wanted: dict[str, str] = {}  # location → table name
    optional: set[str] = set()
    loaded = {name: StaticTable.from_metadata(location, settings.s3_properties())
              for name, location in sorted(locations.items())}
    roots = {name: readable(table.metadata.location).rstrip("/") for name, table in loaded.items()}
    for name, table in loaded.items():
        snapshot = table.current_snapshot()
        rows = int(snapshot.summary.get("total-records", 0)) if snapshot and snapshot.summary else 0
        files = {readable(p) for p in referenced_files(table)}
        logged = {readable(e.metadata_file) for e in table.metadata.metadata_log}
        optional |= logged - {readable(table.metadata_location)}
        files |= {readable(p) for p in quality_files_named([table])}
        for path in files:
            wanted[path] = _owner(path, roots)
        tables[name] = TablePoint(location=roots[name], metadata=_key(readable(table.metadata_location), name, roots),
                                  snapshot_id=snapshot.snapshot_id if snapshot else None, rows=rows)
    sources: dict[str, tuple[str, int | None]] = {}
    for path, owner in sorted(wanted.items()):
        size = file_size(path) if path in optional else None
        if path in optional and size is None:
            continue  # an old metadata file already deleted (write.metadata.delete-after-commit): history only
        sources[_key(path, owner, roots)] = (path, size)
    return _LakeState(tables, sources)


def _owner(path: str, roots: dict[str, str]) -> str:
    for name, root in roots.items():
        if path.startswith(root + "/"):
            return name
    raise RecoveryError(f"{path} is referenced by the lake but lies outside every table's location "
                        f"({', '.join(sorted(roots.values()))}): K2 cannot place it on restore")


def _key(path: str, owner: str, roots: dict[str, str]) -> str:
    return f"{owner}/{path.removeprefix(roots[owner] + '/')}"


def _registry_state(settings: Settings) -> dict[str, object] | None:
    if settings.schema_registry_url:
        return None
    if not settings.registry_dir.exists():
        return {"schemas": {}, "subjects": {}}
    return LocalSchemaRegistry(settings.registry_dir).export_state()


def _copy_all(missing: dict[str, tuple[str, int | None]], target: str, workers: int,
              on_progress: Progress | None) -> dict[str, int]:
    """Copy every missing object (largest first, in parallel); key → bytes copied."""
    known = {key: size if size is not None else file_size(source) for key, (source, size) in missing.items()}
    if any(size is None for size in known.values()):
        raise _Vanished(next(missing[k][0] for k, size in known.items() if size is None))
    order = sorted(missing.items(), key=lambda item: -(known[item[0]] or 0))
    total = sum(size or 0 for size in known.values())
    done = [0]
    lock = threading.Lock()

    def one(key: str, source: str) -> tuple[str, int]:
        try:
            size = copy_file(source, object_location(target, key))
        except OSError as exc:
            if file_size(source) is None:
                raise _Vanished(source) from None
            raise RecoveryError(f"cannot copy {source} to {object_location(target, key)}: {exc}") from None
        with lock:  # reported from the copying thread, as each file lands
            done[0] += size
            if on_progress is not None:
                on_progress(done[0], max(total, done[0]))
        return key, size

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="k2-backup") as pool:
        return dict(pool.map(lambda item: one(item[0], item[1][0]), order))
