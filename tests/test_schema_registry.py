"""Schema registry: the local registry behind the Confluent REST API, used through confluent-kafka's own client —
the same code path production uses against a real Confluent Schema Registry."""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from k2.errors import InvalidSchemaError, SchemaCompatibilityError, SchemaNotFoundError
from k2.ingest import pipeline
from k2.kafka.broker import free_port
from k2.query.engine import QueryEngine
from k2.registry.base import canonical_form
from k2.registry.compatibility import backward_problems
from k2.registry.confluent import ConfluentSchemaRegistry
from k2.registry.local import LocalSchemaRegistry
from k2.registry.server import serve_registry
from k2.schemas import Dataset, avro_schema
from k2.settings import Settings
from k2.sources.generator import generate_trades


@pytest.fixture
def registry_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    server = serve_registry(LocalSchemaRegistry(tmp_path / "registry"), port)
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def test_confluent_client_registers_and_fetches(registry_url: str) -> None:
    client = SchemaRegistryClient({"url": registry_url})
    v1 = json.dumps(avro_schema(Dataset.TRADES, version=1))
    v2 = json.dumps(avro_schema(Dataset.TRADES))
    id1 = client.register_schema("trades-value", Schema(v1, "AVRO"))
    assert client.register_schema("trades-value", Schema(v1, "AVRO")) == id1  # idempotent
    id2 = client.register_schema("trades-value", Schema(v2, "AVRO"))
    assert id2 != id1
    assert client.get_subjects() == ["trades-value"]
    assert client.get_versions("trades-value") == [1, 2]
    assert client.get_latest_version("trades-value").schema_id == id2
    assert json.loads(client.get_schema(id1).schema_str) == avro_schema(Dataset.TRADES, version=1)
    with pytest.raises(SchemaRegistryError) as missing:
        client.get_schema(999)
    assert missing.value.http_status_code == 404


def test_incompatible_change_is_refused_with_the_reason(registry_url: str, tmp_path: Path) -> None:
    registry = ConfluentSchemaRegistry(registry_url)
    registry.register("t-value", avro_schema(Dataset.TRADES))
    broken = dict(avro_schema(Dataset.TRADES))
    broken["fields"] = [f for f in broken["fields"] if f["name"] != "size"] + [{"name": "lots", "type": "long"}]
    with pytest.raises(SchemaCompatibilityError, match=r"Trade\.lots: new field has no default"):
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


# --------------------------------------------------------------------------------- identity and compatibility


def _trade(**changes: object) -> dict:
    schema = json.loads(json.dumps(avro_schema(Dataset.TRADES)))
    schema.update(changes)
    return schema


def _with_field(schema: dict, field_name: str, **changes: object) -> dict:
    schema = json.loads(json.dumps(schema))
    field = next(f for f in schema["fields"] if f["name"] == field_name)
    field.update(changes)
    return schema


def test_a_schema_is_identified_by_its_canonical_form(tmp_path: Path) -> None:
    registry = LocalSchemaRegistry(tmp_path)
    first = registry.register("t-value", avro_schema(Dataset.TRADES))
    reworded = _with_field(_trade(doc="new words"), "price", doc="a changed doc string")
    reordered = json.loads(json.dumps(reworded, sort_keys=True))  # other key order, same schema
    assert registry.register("t-value", reworded) == first
    assert registry.register("t-value", reordered) == first
    assert registry.versions("t-value") == [first]
    # the logical type is part of the identity (plain Parsing Canonical Form would drop it)
    millis = _with_field(avro_schema(Dataset.TRADES), "ts", type={"type": "long", "logicalType": "timestamp-millis"})
    assert canonical_form(millis) != canonical_form(avro_schema(Dataset.TRADES))


