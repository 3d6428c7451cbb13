"""Schema registry: maps Avro schemas to the ids carried in the Confluent wire format header."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from k2.schemas import AvroSchema


class SchemaNotFoundError(KeyError):
    """A record names a schema id the registry does not know."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "schema not found"


class SchemaCompatibilityError(ValueError):
    """A new schema version would break readers of the subject (BACKWARD compatibility)."""


def backward_incompatibilities(new: AvroSchema, old: AvroSchema) -> list[str]:
    """Why readers using `new` could not read data written with `old` (empty list = compatible).

    K2's rule is the practical subset of Avro BACKWARD compatibility for flat records: a field may be added only
    with a default, and an existing field may not be removed or change type."""
    old_fields = {f["name"]: f for f in old.get("fields", [])}
    new_fields = {f["name"]: f for f in new.get("fields", [])}
    problems = [f"field {name!r} was removed" for name in old_fields if name not in new_fields]
    for name, field in new_fields.items():
        if name not in old_fields:
            if "default" not in field:
                problems.append(f"new field {name!r} has no default")
        elif canonical({"t": field["type"]}) != canonical({"t": old_fields[name]["type"]}):
            problems.append(f"field {name!r} changed type")
    return problems


class SchemaRegistry(Protocol):
    """What K2 needs from a schema registry (the Confluent REST registry implements the same calls)."""

    def register(self, subject: str, schema: AvroSchema) -> int: ...

    def schema(self, schema_id: int) -> AvroSchema: ...


def canonical(schema: AvroSchema) -> str:
    return json.dumps(schema, separators=(",", ":"), sort_keys=True)


class LocalSchemaRegistry:
    """A file-backed registry for the embedded profile: ids are stable, shared by every process on the host."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / "schemas.json"
        self._lock_path = directory / ".lock"
        directory.mkdir(parents=True, exist_ok=True)
        self._cache: dict[int, AvroSchema] = {}

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with open(self._lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state: dict[str, Any] = (
                json.loads(self._path.read_text()) if self._path.exists() else {"schemas": {}, "subjects": {}}
            )
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                tmp = self._path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
                tmp.replace(self._path)

    def register(self, subject: str, schema: AvroSchema) -> int:
        """Register `schema` under `subject`; the same schema always gets the same id."""
        text = canonical(schema)
        with self._locked() as state:
            versions = state["subjects"].get(subject, [])
            if versions and int(versions[-1]) != next(
                (int(i) for i, s in state["schemas"].items() if s == text), None
            ):
                latest = json.loads(state["schemas"][str(versions[-1])])
                problems = backward_incompatibilities(schema, latest)
                if problems:
                    raise SchemaCompatibilityError(
                        f"schema for subject {subject!r} is not backward compatible: {'; '.join(problems)}"
                    )
            schema_id = next((int(i) for i, s in state["schemas"].items() if s == text), None)
            if schema_id is None:
                schema_id = max((int(i) for i in state["schemas"]), default=0) + 1
                state["schemas"][str(schema_id)] = text
            versions = state["subjects"].setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
        self._cache[schema_id] = schema
        return schema_id

    def schema(self, schema_id: int) -> AvroSchema:
        if schema_id not in self._cache:
            with self._locked() as state:
                text = state["schemas"].get(str(schema_id))
            if text is None:
                raise SchemaNotFoundError(f"schema id {schema_id} is not registered in {self._path}")
            self._cache[schema_id] = json.loads(text)
        return self._cache[schema_id]

    def subjects(self) -> list[str]:
        with self._locked() as state:
            return sorted(state["subjects"])

    def versions(self, subject: str) -> list[int]:
        with self._locked() as state:
            return list(state["subjects"].get(subject, []))


class ConfluentSchemaRegistry:
    """The Confluent Schema Registry REST API, through confluent-kafka's client (production profile)."""

    def __init__(self, url: str, config: dict[str, str] | None = None) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self._client = SchemaRegistryClient({"url": url, **(config or {})})
        self._cache: dict[int, AvroSchema] = {}

    def register(self, subject: str, schema: AvroSchema) -> int:
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema_id: int = self._client.register_schema(subject, Schema(canonical(schema), schema_type="AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 409:
                raise SchemaCompatibilityError(f"subject {subject!r}: {exc.error_message}") from None
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
