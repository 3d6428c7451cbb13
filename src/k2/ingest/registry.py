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

    def versions(self, subject: str) -> list[int]:
        with self._locked() as state:
            return list(state["subjects"].get(subject, []))