def test_backward_compatibility_follows_avro_resolution_rules() -> None:
    old = avro_schema(Dataset.TRADES)
    long_to_double = _with_field(old, "size", type="double")
    assert backward_problems(long_to_double, old) == []  # promotion long → double
    int_schema = _with_field(old, "size", type="int")
    assert backward_problems(old, int_schema) == []  # int → long: the new reader widens the old ints
    assert backward_problems(int_schema, old) == ["Trade.size: type changed from long to int"]
    removed = dict(old, fields=[f for f in old["fields"] if f["name"] != "conditions"])
    assert backward_problems(removed, old) == []  # a reader ignores fields it does not know
    optional = dict(old, fields=[*old["fields"], {"name": "lots", "type": ["null", "long"], "default": None}])
    assert backward_problems(optional, old) == []
    renamed = _with_field(old, "size", name="quantity", aliases=["size"])
    assert backward_problems(renamed, old) == []  # matched through the alias
    fewer_sides = _with_field(old, "side", type={"type": "enum", "name": "Side", "symbols": ["BUY", "SELL"]})
    assert backward_problems(fewer_sides, old) == [
        "Trade.side: symbol(s) ['UNKNOWN'] removed and the enum has no default"]
    more_sides = _with_field(old, "side", type={"type": "enum", "name": "Side",
                                                "symbols": ["UNKNOWN", "BUY", "SELL", "SHORT"]})
    assert backward_problems(more_sides, old) == []
    coarser = _with_field(old, "price", type={"type": "fixed", "name": "Price", "size": 8, "logicalType": "decimal",
                                              "precision": 18, "scale": 4})
    assert backward_problems(coarser, old) == [
        "Trade.price: logical type changed from decimal(18,8) to decimal(18,4)"]
    nullable = _with_field(old, "trade_id", type=["null", "string"], default=None)
    assert backward_problems(nullable, old) == []  # a union that takes the old type
    assert backward_problems(old, nullable) == [
        "Trade.trade_id: the old schema's null branch has no match in the new schema"]


@pytest.mark.parametrize(("schema", "problem"), [
    ({"type": "record", "name": "T"}, "lacks 'fields'"),
    ({"type": "record", "name": "T", "fields": [{"name": "a", "type": "nosuchtype"}]}, "unknown type nosuchtype"),
    ({"type": "enum", "name": "E"}, "lacks 'symbols'"),
])
def test_invalid_schemas_are_refused(tmp_path: Path, schema: dict, problem: str) -> None:
    with pytest.raises(InvalidSchemaError, match=problem):
        LocalSchemaRegistry(tmp_path).register("t-value", schema)
    assert LocalSchemaRegistry(tmp_path).subjects() == []


def _post(url: str, path: str, body: bytes, length: str | None = None) -> tuple[int, dict]:
    """A raw HTTP/1.1 POST (to send what a library would refuse to, like a negative Content-Length)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        header = f"Content-Length: {length if length is not None else len(body)}\r\n"
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{header}"
                     "Connection: close\r\n\r\n".encode() + body)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


@pytest.mark.parametrize(("body", "length", "status", "code"), [
    (json.dumps({"schema": json.dumps({"type": "record", "name": "T"})}).encode(), None, 422, 42201),
    (json.dumps({"schema": json.dumps({"type": "record", "name": "T", "fields": [
        {"name": "a", "type": "nosuchtype"}]})}).encode(), None, 422, 42201),
    (b"[1, 2, 3]", None, 422, 422),
    (b"42", None, 422, 422),
    (json.dumps({"schema": {"type": "record"}}).encode(), None, 422, 42201),
    (b"{not json", None, 422, 422),
    (json.dumps({"schema": json.dumps({"type": "record", "name": "T", "fields": []})}).encode(), "-5", 400, 400),
    (b"{}", "lots", 400, 400),
    (b"x", str(10_000_000), 413, 413),
])
def test_the_registry_server_refuses_bad_bodies_and_always_answers(
    registry_url: str, body: bytes, length: str | None, status: int, code: int
) -> None:
    answer_status, answer = _post(registry_url, "/subjects/trades-value/versions", body, length)
    assert (answer_status, answer["error_code"]) == (status, code), answer
    assert answer["message"]
    assert SchemaRegistryClient({"url": registry_url}).get_subjects() == []  # nothing was stored
    # and the server still works
    good = SchemaRegistryClient({"url": registry_url}).register_schema(
        "trades-value", Schema(json.dumps(avro_schema(Dataset.TRADES)), "AVRO"))
    assert good >= 1
