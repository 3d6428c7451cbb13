"""Records that cannot be landed go to the dead-letter topic with their reason; the partition never blocks;
`k2 dlq replay` re-drives them after a fix."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest
from confluent_kafka import Producer

from k2.ingest import pipeline
from k2.ingest.avro_codec import encode_batch
from k2.ingest.dlq import read_dead_letters, replay_dead_letters
from k2.ingest.generator import generate_trades
from k2.ingest.kafka import ensure_topics
from k2.ingest.producer import subject_for, with_ingest_ts
from k2.query.engine import QueryEngine
from k2.schemas import Dataset, avro_schema
from k2.settings import Settings

DAY = dt.date(2026, 3, 2)


def _produce_raw(settings: Settings, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for value in values:
        producer.produce(settings.topic_trades, value, b"AAA")
    assert producer.flush(10) == 0


@pytest.mark.parametrize("consume_batch", [10_000, 3])  # 3: the batch is decoded in chunks of 3 records
def test_bad_records_go_to_the_dlq_and_good_ones_land(kafka_settings: Settings, consume_batch: int) -> None:
    kafka_settings = kafka_settings.model_copy(update={"consume_batch": consume_batch})
    bootstrap = kafka_settings.kafka_bootstrap or ""
    ensure_topics(kafka_settings, bootstrap)
    registry = pipeline.registry_for(kafka_settings)
    schema_id = registry.register(subject_for(kafka_settings.topic_trades), avro_schema(Dataset.TRADES))
    trades = with_ingest_ts(generate_trades(DAY, ["AAA"], 10, seed=5))
    good = encode_batch(trades, avro_schema(Dataset.TRADES), schema_id).values()

    negative_size = trades.slice(0, 1).set_column(6, "size", pa.array([-5], pa.int64()))
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    in_future = trades.slice(1, 1).set_column(2, "ts", pa.array([future], pa.timestamp("us", tz="UTC")))
    encode = lambda t: encode_batch(t, avro_schema(Dataset.TRADES), schema_id).values()[0]  # noqa: E731
    # a producer with a newer enum (side SHORT_SELL) framed with our schema id: index 3 of Side does not exist
    sideways = json.loads(json.dumps(avro_schema(Dataset.TRADES)))
    next(f for f in sideways["fields"] if f["name"] == "side")["type"]["symbols"].append("SHORT_SELL")
    unknown_side = trades.slice(6, 1).set_column(7, "side", pa.array(["SHORT_SELL"]))
    unknown_side_value = encode_batch(unknown_side, sideways, schema_id).values()[0]
    bad = [
        encode(negative_size),
        encode(in_future),
        b"\x00\x00\x00\x03\xe7" + good[3][5:],  # schema id 999 is not registered
        b"not avro at all",
        good[4][:12],  # truncated body
        unknown_side_value,
    ]
    _produce_raw(kafka_settings, [good[5], *bad, *good[7:]])

    report = pipeline.ingest(kafka_settings, bootstrap)
    assert report.rows_landed == 4  # good[5], good[7..9]: the bad records in the middle did not block them
    assert report.dead_lettered == 6
    letters = read_dead_letters(kafka_settings, bootstrap)
    reasons = sorted(letter.error for letter in letters)
    assert any("size must be > 0" in r for r in reasons)
    assert any("in the future" in r for r in reasons)
    assert any("schema id 999 is not registered" in r for r in reasons)
    assert any("no Confluent wire-format header" in r for r in reasons)
    assert any("does not decode" in r for r in reasons)
    assert {letter.source_topic for letter in letters} == {kafka_settings.topic_trades}
    assert sum("does not decode" in r for r in reasons) == 2  # the truncated body and the unknown side
    assert sorted(letter.source_offset for letter in letters) == [1, 2, 3, 4, 5, 6]
    assert QueryEngine(kafka_settings).trades(["AAA"], limit=None).num_rows == 4

    # fix the cause of one (allow a larger clock skew), re-drive, re-ingest: it lands, the rest return to the DLQ
    fixed = kafka_settings.model_copy(update={"max_future_skew_seconds": 3 * 86_400})
    assert replay_dead_letters(fixed, bootstrap) == 6
    assert replay_dead_letters(fixed, bootstrap) == 0  # already re-driven
    again = pipeline.ingest(fixed, bootstrap)
    assert (again.rows_landed, again.dead_lettered) == (1, 5)
    assert QueryEngine(kafka_settings).trades(["AAA"], limit=None).num_rows == 5
