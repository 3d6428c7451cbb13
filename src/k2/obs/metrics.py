"""Prometheus metrics. Names follow `k2_<subsystem>_<what>_<unit>`; labels stay low-cardinality except the
per-symbol sequence gauges, which are bounded by the instrument universe."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

INGEST_MESSAGES = Counter("k2_ingest_messages", "Kafka records consumed", ["topic"])
INGEST_ROWS = Counter(
    "k2_ingest_rows", "Rows by outcome (landed, duplicate, late, dead_letter)", ["dataset", "outcome"]
)
INGEST_COMMITS = Counter("k2_ingest_commits", "Iceberg commits by the consumer", ["dataset"])
INGEST_COMMIT_SECONDS = Histogram(
    "k2_ingest_commit_seconds", "Time to land one batch (decode → Iceberg commit → Kafka commit)", ["dataset"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SEQUENCE_GAPS = Gauge(
    "k2_sequence_gaps", "Open gaps in landed sequences, latest day seen", ["dataset", "exchange", "symbol"]
)
SEQUENCE_MISSING = Gauge(
    "k2_sequence_missing", "Sequence numbers missing inside those gaps", ["dataset", "exchange", "symbol"]
)
SEQUENCE_ROWS = Counter(
    "k2_sequence_rows", "Rows dropped as duplicates or landed late (out of order), by exchange",
    ["dataset", "exchange", "outcome"],
)
DEAD_LETTERS = Counter("k2_dead_letters", "Records sent to the dead-letter topic, by source topic", ["topic"])
LAKE_FILES_WRITTEN = Counter("k2_lake_files_written", "Data files added by ingest commits", ["dataset"])
COMPACTIONS = Counter("k2_compactions", "Compaction commits, by table", ["table"])
COMPACTED_FILES = Counter("k2_compacted_files", "Data files replaced by compactions, by table", ["table"])
PRODUCED = Counter("k2_produce_records", "Records queued to Kafka by the producer", ["topic"])
PRODUCE_FAILURES = Counter("k2_produce_failures", "Records the broker did not acknowledge", ["topic"])

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
QUERY_SECONDS = Histogram("k2_query_seconds", "Query engine calls by query type", ["query"], buckets=_LATENCY)
API_REQUEST_SECONDS = Histogram(
    "k2_api_request_seconds", "REST API requests by route template and method", ["route", "method"], buckets=_LATENCY
)
API_RESPONSES = Counter("k2_api_responses", "REST API responses by route template and status", ["route", "status"])
API_CACHE = Counter("k2_api_cache", "Hot cache lookups of the REST API by route and outcome (hit, miss)",
                    ["route", "outcome"])
REPLAY_EVENTS = Counter("k2_replay_events", "Events handed out by replays", ["paced"])
REPLAY_LATENESS_SECONDS = Histogram(
    "k2_replay_lateness_seconds", "How late paced replay events were handed out (hand-over - target)",
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1),
)


def declare_ingest(dataset: str, topic: str) -> None:
    """Export an ingest's counters at zero from its start: a rate over a series that appears only with its first
    event reads as "no data" on a dashboard, and an alert on it cannot fire at the first event."""
    INGEST_MESSAGES.labels(topic)
    INGEST_COMMITS.labels(dataset)
    DEAD_LETTERS.labels(topic)
    LAKE_FILES_WRITTEN.labels(dataset)
    for outcome in ("landed", "duplicate", "late", "dead_letter"):
        INGEST_ROWS.labels(dataset, outcome)


def serve(port: int, address: str = "127.0.0.1") -> None:
    """Expose /metrics on address:port (loopback by default)."""
    start_http_server(port, addr=address)
