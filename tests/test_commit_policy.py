"""When the consumer lands what it holds: on size, on age, or when caught up after a short wait (not on every
pause, which would make a snapshot per pause of a slow stream)."""

from __future__ import annotations

import time

from confluent_kafka import Message

from k2.ingest.commit_policy import PendingBatch
from k2.settings import Settings

POLICY = Settings(ingest_commit_rows=5, ingest_commit_seconds=5.0, ingest_commit_min_seconds=1.0)


def _records(partition: int, offsets: range) -> list[Message]:
    return [Message(topic="t", partition=partition, offset=o, value=b"v") for o in offsets]


def test_nothing_pending_is_never_due() -> None:
    assert not PendingBatch().due(POLICY, time.monotonic() + 60, caught_up=True)


def test_due_on_size_on_age_and_when_caught_up_after_the_minimum_wait() -> None:
    pending = PendingBatch()
    pending.add(_records(0, range(3)))
    start = pending.since
    assert not pending.due(POLICY, start + 0.2, caught_up=True)  # a pause right away: keep collecting
    assert not pending.due(POLICY, start + 1.5, caught_up=False)  # still receiving, young enough
    assert pending.due(POLICY, start + 1.5, caught_up=True)  # caught up, the oldest row waited ≥ 1 s
    assert pending.due(POLICY, start + 5.0, caught_up=False)  # too old, even while receiving
    pending.add(_records(1, range(10, 12)))
    assert pending.due(POLICY, start, caught_up=False)  # 5 rows: full


def test_the_wait_starts_with_the_first_row_and_offsets_are_the_next_to_read() -> None:
    pending = PendingBatch()
    pending.add([])  # empty polls before any data do not start the clock
    before = time.monotonic()
    pending.add(_records(2, range(7, 9)) + _records(0, range(3)))
    pending.add(_records(2, range(9, 10)))
    assert pending.since >= before
    assert pending.next_offsets == {2: 10, 0: 3}
    assert len(pending.messages) == 6
