"""The `data_quality` table: per commit and (exchange, symbol, day), what arrived, landed, was dropped or late.

Appended right after the data commit it describes. Counts of duplicates/late rows come from the consumer; gaps and
missing counts describe the key's state after the commit (derived from what landed, so exact).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Mapping
from typing import Protocol

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import DateType, LongType, NestedField, StringType, TimestamptzType

from k2.lake.sequences import Key
from k2.settings import Settings

QUALITY_TABLE = "data_quality"

QUALITY_SCHEMA = Schema(
    NestedField(1, "dataset", StringType(), required=True),
    NestedField(2, "exchange", StringType(), required=True),
    NestedField(3, "symbol", StringType(), required=True),
    NestedField(4, "day", DateType(), required=True, doc="UTC day of the ticks"),
    NestedField(5, "committed_at", TimestamptzType(), required=True),
    NestedField(6, "snapshot_id", LongType(), required=False, doc="data snapshot this batch landed in"),
    NestedField(7, "received", LongType(), required=True),
    NestedField(8, "landed", LongType(), required=True),
    NestedField(9, "duplicates", LongType(), required=True, doc="dropped: sequence already landed"),
    NestedField(10, "late", LongType(), required=True, doc="landed, but arrived after a higher sequence"),
    NestedField(11, "first_sequence", LongType(), required=True),
    NestedField(12, "last_sequence", LongType(), required=True),
    NestedField(13, "gaps", LongType(), required=True, doc="holes in the landed sequences after this commit"),
    NestedField(14, "missing", LongType(), required=True, doc="sequence numbers inside those holes"),
)


class QualityCounts(Protocol):
    received: int
    landed: int
    duplicates: int
    late: int
    first_sequence: int
    last_sequence: int
    gaps: int
    missing: int


def ensure_quality_table(catalog: Catalog, settings: Settings) -> Table:
    identifier = (settings.namespace, QUALITY_TABLE)
    try:
        return catalog.create_table_if_not_exists(identifier, schema=QUALITY_SCHEMA)
    except Exception:  # created concurrently by another consumer
        if catalog.table_exists(identifier):
            return catalog.load_table(identifier)
        raise


def append_quality(
    table: Table, dataset: str, snapshot_id: int | None, quality: Mapping[Key, QualityCounts]
) -> None:
    if not quality:
        return
    now = dt.datetime.now(dt.UTC)
    keys = list(quality)
    stats = [quality[k] for k in keys]
    columns = {
        "dataset": [dataset] * len(keys),
        "exchange": [k[0] for k in keys],
        "symbol": [k[1] for k in keys],
        "day": [k[2] for k in keys],
        "committed_at": [now] * len(keys),
        "snapshot_id": [snapshot_id] * len(keys),
        **{name: [getattr(s, name) for s in stats] for name in (
            "received", "landed", "duplicates", "late", "first_sequence", "last_sequence", "gaps", "missing")},
    }
    rows = pa.table(columns).cast(table.schema().as_arrow())
    for attempt in range(40):  # several consumers record quality into one table: retry lost commit races
        try:
            table.refresh()
            table.append(rows)
            return
        except CommitFailedException:
            if attempt == 39:
                raise
            time.sleep(min(1.0, 0.02 * 2 ** min(attempt, 6)) * (0.5 + random.random()))
