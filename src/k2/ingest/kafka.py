"""Kafka client configuration and topic management, shared by the producer, consumer and CLI."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from k2.schemas import Dataset
from k2.settings import Settings


def topic_for(settings: Settings, dataset: Dataset) -> str:
    return {
        Dataset.TRADES: settings.topic_trades,
        Dataset.QUOTES: settings.topic_quotes,
        Dataset.REFERENCE: settings.topic_reference,
        Dataset.CORPORATE_ACTIONS: settings.topic_corporate_actions,
    }[dataset]


def producer_config(settings: Settings, bootstrap: str) -> dict[str, object]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,  # implies acks=all and ordered, de-duplicated retries per partition
        "acks": "all",
        "linger.ms": settings.producer_linger_ms,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": settings.producer_queue_max_messages,
        "message.timeout.ms": settings.producer_message_timeout_ms,
        "partitioner": "murmur2_random",  # same key → partition mapping as the Java client
        "delivery.report.only.error": True,
    }


def ingest_group(settings: Settings, dataset: Dataset) -> str:
    """One consumer group per dataset: each table's progress and lag are independent."""
    return f"{settings.consumer_group}.{dataset.value}"


def consumer_config(
    settings: Settings, bootstrap: str, group: str | None = None, instance_suffix: str = ""
) -> dict[str, object]:
    instance = settings.consumer_instance_id
    static = {"group.instance.id": f"{instance}{instance_suffix}"} if instance else {}
    return {
        **static,
        "bootstrap.servers": bootstrap,
        "group.id": group or settings.consumer_group,
        "enable.auto.commit": False,  # offsets are committed only after the Iceberg commit
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(250, settings.session_timeout_ms // 6),
        "fetch.queue.backoff.ms": 10,
        "fetch.max.bytes": 50_000_000,
        # noida-db ignores fetch.max.bytes; a large backlog answers with one huge response
        "receive.message.max.bytes": 400_000_000,
    }


class KafkaUnavailableError(RuntimeError):
    """No broker answered at the configured bootstrap servers."""


def wait_for_kafka(bootstrap: str, timeout: float) -> AdminClient:
    """An admin client once the cluster answers; retries with backoff, then a clear error."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    delay, attempts = 0.1, 0
    while True:
        attempts += 1
        try:
            admin.list_topics(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
            return admin
        except KafkaException as exc:
            if time.monotonic() + delay >= deadline:
                raise KafkaUnavailableError(
                    f"no Kafka broker answered at {bootstrap} after {attempts} attempt(s) over {timeout:.0f}s "
                    f"({exc.args[0].str() if exc.args else exc}); nothing was sent. Start one with `k2 broker start` "
                    "or fix K2_KAFKA_BOOTSTRAP"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def ensure_topics(settings: Settings, bootstrap: str, timeout: float = 15.0) -> None:
    """Create the K2 topics if they do not exist (idempotent)."""
    admin = wait_for_kafka(bootstrap, settings.kafka_connect_timeout_seconds)
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [topic_for(settings, d) for d in Dataset] + [settings.topic_dlq]
    new = [NewTopic(t, settings.topic_partitions, 1) for t in wanted if t not in existing]
    if not new:
        return
    for topic, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"could not create topic {topic!r}: {exc}") from exc


def cluster_id(bootstrap: str, timeout: float = 10.0) -> str:
    """The broker cluster's id; offsets recorded in the lake are only trusted on the same cluster."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout)
    return str(metadata.cluster_id or "unknown")
