"""Sequence tracking: duplicates dropped, late rows kept and counted, gaps tracked — state derived from the lake."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from k2.ingest.dedup import SequenceTracker
from k2.kafka.producer import with_ingest_ts
from k2.lake import writer
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.sequences import contains, landed_ranges, merge, runs
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades

DAY = dt.date(2026, 3, 2)


def test_range_arithmetic() -> None:
    assert runs(np.array([5, 1, 2, 3, 7, 8, 3])).tolist() == [[1, 3], [5, 5], [7, 8]]
    assert merge(runs(np.array([1, 2, 3, 7])), runs(np.array([4, 5, 9]))).tolist() == [[1, 5], [7, 7], [9, 9]]
    assert merge(np.array([[1, 10]]), np.array([[2, 3], [11, 12]])).tolist() == [[1, 12]]
    assert contains(np.array([[1, 3], [7, 8]]), np.array([0, 1, 3, 4, 7, 9])).tolist() == [
        False, True, True, False, True, False]


def _trades(sequences: list[int], symbol: str = "AAA", day: dt.date = DAY) -> pa.Table:
    base = generate_trades(day, [symbol], len(sequences), seed=1)
    return with_ingest_ts(base.set_column(3, "sequence", pa.array(sequences, pa.int64())))


def test_tracker_against_a_real_table(settings: Settings) -> None:
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    tracker = SequenceTracker(lambda keys: landed_ranges(table, keys))
    key = ("K2X", "AAA", DAY)

    first = tracker.check(_trades([1, 2, 3, 6, 7]))
    assert first.keep.num_rows == 5
    q = first.quality[key]
    assert (q.duplicates, q.late, q.gaps, q.missing) == (0, 0, 1, 2)
    writer.append(table, first.keep)
    tracker.commit(first)

    # duplicates (already landed, and twice in one batch) are dropped; 4 arrives late and fills part of the gap
    second = tracker.check(_trades([3, 4, 8, 8, 7]))
    assert second.keep["sequence"].to_pylist() == [4, 8]
    q = second.quality[key]
    assert (q.received, q.landed, q.duplicates, q.late, q.gaps, q.missing) == (5, 2, 3, 1, 1, 1)
    writer.append(table, second.keep)
    tracker.commit(second)

    # a new tracker (a restarted consumer) derives the same state from the lake alone
    restarted = SequenceTracker(lambda keys: landed_ranges(table, keys))
    third = restarted.check(_trades([1, 5, 9]))
    assert third.keep["sequence"].to_pylist() == [5, 9]
    q = third.quality[key]
    assert (q.duplicates, q.late, q.gaps, q.missing, q.first_sequence, q.last_sequence) == (1, 1, 0, 0, 1, 9)


def test_keys_are_per_symbol_and_day(settings: Settings) -> None:
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    tracker = SequenceTracker(lambda keys: landed_ranges(table, keys))
    batch = pa.concat_tables([_trades([1, 2]), _trades([1, 2], symbol="BBB"),
                              _trades([1, 2], day=DAY + dt.timedelta(days=1))])
    checked = tracker.check(batch)
    assert checked.keep.num_rows == 6  # same sequences, different keys: nothing is a duplicate
    assert set(checked.quality) == {("K2X", "AAA", DAY), ("K2X", "BBB", DAY),
                                    ("K2X", "AAA", DAY + dt.timedelta(days=1))}
