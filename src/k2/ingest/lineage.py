"""The lineage columns of a consumed batch (docs/decisions/0023-lineage.md): the Kafka partition and offset each
row was read from, and the producer batch that sent it (from the `k2-source` header its first record carries).

All vectorised: the partitions and offsets are the ones the consumer mapped from the C accessors (once, in
`PendingBatch.add`); the producer batch of each row is found by its `ingest_ts` (one value per producer batch) with
one `index_in` over the batch's few distinct values.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Message

from k2.codec.records import MESSAGE_INDEX
from k2.ingest.commit_policy import PendingBatch
from k2.schemas.lineage import SOURCE_HEADER, ProducerBatch

log = logging.getLogger(__name__)


class ProducerBatches:
    """The producer batches this consumer has seen named, by their `ingest_ts`. Bounded: a batch's rows arrive
    within a few consumer batches of its first record, and older entries are only needed by rows already landed
    (whose column holds the description)."""

    def __init__(self, limit: int = 65_536) -> None:
        self._by_ingest_ts: OrderedDict[int, str] = OrderedDict()
        self._limit = limit

    def learn(self, messages: list[Message]) -> None:
        for headers in filter(None, map(Message.headers, messages)):
            for key, value in headers:
                if key == SOURCE_HEADER and value:
                    self._remember(value)

    def _remember(self, value: bytes | str) -> None:
        try:
            batch = ProducerBatch.from_json(value)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring an unreadable %s header (%s): %r", SOURCE_HEADER, exc, value[:200])
            return
        self._by_ingest_ts[batch.ingest_ts] = batch.to_json()
        self._by_ingest_ts.move_to_end(batch.ingest_ts)
        while len(self._by_ingest_ts) > self._limit:
            self._by_ingest_ts.popitem(last=False)

    def column(self, ingest_ts: pa.ChunkedArray | pa.Array) -> pa.DictionaryArray:
        """Each row's producer batch (JSON), null where its batch was not seen named (e.g. a consumer that started
        after the batch's first record: another row of the same batch holds it)."""
        stamps = pc.cast(ingest_ts, pa.int64())
        if isinstance(stamps, pa.ChunkedArray):
            stamps = stamps.combine_chunks()
        distinct = pc.unique(stamps)
        described = pa.array([self._by_ingest_ts.get(v) for v in distinct.to_pylist()], pa.string())
        # dictionary-encoded: validation, de-duplication and the writer's sort move 4-byte indices, not the JSON,
        # and Parquet writes the dictionary as it is
        return pa.DictionaryArray.from_arrays(pc.index_in(stamps, value_set=distinct), described)


def with_lineage(table: pa.Table, pending: PendingBatch, batches: ProducerBatches) -> pa.Table:
    """`table` (decoded rows, with their message index in `pending`) plus source_batch, kafka_partition and
    kafka_offset."""
    index = table.column(MESSAGE_INDEX)
    partitions = pa.array(np.array(pending.partitions, np.int32)).take(index)
    offsets = pa.array(np.array(pending.offsets, np.int64)).take(index)
    table = table.append_column("source_batch", batches.column(table.column("ingest_ts")))
    return table.append_column("kafka_partition", partitions).append_column("kafka_offset", offsets)
