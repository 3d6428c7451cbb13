"""A table's metadata as the read path needs it, parsed from the Iceberg metadata JSON without pyiceberg.

Readers (the query engine, replay, one-shot CLI commands) only need the snapshots, the current schema's field ids
and the partition specs. pyiceberg plus SQLAlchemy take ~0.6 s to import, more than a small query takes, so the
read path parses the few fields it uses itself (Iceberg table spec, format versions 1 and 2); writers keep
pyiceberg. See docs/decisions/0011-query-engine.md.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from k2.errors import CatalogError, SnapshotNotFoundError
from k2.lake.fileio import read_bytes
from k2.lake.snapshots import ancestry

COMPACTION_PROPERTY = "k2.compaction"  # on a compaction snapshot: "<files read> -> <files written>"
BARS_TABLE = "bars_1m"  # the materialized 1-minute bars (lake/bars.py)
BARS_SOURCE_PROPERTY = "k2.bars.source"  # on a bars snapshot: the trades snapshot whose rows it covers


@dataclass(frozen=True)
class SnapshotSummary:
    operation: str | None
    additional_properties: dict[str, str]


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot_id: int
    parent_snapshot_id: int | None
    timestamp_ms: int
    manifest_list: str
    summary: SnapshotSummary

    def property_value(self, name: str) -> str | None:
        return self.summary.additional_properties.get(name)

    @property
    def committed_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.timestamp_ms / 1000, dt.UTC)


@dataclass(frozen=True)
class PartitionFieldInfo:
    source_id: int
    name: str
    transform: str  # as in the spec: "identity", "day", "bucket[16]", ...

    @property
    def buckets(self) -> int | None:
        """N of a bucket[N] transform, else None."""
        if self.transform.startswith("bucket[") and self.transform.endswith("]"):
            return int(self.transform[7:-1])
        return None


@dataclass(frozen=True)
class TableState:
    """One version of a table's metadata (the file at `metadata_location`)."""

    name: str
    metadata_location: str
    snapshots: list[SnapshotInfo]
    current_snapshot_id: int | None
    field_ids: dict[str, int]  # current schema: column name → field id
    specs: dict[int, list[PartitionFieldInfo]]
    refs: dict[str, tuple[int, str]] = field(default_factory=dict)  # name → (snapshot id, "branch" | "tag")
    properties: dict[str, str] = field(default_factory=dict)

    def snapshot_by_id(self, snapshot_id: int) -> SnapshotInfo | None:
        return next((s for s in reversed(self.snapshots) if s.snapshot_id == snapshot_id), None)

    def current_snapshot(self) -> SnapshotInfo | None:
        return self.snapshot_by_id(self.current_snapshot_id) if self.current_snapshot_id is not None else None

    def ancestry(self) -> Iterator[SnapshotInfo]:
        """The current snapshot, then its parent, and so on (rolled-back snapshots are not in it)."""
        return ancestry(self)

    def require_snapshot(self, snapshot_id: int) -> SnapshotInfo:
        snapshot = self.snapshot_by_id(snapshot_id)
        if snapshot is None:
            raise SnapshotNotFoundError(f"{self.name} has no snapshot {snapshot_id}; {self.describe()}")
        return snapshot

    def describe(self, limit: int = 10) -> str:
        """The newest ancestors as 'id (UTC time)', for error messages that must name what exists."""
        shown = [f"{s.snapshot_id} ({s.committed_at:%Y-%m-%d %H:%M:%S})"
                 for _, s in zip(range(limit), self.ancestry(), strict=False)]
        if not shown:
            return "the table has no snapshots yet"
        more = len(self.snapshots) - len(shown)
        return "snapshots: " + ", ".join(shown) + (f" … and {more} older" if more > 0 else "")


