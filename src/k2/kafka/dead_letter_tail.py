"""The dead-letter topic followed from its start: how many letters, why, and the latest ones (the pipeline view).

One long-lived client per process reads only what arrived since its last look, so a refresh costs the new letters,
not the topic. Between looks its partitions are paused: no fetching, no load on the broker while nobody asks.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from k2.kafka.config import close_consumer, consumer_config
from k2.kafka.dead_letters import DeadLetter, letter_of
from k2.settings import Settings

REASON_CHARS = 160  # reasons are grouped by their text, cut here (the rest names a value or an offset)
MAX_REASONS = 200  # distinct reasons kept; the rest count under "other reasons"


@dataclass(frozen=True)
class DeadLetterView:
    count: int
    by_reason: list[tuple[str, int]]  # most frequent first
    latest: list[DeadLetter]  # newest first


@dataclass
class _Seen:
    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    latest: deque[DeadLetter] = field(default_factory=lambda: deque(maxlen=50))


class DeadLetterTail:
    """Counts and keeps the latest letters of the dead-letter topic; `look()` reads what is new (thread-safe)."""

    def __init__(self, settings: Settings, bootstrap: str, patience_seconds: float = 5.0) -> None:
        self._topic = settings.topic_dlq
        self._patience = patience_seconds  # a look returns after this long even if the broker is slow to deliver
        self._next: dict[int, int] = {}  # partition → the next offset to count
        config = consumer_config(settings, bootstrap, f"k2-dlq-view-{time.time_ns()}")  # never commits
        self._consumer = Consumer({**config, "enable.partition.eof": False})
        self._assigned: list[TopicPartition] = []
        self._seen = _Seen()
        self._lock = threading.Lock()
        self._backoff = 3.0
        self._failure: tuple[float, KafkaException | None] = (0.0, None)

    def look(self, latest: int = 20) -> DeadLetterView:
        """KafkaException when the broker does not answer (and at once for the next few seconds after that: a
        dashboard refreshing against a down broker must not queue requests behind its timeouts)."""
        with self._lock:
            failed_at, failure = self._failure
            if failure is not None and time.monotonic() - failed_at < self._backoff:
                raise failure
            try:
                if self._assign():
                    self._read_new()
            except KafkaException as exc:
                self._failure = (time.monotonic(), exc)
                raise
            self._failure = (0.0, None)
            ranked = self._seen.reasons.most_common()
            return DeadLetterView(self._seen.count, ranked, list(self._seen.latest)[::-1][:latest])

    def close(self) -> None:
        close_consumer(self._consumer)

    def _assign(self) -> bool:
        """Assign every partition of the topic from its start (and partitions added since); False while the topic
        does not exist (no letter was ever written)."""
        metadata = self._consumer.list_topics(self._topic, timeout=2).topics.get(self._topic)
        if metadata is None or metadata.error is not None:
            return False
        known = {tp.partition for tp in self._assigned}
        added = [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)
                 if p not in known]
        if added:
            self._consumer.incremental_assign(added)
            self._assigned += added
        return bool(self._assigned)

    def _read_new(self) -> None:
        """Read up to the end offsets of this look, then pause again. Tansu's end offset is the last batch's start + 1
        (decision 0001): reaching it means that batch was fetched whole, so it is an end on every broker."""
        self._consumer.resume(self._assigned)
        try:
            ends = {tp.partition: self._consumer.get_watermark_offsets(tp, timeout=2, cached=False)
                    for tp in self._assigned}
            for partition, (low, _) in ends.items():
                self._next.setdefault(partition, low)
            deadline = time.monotonic() + self._patience
            while any(self._next[p] < high for p, (_, high) in ends.items()) and time.monotonic() < deadline:
                for message in self._consumer.consume(1000, timeout=0.1):
                    if message.error() is None:
                        letter = letter_of(message)
                        self._next[letter.dlq_partition] = max(self._next[letter.dlq_partition], letter.dlq_offset + 1)
                        self._count(letter)
        finally:
            self._consumer.pause(self._assigned)

    def _count(self, letter: DeadLetter) -> None:
        seen = self._seen
        seen.count += 1
        reason = letter.error[:REASON_CHARS] or "(no reason recorded)"
        if reason not in seen.reasons and len(seen.reasons) >= MAX_REASONS:
            reason = "other reasons"
        seen.reasons[reason] += 1
        seen.latest.append(letter)
