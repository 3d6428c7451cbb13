"""One typed settings object for all of K2; every field can be set with an env var `K2_<FIELD>`."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

BrokerKind = Literal["tansu", "noida"]


class Settings(BaseSettings):
    """K2 configuration. Defaults give the embedded profile: local broker, SQLite catalog, local warehouse."""

    model_config = SettingsConfigDict(env_prefix="K2_", extra="ignore")

    log_level: str = Field("WARNING", description="Python log level of K2's own messages (stderr).")
    home: Path = Field(Path(".k2"), description="Directory holding all local state (catalog, warehouse, broker).")

    # Kafka
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset = the local broker managed by `k2 broker`."
    )
    kafka_connect_timeout_seconds: float = Field(
        15.0, gt=0, description="How long to retry reaching Kafka at start before giving up with an error."
    )
    schema_registry_url: str | None = Field(
        None, description="Confluent Schema Registry URL; unset = the local file registry in K2_HOME/registry."
    )
    broker: BrokerKind = Field("tansu", description="Which local Kafka-protocol broker `k2` manages.")
    topic_trades: str = "k2.trades.v1"
    topic_quotes: str = "k2.quotes.v1"
    topic_reference: str = "k2.reference.v1"
    topic_corporate_actions: str = "k2.corporate-actions.v1"
    topic_dlq: str = Field("k2.dlq.v1", description="Dead-letter topic for records that cannot be landed.")
    topic_partitions: int = Field(4, ge=1)
    consumer_group: str = "k2-ingest"
    consumer_instance_id: str | None = Field(
        None,
        description="Static group membership id (KIP-345): a restarted consumer with the same id takes its "
        "partitions back at once. Each concurrent consumer needs its own id.",
    )
    session_timeout_ms: int = Field(6000, ge=1000, description="Kafka consumer group session timeout.")
    producer_linger_ms: int = Field(5, ge=0)
    producer_message_timeout_ms: int = Field(
        60_000, ge=1000, description="How long the producer retries a record before reporting it undelivered."
    )
    producer_queue_max_messages: int = Field(500_000, ge=1000, description="Bound on the producer's queue.")

    # Ingest
    consume_batch: int = Field(10_000, ge=1, description="Records fetched per consume() call.")
    ingest_commit_rows: int = Field(250_000, ge=1, description="Rows buffered before one Iceberg commit.")
    ingest_commit_seconds: float = Field(5.0, gt=0, description="Max seconds rows wait before a commit.")
    ingest_commit_min_seconds: float = Field(
        1.0, ge=0,
        description="A caught-up consumer lands what it holds once the oldest row has waited this long: a slow "
        "stream commits at most about once per this interval instead of on every pause (snapshot count).",
    )
    ingest_idle_seconds: float = Field(3.0, gt=0, description="`k2 ingest` stops after this long with no data.")
    max_future_skew_seconds: float = Field(
        300.0, ge=0, description="Ticks stamped further than this in the future go to the dead-letter topic."
    )
    csv_chunk_rows: int = Field(100_000, ge=1, description="Rows read from a CSV file per chunk.")

    # Lake
    catalog_name: str = "k2"
    catalog_uri: str | None = Field(None, description="SQLAlchemy URI of the catalog; unset = SQLite in home.")
    warehouse: str | None = Field(None, description="Warehouse location; unset = <home>/warehouse.")
    namespace: str = "market"
    symbol_buckets: int = Field(16, ge=1, description="bucket(N, symbol) partition count.")

    @cached_property
    def home_dir(self) -> Path:
        path = self.home.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def resolved_catalog_uri(self) -> str:
        return self.catalog_uri or f"sqlite:///{self.home_dir / 'catalog.db'}"

    @property
    def resolved_warehouse(self) -> str:
        if self.warehouse:
            return self.warehouse
        path = self.home_dir / "warehouse"
        path.mkdir(parents=True, exist_ok=True)
        return path.as_uri()

    @property
    def registry_dir(self) -> Path:
        return self.home_dir / "registry"

    @property
    def broker_dir(self) -> Path:
        return self.home_dir / "broker"


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (used by the CLI and tests)."""
    return Settings(**overrides)  # type: ignore[arg-type]
