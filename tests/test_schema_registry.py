"""Schema registry: the local registry behind the Confluent REST API, used through confluent-kafka's own client —
the same code path production uses against a real Confluent Schema Registry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from k2.ingest import pipeline
from k2.ingest.broker import free_port
from k2.ingest.generator import generate_trades
from k2.ingest.registry import (
    ConfluentSchemaRegistry,
    LocalSchemaRegistry,
    SchemaCompatibilityError,
    SchemaNotFoundError,
    canonical,
)
from k2.ingest.registry_server import serve_registry
from k2.query.engine import QueryEngine
from k2.schemas import Dataset, avro_schema
from k2.settings import Settings


@pytest.fixture
def registry_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    server = serve_registry(LocalSchemaRegistry(tmp_path / "registry"), port)
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def test_confluent_client_registers_and_fetches(registry_url: str) -> None:
    client = SchemaRegistryClient({"url": registry_url})
    v1 = canonical(avro_schema(Dataset.TRADES, version=1))
    v2 = canonical(avro_schema(Dataset.TRADES))
    id1 = client.register_schema("trades-value", Schema(v1, "AVRO"))
    assert client.register_schema("trades-value", Schema(v1, "AVRO")) == id1  # idempotent
    id2 = client.register_schema("trades-value", Schema(v2, "AVRO"))
    assert id2 != id1
    assert client.get_subjects() == ["trades-value"]
    assert client.get_versions("trades-value") == [1, 2]
    assert client.get_latest_version("trades-value").schema_id == id2
    assert canonical(__import__("json").loads(client.get_schema(id1).schema_str)) == v1
    with pytest.raises(SchemaRegistryError) as missing:
        client.get_schema(999)
    assert missing.value.http_status_code == 404


def test_incompatible_change_is_refused_with_the_reason(registry_url: str, tmp_path: Path) -> None:
    registry = ConfluentSchemaRegistry(registry_url)
    registry.register("t-value", avro_schema(Dataset.TRADES))
    broken = dict(avro_schema(Dataset.TRADES))
    broken["fields"] = [f for f in broken["fields"] if f["name"] != "size"] + [{"name": "lots", "type": "long"}]
    with pytest.raises(SchemaCompatibilityError, match=r"'size' was removed.*'lots' has no default"):
        registry.register("t-value", broken)
    with pytest.raises(SchemaNotFoundError):
        registry.schema(12345)
    local = LocalSchemaRegistry(tmp_path / "other")
    local.register("t-value", avro_schema(Dataset.TRADES))
    with pytest.raises(SchemaCompatibilityError):
        local.register("t-value", broken)


def test_pipeline_through_the_confluent_client(kafka_settings: Settings, registry_url: str) -> None:
    settings = kafka_settings.model_copy(update={"schema_registry_url": registry_url})
    bootstrap = settings.kafka_bootstrap or ""
    trades = generate_trades(dt.date(2026, 7, 1), ["SR"], 2_000, seed=3)
    pipeline.produce_table(settings, bootstrap, trades)
    assert pipeline.ingest(settings, bootstrap).rows_landed == 2_000
    assert QueryEngine(settings).trades(["SR"], limit=None).num_rows == 2_000
    client = SchemaRegistryClient({"url": registry_url})
    assert client.get_subjects() == [f"{settings.topic_trades}-value"]
