"""Sequence tracking per (exchange, symbol, UTC day): duplicates, out-of-order (late) arrivals and gaps.

The contract K2 relies on: an exchange sequence number is unique and increasing per (exchange, symbol) within a
trading day (feeds that reset daily and feeds that never reset both satisfy it). A tick is identified by
(exchange, symbol, day(ts), sequence).

State is a sorted array of landed, inclusive sequence ranges per key. It is derived from the lake itself (the rows
that landed), so it survives restarts and rebalances without a second store: see docs/decisions/0006.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from k2.lake.sequences import EMPTY_RANGES, Key, Ranges, contains, merge, runs

RangeLoader = Callable[[list[Key]], dict[Key, Ranges]]


@dataclass
class KeyQuality:
    """What one batch did to one (exchange, symbol, day), and the key's state after it."""

    received: int = 0
    landed: int = 0
    duplicates: int = 0
    late: int = 0
    first_sequence: int = 0
    last_sequence: int = 0
    gaps: int = 0
    missing: int = 0


@dataclass
class Checked:
    """A batch split by the tracker: rows to land, plus per-key quality for this batch."""

    keep: pa.Table
    quality: dict[Key, KeyQuality]
    new_ranges: dict[Key, Ranges]
    new_keys: list[tuple[object, ...]] = field(default_factory=list)


class SequenceTracker:
    """Decides which rows of a batch are new, counts duplicates/late rows, and tracks gaps."""

    def __init__(self, load: RangeLoader) -> None:
        self._load = load
        self._ranges: dict[Key, Ranges] = {}

    def reset(self) -> None:
        """Forget cached state (after a rebalance another consumer may have landed rows)."""
        self._ranges.clear()

    def _state(self, keys: Iterable[Key]) -> None:
        missing = [k for k in keys if k not in self._ranges]
        if missing:
            loaded = self._load(missing)
            for key in missing:
                self._ranges[key] = loaded.get(key, EMPTY_RANGES)

    def check(self, batch: pa.Table) -> Checked:
        frame = pl.from_arrow(batch.select(["exchange", "symbol", "ts", "sequence"]))
        assert isinstance(frame, pl.DataFrame)
        frame = frame.with_columns(_day=pl.col("ts").dt.convert_time_zone("UTC").dt.date(), _row=pl.int_range(pl.len()))
        groups = frame.group_by(["exchange", "symbol", "_day"], maintain_order=True).agg("_row", "sequence")
        keys: list[Key] = [(e, s, d) for e, s, d in groups.select("exchange", "symbol", "_day").iter_rows()]
        self._state(keys)
        # each group's rows and sequences as slices of two flat arrays (no per-row Python objects)
        bounds = np.concatenate(([0], np.cumsum(groups["_row"].list.len().to_numpy().astype(np.int64))))
        all_rows = groups["_row"].explode().to_numpy().astype(np.int64, copy=False)
        all_sequences = groups["sequence"].explode().to_numpy().astype(np.int64, copy=False)
        keep = np.ones(batch.num_rows, dtype=bool)
        quality: dict[Key, KeyQuality] = {}
        new_ranges: dict[Key, Ranges] = {}
        for key, start, end in zip(keys, bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            rows_np, seqs = all_rows[start:end], all_sequences[start:end]
            landed = self._ranges[key]
            # duplicates: already in the lake, or seen earlier in this batch
            order = np.argsort(seqs, kind="stable")
            repeat_in_batch = np.zeros(len(seqs), dtype=bool)
            repeat_in_batch[order[1:]] = seqs[order[1:]] == seqs[order[:-1]]
            duplicate = contains(landed, seqs) | repeat_in_batch
            # late: lower than something that arrived before it (in the lake or earlier in this batch)
            landed_max = landed[-1, 1] if len(landed) else np.iinfo(np.int64).min
            before = np.concatenate(([landed_max], np.maximum.accumulate(seqs)[:-1]))
            late = (seqs < np.maximum(before, landed_max)) & ~duplicate
            keep[rows_np[duplicate]] = False
            merged = merge(landed, runs(seqs[~duplicate]))
            new_ranges[key] = merged
            quality[key] = KeyQuality(
                received=len(seqs), landed=int((~duplicate).sum()), duplicates=int(duplicate.sum()),
                late=int(late.sum()), first_sequence=int(merged[0, 0]) if len(merged) else 0,
                last_sequence=int(merged[-1, 1]) if len(merged) else 0, gaps=max(0, len(merged) - 1),
                missing=int((merged[1:, 0] - merged[:-1, 1] - 1).sum()) if len(merged) > 1 else 0,
            )
        kept = batch if keep.all() else batch.filter(pa.array(keep))
        return Checked(kept, quality, new_ranges)

    def commit(self, checked: Checked) -> None:
        """Adopt a checked batch's ranges, once its rows are durably in the lake."""
        self._ranges.update(checked.new_ranges)


class NaturalKeyDeduper:
    """Dedup for data without sequence numbers (reference data, corporate actions): a row is new unless its
    natural key already landed. These tables are small, so the landed keys are read once and kept in memory."""

    def __init__(self, columns: tuple[str, ...], load: Callable[[tuple[str, ...]], pa.Table]) -> None:
        self._columns = columns
        self._load = load
        self._seen: set[tuple[object, ...]] | None = None

    def reset(self) -> None:
        self._seen = None

    def check(self, batch: pa.Table) -> Checked:
        if self._seen is None:
            self._seen = set(zip(*(self._load(self._columns).column(c).to_pylist() for c in self._columns),
                                 strict=True))
        keys = list(zip(*(batch.column(c).to_pylist() for c in self._columns), strict=True))
        keep, new = [], []
        batch_seen: set[tuple[object, ...]] = set()
        for key in keys:
            fresh = key not in self._seen and key not in batch_seen
            keep.append(fresh)
            if fresh:
                batch_seen.add(key)
                new.append(key)
        kept = batch if all(keep) else batch.filter(pa.array(keep))
        return Checked(kept, {}, {}, new)

    def commit(self, checked: Checked) -> None:
        if self._seen is not None:
            self._seen.update(checked.new_keys)
