"""Dead-letter topic: records that cannot be landed, with the reason and where they came from.

A dead letter keeps the original key and value bytes, so `k2 dlq replay` can re-drive it to its source topic
unchanged after the cause is fixed (a schema registered, a skew setting changed). Headers carry the context.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from k2.errors import DeadLetterError
from k2.kafka.config import close_consumer, consumer_config, producer_config
from k2.kafka.groups import committed as committed_offsets
from k2.obs.metrics import DEAD_LETTERS
from k2.settings import Settings

H_ERROR = "k2.error"
H_TOPIC = "k2.source.topic"
H_PARTITION = "k2.source.partition"
H_OFFSET = "k2.source.offset"
H_FAILED_AT = "k2.failed_at"
REPLAY_GROUP_SUFFIX = "-dlq-replay"


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


def _acknowledging_producer(settings: Settings, bootstrap: str) -> Producer:
    """A producer that reports every delivery, not only failures: each record's fate is checked."""
    config = {k: v for k, v in producer_config(settings, bootstrap).items() if k != "delivery.report.only.error"}
    return Producer(config)


class DeadLetterWriter:
    """Produces dead letters and waits for their acknowledgement before the caller commits its batch."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self._topic = settings.topic_dlq
        self._settings = settings
        self._bootstrap = bootstrap
        self._producer: Producer | None = None  # created on first use: constructing a writer does no I/O
        self._failed: list[str] = []

    def _on_delivery(self, error: KafkaError | None, _message: object) -> None:
        if error is not None:
            self._failed.append(error.str())

    def send(self, letters: list[DeadLetter]) -> None:
        if self._producer is None:
            self._producer = _acknowledging_producer(self._settings, self._bootstrap)
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
        for letter in letters:
            DEAD_LETTERS.labels(letter.source_topic).inc()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(30)
            self._producer = None


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def letter_of(message: Message) -> DeadLetter:
    headers: dict[str, str] = {}
    for key, value in list(message.headers() or []):  # type: ignore[str-unpack]  # stubs: headers may be a str
        headers[str(key)] = value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")
    return DeadLetter(
        source_topic=headers.get(H_TOPIC, ""),
        source_partition=int(headers.get(H_PARTITION, "-1")),
        source_offset=int(headers.get(H_OFFSET, "-1")),
        error=headers.get(H_ERROR, ""),
        key=message.key(),
        value=message.value() or b"",
        failed_at=headers.get(H_FAILED_AT, ""),
        dlq_partition=message.partition() or 0,
        dlq_offset=message.offset() or 0,
    )


class DeadLetterReader:
    """Reads the DLQ topic: everything (no group) or what a replay group has not yet re-driven."""

    def __init__(self, settings: Settings, bootstrap: str, group: str | None = None) -> None:
        self._topic = settings.topic_dlq
        self._group = group
        self._config = consumer_config(settings, bootstrap, group or f"k2-dlq-list-{time.time_ns()}")
        self._consumer = Consumer(self._config)
        self._marker: Consumer | None = None  # commits progress (see mark_done)
        self._commit_results: list[KafkaError | None] = []

    def __enter__(self) -> DeadLetterReader:
        return self

    def __exit__(self, *exc: object) -> None:
        close_consumer(self._consumer)
        if self._marker is not None:
            close_consumer(self._marker)

    def letters(self, idle_seconds: float = 1.5) -> Iterator[DeadLetter]:
        metadata = self._consumer.list_topics(self._topic, timeout=10).topics.get(self._topic)
        if metadata is None or metadata.error is not None:
            return
        partitions = [TopicPartition(self._topic, p) for p in metadata.partitions]
        if self._group is None:
            for tp in partitions:
                tp.offset = OFFSET_BEGINNING
        else:
            committed = committed_offsets(self._consumer, partitions)
            for tp, done in zip(partitions, committed, strict=True):
                tp.offset = done.offset if done.offset >= 0 else OFFSET_BEGINNING
        self._consumer.assign(partitions)
        # never rely on the high watermark (Tansu reports the last batch's start + 1): read until idle. Idle is
        # measured over empty polls only, not over the time the caller spends between letters (re-driving them)
        quiet_since: float | None = None
        while quiet_since is None or time.monotonic() - quiet_since < idle_seconds:
            letters = [letter_of(m) for m in self._consumer.consume(1000, timeout=0.2) if m.error() is None]
            quiet_since = (quiet_since or time.monotonic()) if not letters else None
            yield from letters

    def mark_done(self, next_offsets: dict[int, int], timeout: float = 15.0) -> None:
        """Commit the replay group's progress; KafkaException if the broker does not confirm it in `timeout` (a
        synchronous commit has no time limit, and hangs on a broker that stopped answering). The commit goes through
        a second client of the group that reads nothing: serving its callback with poll() cannot swallow a letter."""
        if self._marker is None:
            self._marker = Consumer({**self._config, "on_commit": self._on_commit})
        self._commit_results = []
        self._marker.commit(
            offsets=[TopicPartition(self._topic, p, o) for p, o in next_offsets.items()], asynchronous=True
        )
        deadline = time.monotonic() + timeout
        while not self._commit_results:
            if time.monotonic() > deadline:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"no answer within {timeout:.0f}s"))
            self._marker.poll(0.005)
        if self._commit_results[0] is not None:
            raise KafkaException(self._commit_results[0])

    def _on_commit(self, error: KafkaError | None, _partitions: list[TopicPartition]) -> None:
        self._commit_results.append(error)


def read_dead_letters(settings: Settings, bootstrap: str) -> list[DeadLetter]:
    with DeadLetterReader(settings, bootstrap) as reader:
        return list(reader.letters())


@dataclass
class ReplayReport:
    replayed: int = 0  # acknowledged by the broker and marked as replayed
    unacknowledged: int = 0
    errors: list[str] = field(default_factory=list)


class _Acknowledgements:
    """Which re-driven letters the broker acknowledged, keyed by their place in the dead-letter topic."""

    def __init__(self) -> None:
        self.acked: set[tuple[int, int]] = set()
        self.errors: list[str] = []

    def callback(self, letter: DeadLetter) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                self.acked.add((letter.dlq_partition, letter.dlq_offset))
            else:
                self.refused(error)
        return on_delivery

    def refused(self, error: KafkaError) -> None:
        if len(self.errors) < 5 and error.str() not in self.errors:
            self.errors.append(error.str())


def _produce(producer: Producer, letter: DeadLetter, acks: _Acknowledgements) -> None:
    """Hand one letter to the producer. A refusal before sending (librdkafka may already know the topic is
    unknown or invalid) counts as not acknowledged, like a failed delivery; a full queue is waited out."""
    while True:
        try:
            producer.produce(letter.source_topic, letter.value, letter.key, on_delivery=acks.callback(letter))
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.1)
        except KafkaException as exc:
            acks.refused(exc.args[0])
            return


def acknowledged_prefix(letters: list[DeadLetter], acked: set[tuple[int, int]]) -> dict[int, int]:
    """Per dead-letter partition, the next offset after the longest run of acknowledged letters from the start:
    a consumer-group offset can only mark a prefix, so one unacknowledged letter holds back those after it."""
    done: dict[int, int] = {}
    blocked: set[int] = set()
    for letter in letters:  # in each partition's offset order
        partition = letter.dlq_partition
        if partition in blocked:
            continue
        if (partition, letter.dlq_offset) in acked:
            done[partition] = letter.dlq_offset + 1
        else:
            blocked.add(partition)
    return done


def replay_dead_letters(settings: Settings, bootstrap: str) -> ReplayReport:
    """Re-produce every not-yet-replayed dead letter to its source topic, one chunk at a time. A letter is marked
    replayed (the replay group's offset moves past it) only after the broker acknowledged it; on the first chunk
    with an unacknowledged letter the replay stops and raises DeadLetterError: running it again resumes there."""
    producer = _acknowledging_producer(settings, bootstrap)
    report = ReplayReport()
    timeout = settings.producer_message_timeout_ms / 1000 + 5
    with DeadLetterReader(settings, bootstrap, group=settings.consumer_group + REPLAY_GROUP_SUFFIX) as reader:
        letters = reader.letters()
        while chunk := list(islice(letters, settings.dlq_replay_chunk)):
            acks = _Acknowledgements()
            for letter in chunk:
                _produce(producer, letter, acks)
            producer.flush(timeout)
            done = acknowledged_prefix(chunk, acks.acked)
            marked = sum(1 for x in chunk if x.dlq_offset < done.get(x.dlq_partition, -1))
            if done:
                try:
                    reader.mark_done(done)
                except KafkaException as exc:
                    raise DeadLetterError(
                        f"re-drove {report.replayed + marked:,} dead letters but could not record it "
                        f"({exc.args[0].str()}): the next `k2 dlq replay` re-drives them again (harmless: ingest "
                        "drops duplicates)"
                    ) from None
            report.replayed += marked
            if len(acks.acked) < len(chunk):
                report.unacknowledged = len(chunk) - len(acks.acked)
                report.errors = acks.errors or [f"no acknowledgement within {timeout:.0f}s"]
                first = next(x for x in chunk if (x.dlq_partition, x.dlq_offset) not in acks.acked)
                raise DeadLetterError(
                    f"{report.unacknowledged:,} re-driven dead letters were not acknowledged by the broker "
                    f"({'; '.join(report.errors)}), the first at {settings.topic_dlq}[{first.dlq_partition}]@"
                    f"{first.dlq_offset} (to {first.source_topic!r}); {report.replayed:,} acknowledged ones are "
                    "marked replayed, it and the rest stay in the dead-letter topic: run `k2 dlq replay` again"
                )
    return report
