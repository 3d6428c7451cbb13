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
PRODUCED = Counter("k2_produce_records", "Records queued to Kafka by the producer", ["topic"])
PRODUCE_FAILURES = Counter("k2_produce_failures", "Records the broker did not acknowledge", ["topic"])


def serve(port: int, address: str = "127.0.0.1") -> None:
    """Expose /metrics on address:port (loopback by default)."""
    start_http_server(port, addr=address)