def load_state(name: str, metadata_location: str) -> TableState:
    """Parse the metadata file; CatalogError naming it when it cannot be read or is not Iceberg metadata."""
    try:
        return parse_state(name, metadata_location, json.loads(read_bytes(metadata_location)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CatalogError(f"the Iceberg metadata of {name} cannot be read ({metadata_location}): {exc}") from None


def parse_state(name: str, metadata_location: str, raw: dict[str, Any]) -> TableState:
    schemas = raw.get("schemas") or [raw["schema"]]  # v1 files may carry only "schema"
    current_schema_id = raw.get("current-schema-id", schemas[-1].get("schema-id"))
    schema = next((s for s in schemas if s.get("schema-id") == current_schema_id), schemas[-1])
    specs_raw = raw.get("partition-specs") or [{"spec-id": 0, "fields": raw.get("partition-spec", [])}]
    current = raw.get("current-snapshot-id")
    return TableState(
        name=name,
        metadata_location=metadata_location,
        snapshots=[_snapshot(s) for s in raw.get("snapshots", [])],
        current_snapshot_id=None if current in (None, -1) else int(current),
        field_ids={f["name"]: int(f["id"]) for f in schema["fields"]},
        specs={int(s["spec-id"]): [PartitionFieldInfo(int(f["source-id"]), f["name"], f["transform"])
                                   for f in s["fields"]] for s in specs_raw},
        refs={n: (int(r["snapshot-id"]), r["type"]) for n, r in raw.get("refs", {}).items()},
        properties=dict(raw.get("properties", {})),
    )


def _snapshot(raw: dict[str, Any]) -> SnapshotInfo:
    summary = dict(raw.get("summary", {}))
    operation = summary.pop("operation", None)
    parent = raw.get("parent-snapshot-id")
    return SnapshotInfo(
        snapshot_id=int(raw["snapshot-id"]),
        parent_snapshot_id=int(parent) if parent is not None else None,
        timestamp_ms=int(raw["timestamp-ms"]),
        manifest_list=raw["manifest-list"],
        summary=SnapshotSummary(operation, summary),
    )


def changes_no_rows(snapshot: SnapshotInfo) -> bool:
    """A compaction (the same rows in other files), or an append that added none (a batch of duplicates that
    only records its Kafka offsets)."""
    if snapshot.property_value(COMPACTION_PROPERTY) is not None:
        return True
    return snapshot.summary.operation == "append" and snapshot.property_value("added-records") in (None, "0")


def content_snapshot(state: TableState, snapshot_id: int) -> int:
    """The snapshot whose rows `snapshot_id` holds: itself, or the nearest ancestor with the same rows (see
    changes_no_rows)."""
    snapshot = state.snapshot_by_id(snapshot_id)
    while snapshot is not None and changes_no_rows(snapshot):
        parent = snapshot.parent_snapshot_id
        if parent is None or state.snapshot_by_id(parent) is None:
            break
        snapshot = state.snapshot_by_id(parent)
    return snapshot.snapshot_id if snapshot is not None else snapshot_id


def bars_snapshot_for(bars: TableState, trades: TableState, trades_snapshot_id: int) -> int | None:
    """The bars snapshot holding exactly the bars of the trades as of `trades_snapshot_id`; None when the bar
    table does not cover that state (it lags behind the newest commit, or its snapshot for it expired)."""
    wanted = content_snapshot(trades, trades_snapshot_id)
    chain = list(bars.ancestry())  # newest first
    for position, snapshot in enumerate(chain):
        source = snapshot.property_value(BARS_SOURCE_PROPERTY)
        if source is None:
            continue  # a compaction of the bar table
        covered = content_snapshot(trades, int(source))
        if covered == wanted:
            while position > 0 and chain[position - 1].property_value(COMPACTION_PROPERTY) is not None:
                position -= 1  # the same rows, compacted into fewer files
            return chain[position].snapshot_id
        if _is_ancestor(trades, covered, wanted):
            return None  # the newest bars still cover an older state: they lag behind
    return None


def _is_ancestor(state: TableState, older: int, newer: int) -> bool:
    """`older` is `newer` or one of its ancestors."""
    snapshot = state.snapshot_by_id(newer)
    while snapshot is not None:
        if snapshot.snapshot_id == older:
            return True
        parent = snapshot.parent_snapshot_id
        snapshot = state.snapshot_by_id(parent) if parent is not None else None
    return False
