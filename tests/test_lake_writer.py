"""The lake writer: one file per partition per commit, rows in the table's sort order, partition values right."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.transforms import BucketTransform
from pyiceberg.types import StringType

from k2.kafka.producer import with_ingest_ts
from k2.lake import writer
from k2.lake.catalog import ensure_table, open_catalog
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades

EPOCH = dt.date(1970, 1, 1)


def test_each_file_holds_one_partition_sorted_by_symbol_ts_sequence(settings: Settings) -> None:
    symbols = [f"S{i:02d}" for i in range(40)]
    batch = pa.concat_tables([
        with_ingest_ts(generate_trades(dt.date(2026, 3, 2), symbols, 20_000, seed=1)),
        with_ingest_ts(generate_trades(dt.date(2026, 3, 3), symbols, 20_000, seed=2)),
    ])
    batch = batch.take(pa.array(range(batch.num_rows - 1, -1, -1)))  # arrive in reverse: the writer must sort
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    writer.append(table, batch)

    bucket = BucketTransform(settings.symbol_buckets).transform(StringType())  # the per-value reference path
    files = list(table.scan().plan_files())
    seen_partitions = set()
    for task in files:
        data_file = task.file
        rows = pq.read_table(data_file.file_path.removeprefix("file://"))
        day, symbol_bucket = data_file.partition[0], data_file.partition[1]
        seen_partitions.add((day, symbol_bucket))
        assert {(ts.date() - EPOCH).days for ts in rows["ts"].to_pylist()} == {day}
        assert {bucket(s) for s in rows["symbol"].to_pylist()} == {symbol_bucket}
        keys = list(zip(rows["symbol"].to_pylist(), rows["ts"].to_pylist(), rows["sequence"].to_pylist(),
                        strict=True))
        assert keys == sorted(keys)
        assert data_file.record_count == rows.num_rows
    assert len(seen_partitions) == len(files)  # one file per partition in one commit
    assert sum(f.file.record_count for f in files) == 40_000
    back = table.scan().to_arrow()
    assert pc.sum(back["size"]).as_py() == pc.sum(batch["size"]).as_py()
    assert sorted(zip(back["symbol"].to_pylist(), back["sequence"].to_pylist(), strict=True)) == sorted(
        zip(batch["symbol"].to_pylist(), batch["sequence"].to_pylist(), strict=True))


def test_partition_pruning_sees_the_written_partition_values(settings: Settings) -> None:
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    writer.append(table, with_ingest_ts(generate_trades(dt.date(2026, 3, 2), ["AAA", "BBB", "CCC"], 3_000, seed=3)))
    writer.append(table, with_ingest_ts(generate_trades(dt.date(2026, 3, 4), ["AAA", "BBB", "CCC"], 3_000, seed=4)))
    one_day = "ts >= '2026-03-04T00:00:00+00:00' and ts < '2026-03-05T00:00:00+00:00' and symbol = 'BBB'"
    planned = list(table.scan(row_filter=one_day).plan_files())
    assert len(planned) == 1
    rows = table.scan(row_filter=one_day).to_arrow()
    assert rows.num_rows > 0 and set(rows["symbol"].to_pylist()) == {"BBB"}
