"""`k2 restore`: a working K2 from a backup point — the lake's files back in place, every table registered in the
configured catalog at the point's metadata, the local registry's schemas back.

Iceberg metadata names its files by absolute location, so tables return to the locations they were backed up
from (K2 does not rewrite metadata). The catalog itself is rebuilt, not copied: a backup of a SQLite catalog
restores into PostgreSQL or a REST catalog alike. Ingestion then resumes from the Kafka offsets recorded in the
restored snapshots, and lands again whatever the topic still holds beyond them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pyiceberg.exceptions import NamespaceAlreadyExistsError

from k2.errors import RecoveryError
from k2.lake.catalog import catalog_errors, open_catalog, table_locations
from k2.lake.fileio import copy_file, file_size, local_path, readable, use_object_store
from k2.recovery.points import BackupPoint, choose_point, join, object_location
from k2.registry.local import LocalSchemaRegistry
from k2.settings import Settings

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RestoreReport:
    point: BackupPoint
    tables: dict[str, int | None]  # table → current snapshot id after the restore
    files_copied: int
    bytes_copied: int
    files_already_there: int
    schemas_added: int
    replaced: list[str]
    seconds: float


def restore(settings: Settings, source: str, point_id: str | None = None, at: dt.datetime | None = None,
            replace: bool = False, workers: int = 4, on_progress: Progress | None = None) -> RestoreReport:
    """Rebuild the lake and registry of `settings` from a point in `source` (`point_id`, else the newest taken
    at or before `at`, else the newest). A catalog that already holds K2 tables is left alone unless `replace`
    (their catalog entries are then dropped; no file is deleted)."""
    started = time.monotonic()
    use_object_store(settings)  # s3:// backup locations are reached with the settings' endpoint and keys
    point = choose_point(source, point_id, at)
    _check_locations(settings, point)
    if settings.embedded_catalog:  # a destroyed home is the usual reason to restore
        settings.home_path.mkdir(parents=True, exist_ok=True)
    catalog = open_catalog(settings)
    existing = sorted(table_locations(catalog, settings))
    if existing and not replace:
        raise RecoveryError(f"the catalog already holds tables in namespace {settings.namespace!r} ("
                            f"{', '.join(existing)}): restore into an empty home, or pass --replace to drop "
                            "their catalog entries (their files stay)")
    todo = {key: (object_location(source, key), _target(point, key), size) for key, size in point.files.items()}
    missing = {k: v for k, v in todo.items() if file_size(v[1]) != v[2]}
    copied_bytes = _copy_back(missing, workers, on_progress)
    with catalog_errors(settings.namespace):
        for name in existing:
            catalog.drop_table((settings.namespace, name))
        with contextlib.suppress(NamespaceAlreadyExistsError):
            catalog.create_namespace(settings.namespace)
        current = {}
        for name, table in sorted(point.tables.items()):
            metadata = join(table.location, point_metadata_path(point, name))
            registered = catalog.register_table((settings.namespace, name), _as_uri(metadata))
            snapshot = registered.current_snapshot()
            current[name] = snapshot.snapshot_id if snapshot else None
            if current[name] != table.snapshot_id:
                catalog.drop_table((settings.namespace, name))
                raise RecoveryError(_not_kept(settings, name, table.snapshot_id, current[name]))
    added = _restore_registry(settings, point)
    return RestoreReport(point, current, len(missing), copied_bytes, len(todo) - len(missing), added, existing,
                         time.monotonic() - started)


def _not_kept(settings: Settings, name: str, wanted: int | None, got: int | None) -> str:
    if settings.catalog_type == "rest":  # seen with SeaweedFS 4.x: it answers with a new, empty history
        return (f"the REST catalog at {settings.catalog_uri} registered {name} without the snapshots of the metadata "
                f"it was given (snapshot {got}, expected {wanted}): its register-table endpoint does not keep them. "
                "The files are back in place: restore into a SQL catalog instead (K2_CATALOG_TYPE=sql with "
                "K2_CATALOG_URI=postgresql://… or the SQLite default, and the same K2_WAREHOUSE)")
    return f"{name} was restored at snapshot {got}, the backup holds {wanted}: the backup is damaged"


def point_metadata_path(point: BackupPoint, table: str) -> str:
    return point.tables[table].metadata.removeprefix(f"{table}/")


def _target(point: BackupPoint, key: str) -> str:
    table, _, rest = key.partition("/")
    if table not in point.tables:
        raise RecoveryError(f"backup point {point.id} holds {key}, which belongs to no table it records")
    return join(point.tables[table].location, rest)


def _as_uri(location: str) -> str:
    path = local_path(location)
    return location if path is None else f"file://{path}"


def _check_locations(settings: Settings, point: BackupPoint) -> None:
    """Tables come back where they were; with a SQL catalog that must be inside the configured warehouse."""
    if settings.catalog_type == "rest":
        return
    warehouse = readable(settings.resolved_warehouse).rstrip("/")
    outside = sorted(t.location for t in point.tables.values() if not t.location.startswith(warehouse + "/"))
    if outside:
        raise RecoveryError(
            f"backup point {point.id} holds tables at {outside[0]}, outside the configured warehouse {warehouse}: "
            f"Iceberg metadata names its files by location, so restore with K2_HOME or K2_WAREHOUSE set as when "
            "the backup was taken"
        )


def _copy_back(missing: dict[str, tuple[str, str, int]], workers: int, on_progress: Progress | None) -> int:
    total = sum(size for _, _, size in missing.values())
    done = 0

    def one(source: str, target: str) -> int:
        try:
            return copy_file(source, target)
        except OSError as exc:
            raise RecoveryError(f"cannot restore {target} from {source}: {exc}") from None

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="k2-restore") as pool:
        for size in pool.map(lambda v: one(v[0], v[1]), sorted(missing.values(), key=lambda v: -v[2])):
            done += size
            if on_progress is not None:
                on_progress(done, max(total, done))
    return done


def _restore_registry(settings: Settings, point: BackupPoint) -> int:
    if point.registry is None or settings.schema_registry_url:
        return 0
    return LocalSchemaRegistry(settings.registry_dir).import_state(point.registry)
