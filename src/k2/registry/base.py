"""What K2 needs from a schema registry, and how it identifies a schema: its canonical form."""

from __future__ import annotations

import json
from typing import Any, Protocol

import fastavro

from k2.errors import InvalidSchemaError
from k2.schemas import AvroSchema

# Parsing Canonical Form keeps only these attributes (Avro spec), in this order; K2 keeps the logical type too
_PCF_KEYS = ("name", "type", "fields", "symbols", "items", "values", "size")
_LOGICAL_KEYS = ("logicalType", "precision", "scale")
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


class SchemaRegistry(Protocol):
    """Maps schemas to the ids carried in the Confluent wire-format header (local and Confluent implementations)."""

    def register(self, subject: str, schema: AvroSchema) -> int: ...

    def schema(self, schema_id: int) -> AvroSchema: ...


def subject_for(topic: str) -> str:
    return f"{topic}-value"  # Confluent TopicNameStrategy


_REQUIRED = {"record": ("name", "fields"), "error": ("name", "fields"), "enum": ("name", "symbols"),
             "fixed": ("name", "size"), "array": ("items",), "map": ("values",)}


def validate_avro(schema: object) -> None:
    """Raise InvalidSchemaError, naming the problem, unless `schema` is valid Avro: every required attribute of
    the spec present (fastavro itself accepts a record without `fields`), and parsed by fastavro."""
    if not isinstance(schema, dict | list | str):
        raise InvalidSchemaError(f"an Avro schema is a JSON object, array or string, not {type(schema).__name__}")
    _check_required(schema, "schema")
    try:
        fastavro.parse_schema(schema, _write_hint=False)
    except Exception as exc:  # fastavro raises SchemaParseException, UnknownType, KeyError, TypeError …
        detail = f"unknown type {exc}" if type(exc).__name__ == "UnknownType" else str(exc) or type(exc).__name__
        raise InvalidSchemaError(f"not a valid Avro schema: {detail}") from None


def _check_required(node: object, where: str) -> None:
    if isinstance(node, list):
        for i, branch in enumerate(node):
            _check_required(branch, f"{where}[{i}]")
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind is None:
        raise InvalidSchemaError(f"not a valid Avro schema: {where} has no 'type'")
    if not isinstance(kind, str):
        _check_required(kind, f"{where}.type")
        return
    missing = [key for key in _REQUIRED.get(kind, ()) if key not in node]
    if missing:
        raise InvalidSchemaError(f"not a valid Avro schema: {kind} {where} lacks {', '.join(map(repr, missing))}")
    if kind in ("record", "error"):
        fields = node["fields"]
        if not isinstance(fields, list) or not all(isinstance(f, dict) and "name" in f and "type" in f
                                                   for f in fields):
            raise InvalidSchemaError(f"not a valid Avro schema: the fields of {where} are not a list of "
                                     "{name, type} objects")
        for field in fields:
            _check_required(field["type"], f"{where}.{field['name']}")
    elif kind == "array":
        _check_required(node["items"], f"{where}.items")
    elif kind == "map":
        _check_required(node["values"], f"{where}.values")


def canonical_form(schema: AvroSchema) -> str:
    """Avro's Parsing Canonical Form, with logical types kept: two schemas that read the same bytes the same way
    get the same text (and so the same id), whatever their docs, defaults, aliases or key order.

    Plain PCF drops `logicalType`, which would give `timestamp-millis` and `timestamp-micros` one id."""
    return json.dumps(_canonical(schema, "", set()), separators=(",", ":"))


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _canonical(node: Any, namespace: str, seen: set[str]) -> Any:
    if isinstance(node, str):
        return node if node in _PRIMITIVES else _full_name(node, namespace)
    if isinstance(node, list):
        return [_canonical(branch, namespace, seen) for branch in node]
    kind = node["type"]
    if isinstance(kind, dict | list) or (isinstance(kind, str) and kind not in _PRIMITIVES | {
            "record", "error", "enum", "fixed", "array", "map"}):
        return _canonical(kind, namespace, seen)
    out: dict[str, Any] = {}
    if kind in ("record", "error", "enum", "fixed"):
        namespace = node.get("namespace", namespace) if "." not in node["name"] else node["name"].rsplit(".", 1)[0]
        full = _full_name(node["name"].rsplit(".", 1)[-1], namespace)
        if full in seen:  # a named type is written out once; later uses are by name
            return full
        seen.add(full)
        out["name"] = full
    elif kind in _PRIMITIVES and not any(key in node for key in _LOGICAL_KEYS):
        return kind  # {"type": "int"} is written "int"
    out["type"] = "record" if kind == "error" else kind
    if kind in ("record", "error"):
        out["fields"] = [{"name": f["name"], "type": _canonical(f["type"], namespace, seen)} for f in node["fields"]]
    elif kind == "enum":
        out["symbols"] = list(node["symbols"])
    elif kind == "array":
        out["items"] = _canonical(node["items"], namespace, seen)
    elif kind == "map":
        out["values"] = _canonical(node["values"], namespace, seen)
    elif kind == "fixed":
        out["size"] = node["size"]
    for key in _LOGICAL_KEYS:
        if key in node:
            out[key] = node[key]
    return {k: out[k] for k in (*_PCF_KEYS, *_LOGICAL_KEYS) if k in out}
