"""A consumer group's committed offsets, asked for the way real Kafka needs: a group's coordinator may be moving
or still loading (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, seen on Apache Kafka right after a group's first
commit), and the client reports that as an exception rather than retrying it."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

# not marked retriable by the client, though they only say "ask again shortly"
_COORDINATOR_MOVING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                       KafkaError.COORDINATOR_NOT_AVAILABLE}


def committed(consumer: Consumer, partitions: list[TopicPartition], timeout: float = 30.0) -> list[TopicPartition]:
    """The group's committed offsets of `partitions`, retrying retriable coordinator errors until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return list(consumer.committed(partitions, timeout=max(1.0, min(10.0, deadline - time.monotonic()))))
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            transient = isinstance(error, KafkaError) and (error.retriable() or error.code() in _COORDINATOR_MOVING)
            if not transient or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
