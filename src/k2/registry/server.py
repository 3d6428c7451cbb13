"""The subset of the Confluent Schema Registry REST API that clients use, served from the local file registry.

So the embedded profile and the tests exercise the same client path (confluent-kafka's SchemaRegistryClient)
as production does against a real registry. Loopback only; no auth. Every request gets an answer in Confluent's
error format ({"error_code", "message"}): a malformed request is refused, never stored, never left hanging.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from k2.errors import InvalidSchemaError, SchemaCompatibilityError, SchemaNotFoundError
from k2.registry.base import canonical_form
from k2.registry.local import LocalSchemaRegistry

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
MAX_BODY_BYTES = 1_000_000

log = logging.getLogger(__name__)


class _BadRequest(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class _Handler(BaseHTTPRequestHandler):
    registry: LocalSchemaRegistry
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: this is a library server
        return

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", _CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: int, message: str) -> None:
        self._send(status, {"error_code": code, "message": message})

    def _body(self) -> dict[str, Any]:
        """The request's JSON object; _BadRequest for anything else (the body is not read if its length is bad)."""
        header = self.headers.get("Content-Length")
        try:
            length = int(header) if header is not None else 0
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True  # the rest of the stream cannot be framed: answer, then close
            raise _BadRequest(400, 400, f"Content-Length {header!r} is not a non-negative integer")
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise _BadRequest(413, 413, f"request body of {length} bytes is over the {MAX_BODY_BYTES} byte limit")
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _BadRequest(422, 422, f"request body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _BadRequest(422, 422, f"request body must be a JSON object, not {type(body).__name__}")
        return body

    def _schema(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("schemaType", "AVRO") != "AVRO":
            raise _BadRequest(422, 42201, "Invalid schema: only AVRO schemas are supported")
        text = body.get("schema")
        if not isinstance(text, str):
            raise _BadRequest(422, 42201, "Invalid schema: 'schema' must be a string holding the schema's JSON")
        try:
            schema = json.loads(text)
        except ValueError as exc:
            raise _BadRequest(422, 42201, f"Invalid schema: not JSON ({exc})") from None
        if not isinstance(schema, dict):
            raise _BadRequest(422, 42201, "Invalid schema: K2 subjects hold Avro records (a JSON object)")
        return schema

    def _version(self, subject: str, version: str) -> dict[str, Any] | None:
        ids = self.registry.versions(subject)
        if not ids:
            return None
        index = len(ids) if version in ("latest", "-1") else int(version)
        if not 1 <= index <= len(ids):
            return None
        schema_id = ids[index - 1]
        return {"subject": subject, "version": index, "id": schema_id,
                "schema": json.dumps(self.registry.schema(schema_id)), "schemaType": "AVRO"}

    def _answer(self, route: Any) -> None:
        try:
            route()
        except _BadRequest as exc:
            self._error(exc.status, exc.code, str(exc))
        except InvalidSchemaError as exc:
            self._error(422, 42201, f"Invalid schema: {exc}")
        except Exception as exc:  # never drop the connection: answer in the registry's error format
            log.exception("schema registry request %s %s failed", self.command, self.path)
            self._error(500, 50001, f"internal error: {type(exc).__name__}")

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _get(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path == "/subjects":
            return self._send(200, self.registry.subjects())
        if path == "/config" or path.startswith("/config/"):
            return self._send(200, {"compatibilityLevel": "BACKWARD"})
        if match := re.fullmatch(r"/schemas/ids/(\d+)", path):
            try:
                schema = self.registry.schema(int(match.group(1)))
            except SchemaNotFoundError as exc:
                return self._error(404, 40403, str(exc))
            return self._send(200, {"schema": json.dumps(schema), "schemaType": "AVRO"})
        if match := re.fullmatch(r"/subjects/([^/]+)/versions", path):
            count = len(self.registry.versions(match.group(1)))
            if not count:
                return self._error(404, 40401, f"Subject '{match.group(1)}' not found.")
            return self._send(200, list(range(1, count + 1)))
        if match := re.fullmatch(r"/subjects/([^/]+)/versions/(latest|-1|\d+)", path):
            found = self._version(match.group(1), match.group(2))
            return self._send(200, found) if found else self._error(404, 40402, "Version not found.")
        return self._error(404, 404, f"no route {path}")

    def _post(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        body = self._body()
        if match := re.fullmatch(r"/subjects/([^/]+)/versions", path):
            schema = self._schema(body)
            try:
                return self._send(200, {"id": self.registry.register(match.group(1), schema)})
            except SchemaCompatibilityError as exc:
                return self._error(409, 409, str(exc))
        if match := re.fullmatch(r"/subjects/([^/]+)", path):
            subject, schema = match.group(1), self._schema(body)
            found = self.registry.find(subject, schema)
            if found is None:
                return self._error(404, 40403, "Schema not found")
            version, schema_id = found
            return self._send(200, {"subject": subject, "version": version, "id": schema_id,
                                    "schema": canonical_form(schema)})
        return self._error(404, 404, f"no route {path}")


def serve_registry(registry: LocalSchemaRegistry, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start the REST facade in a daemon thread; call `.shutdown()` on the result to stop it."""
    handler = type("RegistryHandler", (_Handler,), {"registry": registry})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="k2-registry").start()
    return server
