"""A file-backed schema registry for the embedded profile: ids are stable and shared by every process on the host."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from k2.errors import ConfigError, SchemaCompatibilityError, SchemaNotFoundError
from k2.registry.base import canonical_form, validate_avro
from k2.registry.compatibility import backward_problems
from k2.schemas import AvroSchema


class LocalSchemaRegistry:
    """Schemas in `<dir>/schemas.json`: id → schema text, subject → ids in version order.

    A schema's identity is its canonical form (k2.registry.base): re-registering the same schema with other docs
    returns the id it already has. A new version must be BACKWARD compatible with the subject's latest.
    """

    def __init__(self, directory: Path) -> None:
        self._path = directory / "schemas.json"
        self._lock_path = directory / ".lock"
        self._directory = directory
        self._cache: dict[int, AvroSchema] = {}

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            lock = open(self._lock_path, "w")  # noqa: SIM115 - closed below, after the state is written
        except OSError as exc:
            raise ConfigError(f"cannot use the schema registry in {self._directory}: {exc.strerror}") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read()
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                tmp = self._path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
                tmp.replace(self._path)

    def _read(self) -> dict[str, Any]:
        if not self._path.exists():
            return {"schemas": {}, "subjects": {}}
        try:
            state: dict[str, Any] = json.loads(self._path.read_text())
        except (ValueError, OSError) as exc:
            raise ConfigError(f"the schema registry file {self._path} is not readable JSON ({exc})") from None
        return state

    @staticmethod
    def _id_of(state: dict[str, Any], form: str) -> int | None:
        return next((int(i) for i, text in state["schemas"].items() if canonical_form(json.loads(text)) == form),
                    None)

    def register(self, subject: str, schema: AvroSchema) -> int:
        """Register `schema` under `subject`; a schema with the same canonical form always gets the same id."""
        validate_avro(schema)
        form = canonical_form(schema)
        with self._locked() as state:
            schema_id = self._id_of(state, form)
            versions = state["subjects"].setdefault(subject, [])
            if versions and schema_id != int(versions[-1]):
                latest = json.loads(state["schemas"][str(versions[-1])])
                problems = backward_problems(schema, latest)
                if problems:
                    raise SchemaCompatibilityError(
                        f"schema for subject {subject!r} is not backward compatible with version {len(versions)}: "
                        + "; ".join(problems)
                    )
            if schema_id is None:
                schema_id = max((int(i) for i in state["schemas"]), default=0) + 1
                state["schemas"][str(schema_id)] = json.dumps(schema, separators=(",", ":"), sort_keys=True)
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
            return sorted(s for s, versions in state["subjects"].items() if versions)

    def versions(self, subject: str) -> list[int]:
        with self._locked() as state:
            return list(state["subjects"].get(subject, []))

    def find(self, subject: str, schema: AvroSchema) -> tuple[int, int] | None:
        """(version, id) of `schema` under `subject`, compared by canonical form; None if it is not there."""
        validate_avro(schema)
        form = canonical_form(schema)
        with self._locked() as state:
            for version, schema_id in enumerate(state["subjects"].get(subject, []), start=1):
                if canonical_form(json.loads(state["schemas"][str(schema_id)])) == form:
                    return version, int(schema_id)
        return None

    def export_state(self) -> dict[str, Any]:
        """Every schema and subject (what a backup keeps): {"schemas": {id: text}, "subjects": {subject: [ids]}}."""
        with self._locked() as state:
            copied: dict[str, Any] = json.loads(json.dumps(state))
        return copied

    def import_state(self, saved: dict[str, Any]) -> int:
        """Merge a backup's schemas and subjects in; returns how many schemas were added. The ids records carry in
        Kafka must keep meaning the same schema: an id this registry already gives to another schema is refused."""
        added = 0
        with self._locked() as state:
            for schema_id, text in saved.get("schemas", {}).items():
                held = state["schemas"].get(schema_id)
                if held is None:
                    state["schemas"][schema_id] = text
                    added += 1
                elif canonical_form(json.loads(held)) != canonical_form(json.loads(text)):
                    raise SchemaCompatibilityError(
                        f"schema id {schema_id} means another schema in {self._path} than in the backup: restore "
                        "into a home whose registry is empty or holds the backup's schemas"
                    )
            for subject, ids in saved.get("subjects", {}).items():
                versions = state["subjects"].setdefault(subject, [])
                versions.extend(i for i in ids if i not in versions)
        return added
