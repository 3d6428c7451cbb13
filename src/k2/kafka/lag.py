"""Consumer lag, measured from the broker: each ingest group's committed offsets against the topics' end offsets.

Measured outside the consumer on purpose: a consumer that stopped (crashed, hung, scaled to zero) exports nothing,
and its lag is exactly what must keep growing on a dashboard. Any process with a `/metrics` endpoint registers a
`LagCollector`; it asks the broker at scrape time (cached briefly, so several scrapers cost one round trip).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from k2.kafka.config import client_config, ingest_group, topic_for
from k2.retry import retry
from k2.schemas import Dataset
from k2.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class TopicLag:
    """One dataset's topic as its ingest group sees it, summed over partitions."""

    dataset: Dataset
    topic: str
    group: str
    end_offset: int
    committed: int

    @property
    def lag(self) -> int:
        return self.end_offset - self.committed


def measure_lag(settings: Settings, admin: AdminClient, datasets: Iterable[Dataset], timeout: float) -> list[TopicLag]:
    """Lag of each dataset's ingest group; a topic that does not exist yet is left out. A partition the group
    never committed counts from its start offset (the ingest starts at the earliest record)."""
    wanted = {topic_for(settings, d): d for d in datasets}
    metadata = admin.list_topics(timeout=timeout)
    partitions = [TopicPartition(topic, p) for topic in wanted if topic in metadata.topics
                  for p in metadata.topics[topic].partitions]
    if not partitions:
        return []
    ends = _offsets(admin, partitions, OffsetSpec.latest(), timeout)  # type: ignore[no-untyped-call]
    starts = _offsets(admin, partitions, OffsetSpec.earliest(), timeout)  # type: ignore[no-untyped-call]
    result = []
    for topic, dataset in wanted.items():
        mine = [tp for tp in partitions if tp.topic == topic]
        if not mine:
            continue
        group = ingest_group(settings, dataset)
        committed = _committed(admin, group, mine, timeout)
        end = sum(ends[(tp.topic, tp.partition)] for tp in mine)
        done = sum(max(committed.get(tp.partition, -1), starts[(tp.topic, tp.partition)]) for tp in mine)
        result.append(TopicLag(dataset, topic, group, end, min(done, end)))
    return result


def _offsets(admin: AdminClient, partitions: list[TopicPartition], spec: OffsetSpec,
             timeout: float) -> dict[tuple[str, int], int]:
    def ask() -> dict[tuple[str, int], int]:
        futures = admin.list_offsets({tp: spec for tp in partitions}, request_timeout=timeout)
        return {(tp.topic, tp.partition): future.result(timeout).offset for tp, future in futures.items()}

    return _patiently(ask, timeout)


def _committed(admin: AdminClient, group: str, partitions: list[TopicPartition], timeout: float) -> dict[int, int]:
    request = [ConsumerGroupTopicPartitions(group, partitions)]

    def ask() -> dict[int, int]:
        answer = admin.list_consumer_group_offsets(request, request_timeout=timeout)[group].result(timeout)
        return {tp.partition: tp.offset for tp in answer.topic_partitions if tp.error is None}

    return _patiently(ask, timeout)


# Real Kafka answers these for a while after it starts or creates a topic: the group coordinator is still loading
# its log, a new partition's leader is not known yet (both seen in CI and reproduced on a fresh broker). They are
# waited out; any other error, or one that outlasts the timeout, is raised as the broker gave it.
_TRANSIENT = frozenset({KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
                        KafkaError.NOT_COORDINATOR, KafkaError.NOT_LEADER_FOR_PARTITION,
                        KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART})


class _Transient(Exception):
    def __init__(self, cause: KafkaException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _patiently(ask: Callable[[], T], timeout: float) -> T:
    def once() -> T:
        try:
            return ask()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and (error.retriable() or error.code() in _TRANSIENT):
                raise _Transient(exc) from exc
            raise

    try:
        return retry(once, _Transient, give_up_after=timeout, first_delay=0.05, max_delay=0.5)
    except _Transient as exc:
        raise exc.cause from None


class LagCollector(Collector):
    """Prometheus collector: `k2_consumer_lag`, `k2_kafka_end_offset`, `k2_kafka_up`, fresh at each scrape."""

    def __init__(self, settings: Settings, bootstrap: str, datasets: Iterable[Dataset] = tuple(Dataset),
                 timeout: float = 2.0, cache_seconds: float = 1.0) -> None:
        self._settings = settings
        self._datasets = tuple(datasets)
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._admin = AdminClient(client_config(bootstrap))  # type: ignore[arg-type]  # the stubs omit "logger"
        self._lock = threading.Lock()
        self._measured_at = -float("inf")
        self._last: list[TopicLag] | None = None

    def measure(self) -> list[TopicLag] | None:
        """Each dataset's lag now (at most `cache_seconds` old); None when the broker did not answer."""
        with self._lock:
            if time.monotonic() - self._measured_at >= self._cache_seconds:
                try:
                    self._last = measure_lag(self._settings, self._admin, self._datasets, self._timeout)
                except KafkaException:
                    self._last = None  # the broker did not answer in time: say so, show no stale lag
                self._measured_at = time.monotonic()
            return self._last

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lags = self.measure()
        up = GaugeMetricFamily("k2_kafka_up", "1 if the Kafka broker answered the lag probe at this scrape")
        up.add_metric([], 0 if lags is None else 1)
        yield up
        lag = GaugeMetricFamily("k2_consumer_lag", "Records on the topic not yet committed by its ingest group",
                                labels=["dataset", "topic", "group"])
        end = GaugeMetricFamily("k2_kafka_end_offset", "Sum of the topic's end offsets: records ever produced",
                                labels=["dataset", "topic"])
        for item in lags or []:
            lag.add_metric([item.dataset.value, item.topic, item.group], item.lag)
            end.add_metric([item.dataset.value, item.topic], item.end_offset)
        yield lag
        yield end
