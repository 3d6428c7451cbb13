"""Kafka client configuration, shared by the producer, the consumers and the admin client."""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Consumer

from k2.schemas import Dataset
from k2.settings import Settings

# librdkafka's own log lines (every failed reconnect while a broker is down) go through Python logging, shown at
# DEBUG; K2 turns the conditions that matter into its own errors (k2.errors)
CLIENT_LOG = logging.getLogger("k2.kafka.client")


def client_config(bootstrap: str) -> dict[str, object]:
    """What every Kafka client K2 creates shares. librdkafka logs only at K2_LOG_LEVEL=DEBUG: some lines bypass
    the Python logger (while a client is destroyed), and none of them is news to a user K2 already told."""
    verbose = CLIENT_LOG.isEnabledFor(logging.DEBUG)
    return {"bootstrap.servers": bootstrap, "logger": CLIENT_LOG, "log_level": 7 if verbose else 0}


def topic_for(settings: Settings, dataset: Dataset) -> str:
    return {
        Dataset.TRADES: settings.topic_trades,
        Dataset.QUOTES: settings.topic_quotes,
        Dataset.REFERENCE: settings.topic_reference,
        Dataset.CORPORATE_ACTIONS: settings.topic_corporate_actions,
    }[dataset]


def producer_config(settings: Settings, bootstrap: str) -> dict[str, object]:
    return {
        **client_config(bootstrap),
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
        **client_config(bootstrap),
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


def close_consumer(consumer: Consumer, timeout: float = 10.0) -> bool:
    """Close `consumer`, giving up after `timeout` seconds (False): librdkafka's close waits without limit for a
    commit that a broker which stopped answering will never confirm. A consumer left closing in its daemon thread
    does not keep the process from exiting."""
    closing = threading.Thread(target=consumer.close, name="k2-consumer-close", daemon=True)
    closing.start()
    closing.join(timeout)
    return not closing.is_alive()
