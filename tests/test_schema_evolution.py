"""Schema evolution: trade v2 adds an optional field; v1 and v2 records land in one table, old rows read null."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from confluent_kafka import Producer

from k2.codec.encoder import encode_batch
from k2.ingest import pipeline
from k2.kafka.admin import ensure_topics
from k2.kafka.producer import with_ingest_ts
from k2.lake import writer
from k2.lake.catalog import open_catalog, table_identifier
from k2.lake.layout import TABLE_PROPERTIES, partition_spec, sort_order
from k2.query.engine import QueryEngine
from k2.registry import registry_for
from k2.registry.base import subject_for
from k2.schemas import Dataset, avro_schema
from k2.schemas.iceberg import iceberg_schema
from k2.settings import Settings
from k2.sources.generator import generate_trades


def test_v1_and_v2_trades_share_one_table(kafka_settings: Settings) -> None:
    bootstrap = kafka_settings.kafka_bootstrap or ""
    # an older K2 created the table with trade v1 and landed rows in it
    catalog = open_catalog(kafka_settings)
    catalog.create_namespace_if_not_exists(kafka_settings.namespace)
    v1 = iceberg_schema(Dataset.TRADES, version=1)
    old_table = catalog.create_table(
        table_identifier(kafka_settings, Dataset.TRADES), schema=v1,
        partition_spec=partition_spec(Dataset.TRADES, v1, 16), sort_order=sort_order(Dataset.TRADES, v1),
        properties=TABLE_PROPERTIES,
    )
    assert "venue" not in old_table.schema().column_names
    day = with_ingest_ts(generate_trades(dt.date(2026, 6, 1), ["OLD", "NEW"], 300, seed=2))
    is_old = pa.compute.equal(day["symbol"], "OLD")
    writer.append(old_table, day.filter(is_old).slice(0, 50))

    # old producers still send v1 records; new ones send v2 with a venue
    ensure_topics(kafka_settings, bootstrap)
    registry = registry_for(kafka_settings)
    subject = subject_for(kafka_settings.topic_trades)
    id_v1 = registry.register(subject, avro_schema(Dataset.TRADES, version=1))
    id_v2 = registry.register(subject, avro_schema(Dataset.TRADES))
    assert registry.versions(subject) == [id_v1, id_v2] and id_v1 != id_v2
    old = day.filter(is_old).slice(50)
    new = day.filter(pa.compute.invert(is_old))
    new = new.append_column("venue", pa.array(["XASX"] * new.num_rows))
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in encode_batch(old, avro_schema(Dataset.TRADES, version=1), id_v1).values():
        producer.produce(kafka_settings.topic_trades, value, b"OLD")
    for value in encode_batch(new, avro_schema(Dataset.TRADES), id_v2).values():
        producer.produce(kafka_settings.topic_trades, value, b"NEW")
    assert producer.flush(10) == 0

    report = pipeline.ingest(kafka_settings, bootstrap)
    assert report.rows_landed == old.num_rows + new.num_rows and report.dead_lettered == 0
    engine = QueryEngine(kafka_settings)
    table = engine.table(Dataset.TRADES)
    assert table is not None and "venue" in table.field_ids
    rows = engine.trades(limit=None).to_pylist()
    assert len(rows) == day.num_rows
    assert {r["venue"] for r in rows if r["symbol"] == "OLD"} == {None}  # written before v2, or by v1 producers
    assert {r["venue"] for r in rows if r["symbol"] == "NEW"} == {"XASX"}
