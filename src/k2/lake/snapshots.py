"""A table's history as it stands: the current snapshot and its ancestors, rolling back to one of them, tags.

After a rollback the undone snapshots stay in the metadata but are no longer ancestors of the current one, so
everything K2 derives from history (landed offsets, which quality rows count) follows this ancestry, never the
list of all snapshots.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

from k2.errors import ConflictError, InputError, SnapshotNotFoundError

if TYPE_CHECKING:  # readers use lake/metadata.py's lighter objects of the same shape: no pyiceberg import
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot


class SnapshotLike(Protocol):
    @property
    def snapshot_id(self) -> int: ...

    @property
    def parent_snapshot_id(self) -> int | None: ...


S = TypeVar("S", bound=SnapshotLike)


class History(Protocol[S]):
    """pyiceberg's TableMetadata, or the read path's TableState (lake/metadata.py)."""

    @property
    def snapshots(self) -> list[S]: ...

    @property
    def current_snapshot_id(self) -> int | None: ...


def ancestry(metadata: History[S]) -> Iterator[S]:
    """The current snapshot, then its parent, and so on to the first. Lazy, and newest first: each step looks
    for the parent from the end of the snapshot list, where recent snapshots are, so a caller that stops at the
    current snapshot or its parent pays the same with 10 snapshots or 10,000 (pyiceberg's own lookup scans the
    list from the start)."""
    snapshot = _find(metadata.snapshots, metadata.current_snapshot_id)
    steps = 0
    index: dict[int, S] | None = None
    while snapshot is not None:
        yield snapshot
        steps += 1
        if steps < _SCANNED_STEPS:
            snapshot = _find(metadata.snapshots, snapshot.parent_snapshot_id)
            continue
        if index is None:  # a long walk: one index instead of a scan per step
            index = {s.snapshot_id: s for s in metadata.snapshots}
        parent = snapshot.parent_snapshot_id
        snapshot = index.get(parent) if parent is not None else None


_SCANNED_STEPS = 8


def _find(snapshots: list[S], snapshot_id: int | None) -> S | None:
    if snapshot_id is None:
        return None
    return next((s for s in reversed(snapshots) if s.snapshot_id == snapshot_id), None)


def property_of(snapshot: Snapshot, name: str) -> str | None:
    summary = snapshot.summary
    return summary.additional_properties.get(name) if summary is not None else None


def describe_snapshots(table: Table, limit: int = 10) -> str:
    """The newest ancestors as 'id (UTC time)', for error messages that must name what exists."""
    shown = [
        f"{s.snapshot_id} ({dt.datetime.fromtimestamp(s.timestamp_ms / 1000, dt.UTC):%Y-%m-%d %H:%M:%S})"
        for _, s in zip(range(limit), ancestry(table.metadata), strict=False)
    ]
    if not shown:
        return "the table has no snapshots yet"
    more = len(table.metadata.snapshots) - len(shown)
    return "snapshots: " + ", ".join(shown) + (f" … and {more} older" if more > 0 else "")


def require_snapshot(table: Table, snapshot_id: int) -> Snapshot:
    """The snapshot, or SnapshotNotFoundError naming the ones the table has."""
    snapshot = table.metadata.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise SnapshotNotFoundError(f"{table.name()[-1]} has no snapshot {snapshot_id}; {describe_snapshots(table)}")
    return snapshot


def rollback(table: Table, snapshot_id: int) -> Snapshot:
    """Make an ancestor snapshot current again. Ingest then resumes from that snapshot's Kafka offsets and lands
    again what the rollback removed (still in Kafka, within retention)."""
    snapshot = require_snapshot(table, snapshot_id)
    if all(s.snapshot_id != snapshot_id for s in ancestry(table.metadata)):
        raise SnapshotNotFoundError(
            f"snapshot {snapshot_id} is not an ancestor of the current state of {table.name()[-1]} (it was rolled "
            f"back itself); {describe_snapshots(table)}"
        )
    table.manage_snapshots().rollback_to_snapshot(snapshot_id).commit()
    return snapshot


TAG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def tag_snapshot(table: Table, snapshot_id: int, name: str) -> Snapshot:
    """Tag a snapshot of the table's history: the tag pins it (expiry keeps tagged snapshots), so that what the
    lake held then stays answerable (`snapshot_id` on every query). A name already in use is refused, never moved:
    a tag is a record of what was known."""
    if not TAG_NAME.fullmatch(name):
        raise InputError(f"tag {name[:120]!r}: use 1 to 100 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit")
    snapshot = require_snapshot(table, snapshot_id)
    if all(s.snapshot_id != snapshot_id for s in ancestry(table.metadata)):
        raise SnapshotNotFoundError(f"snapshot {snapshot_id} is not in the current history of {table.name()[-1]} "
                                    f"(it was rolled back); {describe_snapshots(table)}")
    if name in table.metadata.refs:
        held = table.metadata.refs[name].snapshot_id
        raise ConflictError(f"{table.name()[-1]} already has a tag or branch {name!r} (on snapshot {held}); "
                         "choose another name")
    table.manage_snapshots().create_tag(snapshot_id, name).commit()
    return snapshot
