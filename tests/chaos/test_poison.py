"""Chaos: a poison record (bytes that are not K2's Avro) in every batch the consumer reads. Each goes to the
dead-letter topic with its offset; every good record around it lands once; the partition never blocks."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from k2.codec.encoder import encode_batch
from k2.kafka.admin import ensure_topics
from k2.kafka.dead_letters import read_dead_letters
from k2.kafka.producer import with_ingest_ts
from k2.registry import registry_for
from k2.registry.base import subject_for
from k2.schemas import Dataset, avro_schema
from k2.settings import Settings
from tests.chaos.workload import assert_every_tick_once, finish, start_ingest, trades

pytestmark = pytest.mark.slow
EVERY = 100  # one poison record after every 100 good ones of a symbol; the consumer reads 500 per batch


def test_a_poison_record_in_every_batch_costs_only_itself(kafka_settings: Settings) -> None:
    settings = kafka_settings
    bootstrap = settings.kafka_bootstrap or ""
    ensure_topics(settings, bootstrap)
    schema_id = registry_for(settings).register(subject_for(settings.topic_trades), avro_schema(Dataset.TRADES))
    good = trades(1, 8_000)
    values = encode_batch(with_ingest_ts(good), avro_schema(Dataset.TRADES), schema_id).values()
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    poison: list[bytes] = []
    seen: dict[str, int] = {}
    for symbol, value in zip(good["symbol"].to_pylist(), values, strict=True):
        producer.produce(settings.topic_trades, value, symbol.encode())
        seen[symbol] = seen.get(symbol, 0) + 1
        if seen[symbol] % EVERY == 0:
            bad = f"poison {symbol} #{seen[symbol] // EVERY}".encode()
            producer.produce(settings.topic_trades, bad, symbol.encode())
            poison.append(bad)
        producer.poll(0)
    assert producer.flush(30) == 0

    out = finish(start_ingest(settings))
    assert f"landed {good.num_rows:,} rows" in out, out
    assert_every_tick_once(settings, [good])
    letters = read_dead_letters(settings, bootstrap)
    assert sorted(letter.value for letter in letters) == sorted(poison)  # each poison record once, nothing else
    assert all("no Confluent wire-format header" in letter.error for letter in letters)
