"""Dead-letter topic: records that cannot be landed, with the reason and where they came from.

A dead letter keeps the original key and value bytes, so `k2 dlq replay` can re-drive it to its source topic
unchanged after the cause is fixed (a schema registered, a skew setting changed). Headers carry the context.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from k2.ingest.kafka import consumer_config, producer_config
from k2.settings import Settings

H_ERROR = "k2.error"
H_TOPIC = "k2.source.topic"
H_PARTITION = "k2.source.partition"
H_OFFSET = "k2.source.offset"
H_FAILED_AT = "k2.failed_at"
REPLAY_GROUP_SUFFIX = "-dlq-replay"


class DeadLetterError(RuntimeError):
    """Dead letters could not be written; the batch is not committed so nothing is lost."""


@dataclass(frozen=True)
class DeadLetter:
    source_topic: str
    source_partition: int
    source_offset: int
    error: str
    key: bytes | None
    value: bytes
    failed_at: str
    dlq_partition: int = -1
    dlq_offset: int = -1


class DeadLetterWriter:
    """Produces dead letters and waits for their acknowledgement before the caller commits its batch."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self._topic = settings.topic_dlq
        config = {k: v for k, v in producer_config(settings, bootstrap).items() if k != "delivery.report.only.error"}
        self._producer = Producer(config)
        self._failed: list[str] = []

    def _on_delivery(self, error: KafkaError | None, _message: object) -> None:
        if error is not None:
            self._failed.append(error.str())

    def send(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            headers: dict[str, str | bytes | None] = {
                H_ERROR: letter.error.encode(),
                H_TOPIC: letter.source_topic.encode(),
                H_PARTITION: str(letter.source_partition).encode(),
                H_OFFSET: str(letter.source_offset).encode(),
                H_FAILED_AT: letter.failed_at.encode(),
            }
            self._producer.produce(self._topic, letter.value, letter.key, headers=headers,
                                   on_delivery=self._on_delivery)
        remaining = self._producer.flush(30)
        if remaining or self._failed:
            problems = "; ".join(self._failed[:3]) or f"{remaining} unacknowledged"
            self._failed.clear()
            raise DeadLetterError(f"could not write {len(letters)} dead letters to {self._topic}: {problems}")


    def close(self) -> None:
        self._producer.flush(30)
        del self._producer


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _letter(message: object) -> DeadLetter:
    headers = {k: (v or b"").decode() for k, v in (message.headers() or [])}  # type: ignore[attr-defined]
    return DeadLetter(
        source_topic=headers.get(H_TOPIC, ""),
        source_partition=int(headers.get(H_PARTITION, "-1")),
        source_offset=int(headers.get(H_OFFSET, "-1")),
        error=headers.get(H_ERROR, ""),
        key=message.key(),  # type: ignore[attr-defined]
        value=message.value() or b"",  # type: ignore[attr-defined]
        failed_at=headers.get(H_FAILED_AT, ""),
        dlq_partition=message.partition(),  # type: ignore[attr-defined]
        dlq_offset=message.offset(),  # type: ignore[attr-defined]
    )


class DeadLetterReader:
    """Reads the DLQ topic: everything (no group) or what a replay group has not yet re-driven."""

    def __init__(self, settings: Settings, bootstrap: str, group: str | None = None) -> None:
        self._topic = settings.topic_dlq
        self._group = group
        self._consumer = Consumer(consumer_config(settings, bootstrap, group or f"k2-dlq-list-{time.time_ns()}"))

    def __enter__(self) -> DeadLetterReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._consumer.close()

    def letters(self, idle_seconds: float = 1.5) -> Iterator[DeadLetter]:
        metadata = self._consumer.list_topics(self._topic, timeout=10).topics.get(self._topic)
        if metadata is None or metadata.error is not None:
            return
        partitions = [TopicPartition(self._topic, p) for p in metadata.partitions]
        if self._group is None:
            for tp in partitions:
                tp.offset = OFFSET_BEGINNING
        else:
            committed = self._consumer.committed(partitions, timeout=10)
            for tp, done in zip(partitions, committed, strict=True):
                tp.offset = done.offset if done.offset >= 0 else OFFSET_BEGINNING
        self._consumer.assign(partitions)
        # never rely on the high watermark (Tansu reports the last batch's start + 1): read until idle
        last = time.monotonic()
        while time.monotonic() - last < idle_seconds:
            for message in self._consumer.consume(1000, timeout=0.2):
                if message.error() is None:
                    last = time.monotonic()
                    yield _letter(message)

    def mark_done(self, next_offsets: dict[int, int]) -> None:
        self._consumer.commit(
            offsets=[TopicPartition(self._topic, p, o) for p, o in next_offsets.items()], asynchronous=False
        )


def read_dead_letters(settings: Settings, bootstrap: str) -> list[DeadLetter]:
    with DeadLetterReader(settings, bootstrap) as reader:
        return list(reader.letters())


def replay_dead_letters(settings: Settings, bootstrap: str) -> int:
    """Re-produce every not-yet-replayed dead letter to its source topic; returns how many."""
    producer = Producer(producer_config(settings, bootstrap))
    replayed = 0
    done: dict[int, int] = {}
    with DeadLetterReader(settings, bootstrap, group=settings.consumer_group + REPLAY_GROUP_SUFFIX) as reader:
        for letter in reader.letters():
            producer.produce(letter.source_topic, letter.value, letter.key)
            done[letter.dlq_partition] = letter.dlq_offset + 1
            replayed += 1
        # only after the re-driven records are acknowledged does the replay group move past them
        if producer.flush(30):
            raise DeadLetterError("re-driven dead letters were not acknowledged; nothing marked as replayed")
        if done:
            reader.mark_done(done)
    return replayed
