"""Schema compatibility by Avro's schema resolution rules: can a reader with the new schema read every record
written with the old one (BACKWARD, the Confluent default)?

Follows the Avro specification's "Schema Resolution": numeric promotions (int → long, float, double; long → float,
double; float → double), string ↔ bytes, fields matched by name or reader alias, a reader field missing from the
writer needs a default, writer fields the reader lacks are ignored, enum symbols the reader lacks need an enum
default, unions resolve branch by branch. K2 adds one rule: a logical type (decimal precision/scale, timestamp
unit) may not change, since the bytes would still read but mean something else.
"""

from __future__ import annotations

from typing import Any

import fastavro

from k2.schemas import AvroSchema

_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
_NAMED = ("record", "error", "enum", "fixed")
_LOGICAL = ("logicalType", "precision", "scale")


def backward_problems(new: AvroSchema, old: AvroSchema) -> list[str]:
    """Why readers using `new` could not read data written with `old` (empty = compatible)."""
    reader = fastavro.parse_schema(new, _write_hint=False, expand=True)
    writer = fastavro.parse_schema(old, _write_hint=False, expand=True)
    problems: list[str] = []
    _resolve(reader, writer, _name(reader) or "schema", problems, set())
    return problems


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"]) if isinstance(schema["type"], str) else _kind(schema["type"])
    return str(schema)


def _name(schema: Any) -> str:
    return str(schema.get("name", "")).rsplit(".", 1)[-1] if isinstance(schema, dict) else ""


def _logical(schema: Any) -> tuple[object, ...]:
    return tuple(schema.get(key) for key in _LOGICAL) if isinstance(schema, dict) else (None, None, None)


def _readable(reader: Any, writer: Any, seen: set[tuple[str, str]]) -> bool:
    problems: list[str] = []
    _resolve(reader, writer, "", problems, seen)
    return not problems


def _resolve(reader: Any, writer: Any, path: str, problems: list[str], seen: set[tuple[str, str]]) -> None:
    r_kind, w_kind = _kind(reader), _kind(writer)
    if w_kind == "union":
        for branch in writer:
            if not _readable(reader, branch, seen):
                problems.append(f"{path}: the old schema's {_kind(branch)} branch has no match in the new schema")
        return
    if r_kind == "union":
        if not any(_readable(branch, writer, seen) for branch in reader):
            problems.append(f"{path}: the old {w_kind} matches no branch of the new union")
        return
    if r_kind != w_kind:
        if r_kind not in _PROMOTIONS.get(w_kind, ()):
            problems.append(f"{path}: type changed from {w_kind} to {r_kind}")
        return
    if _logical(reader) != _logical(writer):
        problems.append(f"{path}: logical type changed from {_describe(writer)} to {_describe(reader)}")
    if r_kind in _NAMED and _name(reader) != _name(writer):
        problems.append(f"{path}: name changed from {_name(writer)!r} to {_name(reader)!r}")
        return
    if r_kind in ("record", "error"):
        pair = (_name(reader), _name(writer))
        if pair not in seen:  # recursive types: each pair of records is compared once
            seen.add(pair)
            _resolve_record(reader, writer, path, problems, seen)
    elif r_kind == "enum":
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            problems.append(f"{path}: symbol(s) {missing} removed and the enum has no default")
    elif r_kind == "fixed" and reader["size"] != writer["size"]:
        problems.append(f"{path}: fixed size changed from {writer['size']} to {reader['size']}")
    elif r_kind == "array":
        _resolve(reader["items"], writer["items"], f"{path}[]", problems, seen)
    elif r_kind == "map":
        _resolve(reader["values"], writer["values"], f"{path}{{}}", problems, seen)


def _resolve_record(
    reader: dict[str, Any], writer: dict[str, Any], path: str, problems: list[str], seen: set[tuple[str, str]]
) -> None:
    written = {field["name"]: field for field in writer["fields"]}
    for field in reader["fields"]:
        names = [field["name"], *field.get("aliases", [])]
        match = next((written[n] for n in names if n in written), None)
        if match is None:
            if "default" not in field:
                problems.append(f"{path}.{field['name']}: new field has no default")
            continue
        _resolve(field["type"], match["type"], f"{path}.{field['name']}", problems, seen)


def _describe(schema: Any) -> str:
    logical = _logical(schema)
    if logical[0] is None:
        return "none"
    return str(logical[0]) + (f"({logical[1]},{logical[2]})" if logical[1] is not None else "")
