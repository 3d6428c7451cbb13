"""A backup point: what one `k2 backup` captured, written last so that a point exists only when complete.

A backup location holds `objects/<table>/<path under the table's location>` (immutable lake files: each is
copied once, and later points share it, which makes backups incremental) and `points/<id>.json`.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from k2.errors import RecoveryError
from k2.lake.fileio import list_files, read_bytes, write_bytes

FORMAT = 1


@dataclass(frozen=True)
class TablePoint:
    """One table as the point holds it: where its files lived and which metadata file was current."""

    location: str  # the table's root location when backed up (its metadata names files under it)
    metadata: str  # key of the current metadata file in the backup
    snapshot_id: int | None
    rows: int


@dataclass(frozen=True)
class BackupPoint:
    id: str
    created_at: str  # ISO 8601, UTC
    namespace: str
    tables: dict[str, TablePoint]
    files: dict[str, int]  # key → size
    registry: dict[str, Any] | None  # the local registry's state; None for an external registry
    k2_version: str
    format: int = FORMAT
    notes: list[str] = field(default_factory=list)

    @property
    def created(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.created_at)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> BackupPoint:
        raw = json.loads(text)
        if raw.get("format") != FORMAT:
            raise RecoveryError(f"backup point {raw.get('id')!r} has format {raw.get('format')}; this K2 reads "
                                f"format {FORMAT}")
        raw["tables"] = {name: TablePoint(**t) for name, t in raw["tables"].items()}
        return BackupPoint(**raw)


def new_point_id(now: dt.datetime) -> str:
    return f"{now:%Y%m%dT%H%M%S}Z-{secrets.token_hex(3)}"


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def object_location(root: str, key: str) -> str:
    return join(root, "objects", key)


def stored_objects(root: str) -> dict[str, int]:
    """Key → size of every object already in the backup location."""
    prefix = join(root, "objects") + "/"
    return {f.location.removeprefix(prefix): f.size for f in list_files(join(root, "objects"))}


def save_point(root: str, point: BackupPoint) -> None:
    write_bytes(join(root, "points", f"{point.id}.json"), point.to_json().encode())


def list_points(root: str) -> list[BackupPoint]:
    """Every complete point in the location, oldest first."""
    try:
        found = [f.location for f in list_files(join(root, "points")) if f.location.endswith(".json")]
    except (OSError, ValueError) as exc:
        raise RecoveryError(f"cannot list the backups in {root}: {exc}") from None
    points = [BackupPoint.from_json(read_bytes(location).decode()) for location in found]
    return sorted(points, key=lambda p: (p.created_at, p.id))


def choose_point(root: str, point_id: str | None = None, at: dt.datetime | None = None) -> BackupPoint:
    """The point named `point_id`, else the newest taken at or before `at`, else the newest."""
    points = list_points(root)
    if not points:
        raise RecoveryError(f"there is no backup in {root} (run `k2 backup {root}` first)")
    if point_id is not None:
        chosen = [p for p in points if p.id == point_id]
        if not chosen:
            raise RecoveryError(f"no backup point {point_id!r} in {root}; it has: "
                                + ", ".join(p.id for p in points[-10:]))
        return chosen[0]
    if at is not None:
        before = [p for p in points if p.created <= at]
        if not before:
            raise RecoveryError(f"no backup in {root} was taken at or before {at.isoformat()}; the oldest is "
                                f"{points[0].id} ({points[0].created_at})")
        return before[-1]
    return points[-1]
