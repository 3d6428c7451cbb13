"""Records that cannot be landed go to the dead-letter topic with their reason; the partition never blocks;
`k2 dlq replay` re-drives them after a fix."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from k2.codec.encoder import encode_batch
from k2.errors import DeadLetterError
from k2.ingest import pipeline
from k2.kafka.admin import ensure_topics
from k2.kafka.broker import start_broker, stop_process
from k2.kafka.dead_letters import (
    REPLAY_GROUP_SUFFIX,
    DeadLetter,
    DeadLetterWriter,
    now_iso,
    read_dead_letters,
    replay_dead_letters,
)
from k2.kafka.groups import committed as group_committed
from k2.kafka.producer import with_ingest_ts
from k2.query.engine import QueryEngine
from k2.registry import registry_for
from k2.registry.base import subject_for
from k2.schemas import Dataset, avro_schema
from k2.settings import BrokerKind, Settings
from k2.sources.generator import generate_trades
from tests.services import brokers_under_test

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
    registry = registry_for(kafka_settings)
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
        encode(trades.slice(7, 1).set_column(1, "symbol", pa.array(["X" * 9_960]))),  # from a producer that
    ]  # does not check lengths: the consumer bounds every field the schema bounds
    _produce_raw(kafka_settings, [good[5], *bad, *good[7:]])

    from prometheus_client import REGISTRY

    def exported() -> float:
        return REGISTRY.get_sample_value("k2_dead_letters_total", {"topic": kafka_settings.topic_trades}) or 0.0

    before = exported()
    report = pipeline.ingest(kafka_settings, bootstrap)
    assert report.rows_landed == 4  # good[5], good[7..9]: the bad records in the middle did not block them
    assert report.dead_lettered == 7
    assert exported() - before == 7  # and the metric says so
    letters = read_dead_letters(kafka_settings, bootstrap)
    reasons = sorted(letter.error for letter in letters)
    assert any("size must be > 0" in r for r in reasons)
    assert any("in the future" in r for r in reasons)
    assert any("schema id 999 is not registered" in r for r in reasons)
    assert any("no Confluent wire-format header" in r for r in reasons)
    assert any("does not decode" in r for r in reasons)
    assert {letter.source_topic for letter in letters} == {kafka_settings.topic_trades}
    assert sum("does not decode" in r for r in reasons) == 2  # the truncated body and the unknown side
    assert "symbol is longer than 32 bytes" in reasons
    assert sorted(letter.source_offset for letter in letters) == [1, 2, 3, 4, 5, 6, 7]
    assert QueryEngine(kafka_settings).trades(["AAA"], limit=None).num_rows == 4

    # fix the cause of one (allow a larger clock skew), re-drive, re-ingest: it lands, the rest return to the DLQ
    fixed = kafka_settings.model_copy(update={"max_future_skew_seconds": 3 * 86_400})
    assert replay_dead_letters(fixed, bootstrap).replayed == 7
    assert replay_dead_letters(fixed, bootstrap).replayed == 0  # already re-driven
    again = pipeline.ingest(fixed, bootstrap)
    assert (again.rows_landed, again.dead_lettered) == (1, 6)
    assert QueryEngine(kafka_settings).trades(["AAA"], limit=None).num_rows == 5


def _values_in(settings: Settings, topic: str) -> set[bytes]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"k2-test-read-{time.time_ns()}",
                         "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    values: set[bytes] = set()
    idle = time.monotonic()
    while time.monotonic() - idle < 2:
        for message in consumer.consume(10_000, timeout=0.2):
            if message.error() is None:
                values.add(message.value() or b"")
                idle = time.monotonic()
    consumer.close()
    return values


LETTERS = 200_000


def _dlq_partition(settings: Settings) -> int:
    """The dead-letter partition the letters went to (one key, so one partition)."""
    (letter, *_) = read_dead_letters(settings, settings.kafka_bootstrap or "")
    return letter.dlq_partition


def _settled_replay_offsets(settings: Settings) -> dict[int, int]:
    """The replay group's offsets once they stop moving: a commit the stopped broker had not answered is still in
    its socket, and it may apply it on waking (harmless: it covers only acknowledged letters)."""
    group = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                      "group.id": settings.consumer_group + REPLAY_GROUP_SUFFIX, "enable.auto.commit": False})
    previous: dict[int, int] | None = None
    for _ in range(30):
        committed = group_committed(group, [TopicPartition(settings.topic_dlq, p) for p in range(4)])
        offsets = {tp.partition: max(tp.offset, 0) for tp in committed}
        if offsets == previous:
            break
        previous = offsets
        time.sleep(1)
    group.close()
    return offsets


@pytest.mark.slow
@pytest.mark.parametrize("kind", brokers_under_test())
def test_replay_marks_only_what_the_broker_acknowledged(kind: BrokerKind, tmp_path: Path) -> None:
    """The broker stops (SIGSTOP) in the middle of `k2 dlq replay`: the replay fails with a clear error, and every
    dead letter it marked as replayed is in the source topic; the rest are re-driven by the next replay."""
    state, process = start_broker(kind, tmp_path / "broker")
    tag = uuid.uuid4().hex[:8]
    settings = Settings(home=tmp_path / "home", kafka_bootstrap=state.bootstrap, topic_trades=f"src-{tag}",
                        topic_dlq=f"dlq-{tag}", consumer_group=f"g-{tag}", producer_message_timeout_ms=3_000,
                        dlq_replay_chunk=2_000)
    env = {**os.environ, "K2_HOME": str(settings.home), "K2_KAFKA_BOOTSTRAP": state.bootstrap,
           "K2_TOPIC_TRADES": settings.topic_trades, "K2_TOPIC_DLQ": settings.topic_dlq,
           "K2_CONSUMER_GROUP": settings.consumer_group, "K2_PRODUCER_MESSAGE_TIMEOUT_MS": "3000",
           "K2_DLQ_REPLAY_CHUNK": "2000"}
    try:
        ensure_topics(settings, state.bootstrap)
        letters = [DeadLetter(settings.topic_trades, 0, i, "test", b"K", f"letter-{i}".encode(), now_iso())
                   for i in range(LETTERS)]
        writer = DeadLetterWriter(settings, state.bootstrap)
        writer.send(letters)
        writer.close()
        replay = subprocess.Popen([sys.executable, "-m", "k2.cli", "dlq", "replay"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watcher = Consumer({"bootstrap.servers": state.bootstrap,
                            "group.id": settings.consumer_group + REPLAY_GROUP_SUFFIX, "enable.auto.commit": False})
        progress = [TopicPartition(settings.topic_dlq, p) for p in range(4)]
        deadline = time.monotonic() + 120
        while not any(tp.offset > 0 for tp in group_committed(watcher, progress)):  # a first chunk is marked
            assert time.monotonic() < deadline and replay.poll() is None, "the replay never marked a letter"
            time.sleep(0.01)
        os.kill(state.pid, signal.SIGSTOP)  # the broker stops answering, mid-replay
        try:
            _, err = replay.communicate(timeout=180)
        finally:
            os.kill(state.pid, signal.SIGCONT)
        watcher.close()
        message = " ".join(err.split())
        assert replay.returncode == 1, err
        assert "error:" in message and "Traceback" not in err
        assert "not acknowledged" in message or "could not record" in message, err

        marked = _settled_replay_offsets(settings)
        assert 0 < sum(marked.values()) < LETTERS, f"the broker stopped too late or too early: {marked}"
        in_source = _values_in(settings, settings.topic_trades)
        marked_letters = {letter.value for letter in read_dead_letters(settings, state.bootstrap)
                          if letter.dlq_offset < marked.get(letter.dlq_partition, 0)}
        assert len(marked_letters) == sum(marked.values())
        assert marked_letters <= in_source  # nothing marked replayed that the broker did not take

        again = subprocess.run([sys.executable, "-m", "k2.cli", "dlq", "replay"], env=env, capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        replayed = int(re.search(r"re-drove ([\d,]+) dead letters", again.stdout).group(1).replace(",", ""))  # type: ignore[union-attr]
        assert replayed == LETTERS - sum(marked.values())
        assert _values_in(settings, settings.topic_trades) == {letter.value for letter in letters}
    finally:
        stop_process(state, process)


def test_a_letter_the_broker_refuses_is_never_marked_replayed(kafka_settings: Settings) -> None:
    """Deterministic: the broker refuses one re-driven letter (its source topic is not a valid name). Everything
    before it is marked replayed, it and everything after it are not, and the replay says which letter failed."""
    settings = kafka_settings.model_copy(update={"dlq_replay_chunk": 2_000, "producer_message_timeout_ms": 5_000})
    bootstrap = settings.kafka_bootstrap or ""
    ensure_topics(settings, bootstrap)
    letters = [DeadLetter("in valid!" if i == 3_000 else settings.topic_trades, 0, i, "test", b"K",
                          f"letter-{i}".encode(), now_iso()) for i in range(6_000)]
    writer = DeadLetterWriter(settings, bootstrap)
    writer.send(letters)
    writer.close()
    # brokers differ in how they refuse it (Tansu: invalid topic; noida: unknown topic, which librdkafka may then
    # refuse itself before sending): either way it is not acknowledged
    with pytest.raises(DeadLetterError, match=r"(Invalid|Unknown) topic.*3,000 acknowledged ones are marked replayed"):
        replay_dead_letters(settings, bootstrap)
    assert _settled_replay_offsets(settings) == {0: 0, 1: 0, 2: 0, 3: 0} | {_dlq_partition(settings): 3_000}
    assert {f"letter-{i}".encode() for i in range(3_000)} <= _values_in(settings, settings.topic_trades)
