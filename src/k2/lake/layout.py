"""Physical layout of each table: partitioning and sort order (see docs/decisions/0002-lake-layout.md)."""

from __future__ import annotations

from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER, SortField, SortOrder
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform

from k2.schemas import Dataset
from k2.settings import Settings

_PARTITION_FIELD_BASE = 1000


def partition_spec(dataset: Dataset, schema: Schema, symbol_buckets: int) -> PartitionSpec:
    """Tick tables: day(ts) + bucket(N, symbol). Reference data is small and stays unpartitioned."""
    if dataset in (Dataset.REFERENCE, Dataset.CORPORATE_ACTIONS):
        return UNPARTITIONED_PARTITION_SPEC
    return PartitionSpec(
        PartitionField(schema.find_field("ts").field_id, _PARTITION_FIELD_BASE, DayTransform(), "ts_day"),
        PartitionField(
            schema.find_field("symbol").field_id, _PARTITION_FIELD_BASE + 1, BucketTransform(symbol_buckets),
            "symbol_bucket",
        ),
    )


def sort_order(dataset: Dataset, schema: Schema) -> SortOrder:
    if dataset in (Dataset.REFERENCE, Dataset.CORPORATE_ACTIONS):
        return UNSORTED_SORT_ORDER
    return SortOrder(
        SortField(schema.find_field("symbol").field_id, IdentityTransform()),
        SortField(schema.find_field("ts").field_id, IdentityTransform()),
    )


TABLE_PROPERTIES = {
    "write.parquet.compression-codec": "zstd",
    "write.target-file-size-bytes": str(256 * 1024 * 1024),
    "format-version": "2",
    # K2 retries commits itself: the Kafka offsets in the snapshot summary must be re-merged with the winner's on
    # every attempt, which pyiceberg's built-in retry (re-using the first attempt's summary) would not do
    "commit.retry.num-retries": "0",
}


def table_properties(settings: Settings) -> dict[str, str]:
    """The tick tables' properties: TABLE_PROPERTIES and the row group size (docs/decisions/0019)."""
    return {**TABLE_PROPERTIES, "write.parquet.row-group-limit": str(settings.row_group_rows)}
