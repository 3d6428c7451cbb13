"""The order of a replay and the columns of its merged stream.

Events are ordered by (ts, sequence, dataset, exchange, symbol), ascending:
- ts: the exchange timestamp (µs, UTC);
- sequence: the exchange's sequence number (per exchange and symbol; across symbols it only breaks ties);
- dataset: at the same (ts, sequence) a quote comes before a trade, as the as-of join reads it: the quote was on
  the book when the trade printed;
- exchange, symbol: the last tie-break, so that the order is total and every replay of the same snapshot is the
  same sequence of events.
(exchange, symbol, sequence) is unique per dataset, so no two events share a key: a cursor names one event.
"""

from __future__ import annotations

import pyarrow as pa

from k2.schemas import Dataset

RANK = {Dataset.QUOTES: 0, Dataset.TRADES: 1}
KIND = {Dataset.QUOTES: "quote", Dataset.TRADES: "trade"}
ORDER_COLUMNS = ("ts", "sequence", "rank", "exchange", "symbol")

_TS = pa.timestamp("us", tz="UTC")
_PRICE = pa.decimal128(18, 8)
# one wide schema for both datasets: the other dataset's columns are null
SCHEMA = pa.schema([
    ("kind", pa.string()), ("rank", pa.int8()), ("exchange", pa.string()), ("symbol", pa.string()), ("ts", _TS),
    ("sequence", pa.int64()),
    ("price", _PRICE), ("size", pa.int64()), ("side", pa.string()), ("trade_id", pa.string()),
    ("conditions", pa.string()), ("venue", pa.string()),
    ("bid_price", _PRICE), ("bid_size", pa.int64()), ("ask_price", _PRICE), ("ask_size", pa.int64()),
])
DATASET_COLUMNS = {
    Dataset.TRADES: ("price", "size", "side", "trade_id", "conditions", "venue"),
    Dataset.QUOTES: ("bid_price", "bid_size", "ask_price", "ask_size"),
}
KEY_COLUMNS = ("exchange", "symbol", "ts", "sequence")
