"""The Confluent Schema Registry REST API, through confluent-kafka's client (production profile)."""

from __future__ import annotations

import json

from k2.errors import InvalidSchemaError, SchemaCompatibilityError, SchemaNotFoundError
from k2.registry.base import validate_avro
from k2.schemas import AvroSchema


class ConfluentSchemaRegistry:
    def __init__(self, url: str, config: dict[str, str] | None = None) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self._client = SchemaRegistryClient({"url": url, **(config or {})})
        self._cache: dict[int, AvroSchema] = {}

    def register(self, subject: str, schema: AvroSchema) -> int:
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        validate_avro(schema)
        text = json.dumps(schema, separators=(",", ":"), sort_keys=True)
        try:
            schema_id: int = self._client.register_schema(subject, Schema(text, schema_type="AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 409:
                raise SchemaCompatibilityError(f"subject {subject!r}: {exc.error_message}") from None
            if exc.http_status_code == 422:
                raise InvalidSchemaError(f"subject {subject!r}: {exc.error_message}") from None
            raise
        self._cache[schema_id] = schema
        return schema_id

    def schema(self, schema_id: int) -> AvroSchema:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        if schema_id not in self._cache:
            try:
                found = self._client.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404:
                    raise SchemaNotFoundError(f"schema id {schema_id} is not registered in the registry") from None
                raise
            self._cache[schema_id] = json.loads(found.schema_str or "{}")
        return self._cache[schema_id]
