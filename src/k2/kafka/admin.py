"""Reaching the cluster and managing K2's topics: waits for a broker, creates topics, reads the cluster id."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from k2.errors import KafkaUnavailableError
from k2.kafka.config import client_config, topic_for
from k2.retry import retry
from k2.schemas import Dataset
from k2.settings import Settings


def wait_for_kafka(bootstrap: str, timeout: float) -> AdminClient:
    """An admin client once the cluster answers; retries with backoff, then a clear error."""
    admin = AdminClient(client_config(bootstrap))  # type: ignore[arg-type]  # the stubs omit "logger"
    attempts = 0

    def list_topics() -> None:
        nonlocal attempts
        attempts += 1
        admin.list_topics(timeout=max(0.5, min(5.0, timeout)))

    try:
        retry(list_topics, KafkaException, give_up_after=timeout, first_delay=0.1, max_delay=2.0)
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"no Kafka broker answered at {bootstrap} after {attempts} attempt(s) over {timeout:.0f}s "
            f"({exc.args[0].str() if exc.args else exc}); nothing was sent. Start one with `k2 broker start` "
            "or fix K2_KAFKA_BOOTSTRAP"
        ) from None
    return admin


# The broker stamps each record's timestamp when it appends it: a producer host whose clock is off cannot have its
# records refused (Kafka 4 refuses CreateTime more than an hour ahead of its own clock) or aged out by time-based
# retention (a clock days behind). The producer's own time is in each record's ingest_ts (decision 0022).
TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}


def ensure_topics(settings: Settings, bootstrap: str, timeout: float = 15.0) -> None:
    """Create the K2 topics if they do not exist (idempotent)."""
    admin = wait_for_kafka(bootstrap, settings.kafka_connect_timeout_seconds)
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [topic_for(settings, d) for d in Dataset] + [settings.topic_dlq]
    new = [NewTopic(t, settings.topic_partitions, 1, config=TOPIC_CONFIG) for t in wanted if t not in existing]
    if not new:
        return
    for topic, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise KafkaUnavailableError(f"could not create topic {topic!r}: {exc}") from None


def cluster_id(bootstrap: str, timeout: float = 10.0) -> str:
    """The broker cluster's id; offsets recorded in the lake are only trusted on the same cluster."""
    try:
        metadata = AdminClient(client_config(bootstrap)).list_topics(timeout=timeout)  # type: ignore[arg-type]
    except KafkaException as exc:
        raise KafkaUnavailableError(f"the Kafka broker at {bootstrap} did not answer: {exc.args[0].str()}") from None
    return str(metadata.cluster_id or "unknown")
