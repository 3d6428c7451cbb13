"""The subset of the Confluent Schema Registry REST API that clients use, served from the local file registry.

So the embedded profile and the tests exercise the same client path (confluent-kafka's SchemaRegistryClient)
as production does against a real registry. Loopback only; no auth.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from k2.ingest.registry import LocalSchemaRegistry, SchemaCompatibilityError, SchemaNotFoundError, canonical

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class _Handler(BaseHTTPRequestHandler):
    registry: LocalSchemaRegistry

    def log_message(self, format: str, *args: Any) -> None:  # quiet: this is a library server
        return

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", _CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: int, message: str) -> None:
        self._send(status, {"error_code": code, "message": message})

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 1_000_000:
            raise ValueError("request body over 1 MB")
        loaded: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
        return loaded

    def _version(self, subject: str, version: str) -> dict[str, Any] | None:
        ids = self.registry.versions(subject)
        if not ids:
            return None
        index = len(ids) if version in ("latest", "-1") else int(version)
        if not 1 <= index <= len(ids):
            return None
        schema_id = ids[index - 1]
        return {"subject": subject, "version": index, "id": schema_id,
                "schema": canonical(self.registry.schema(schema_id)), "schemaType": "AVRO"}

    def do_GET(self) -> None:
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
            return self._send(200, {"schema": canonical(schema), "schemaType": "AVRO"})
        if match := re.fullmatch(r"/subjects/([^/]+)/versions", path):
            count = len(self.registry.versions(match.group(1)))
            if not count:
                return self._error(404, 40401, f"Subject '{match.group(1)}' not found.")
            return self._send(200, list(range(1, count + 1)))
        if match := re.fullmatch(r"/subjects/([^/]+)/versions/(latest|-1|\d+)", path):
            found = self._version(match.group(1), match.group(2))
            return self._send(200, found) if found else self._error(404, 40402, "Version not found.")
        return self._error(404, 404, f"no route {path}")

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        try:
            body = self._body()
            schema = json.loads(body["schema"])
        except (ValueError, KeyError) as exc:
            return self._error(422, 42201, f"Invalid schema: {exc}")
        if body.get("schemaType", "AVRO") != "AVRO":
            return self._error(422, 42201, "only AVRO schemas are supported")
        if match := re.fullmatch(r"/subjects/([^/]+)/versions", path):
            try:
                return self._send(200, {"id": self.registry.register(match.group(1), schema)})
            except SchemaCompatibilityError as exc:
                return self._error(409, 409, str(exc))
        if match := re.fullmatch(r"/subjects/([^/]+)", path):
            subject, text = match.group(1), canonical(schema)
            for index, schema_id in enumerate(self.registry.versions(subject), start=1):
                if canonical(self.registry.schema(schema_id)) == text:
                    return self._send(200, {"subject": subject, "version": index, "id": schema_id, "schema": text})
            return self._error(404, 40403, "Schema not found")
        return self._error(404, 404, f"no route {path}")


def serve_registry(registry: LocalSchemaRegistry, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start the REST facade in a daemon thread; call `.shutdown()` on the result to stop it."""
    handler = type("RegistryHandler", (_Handler,), {"registry": registry})
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="k2-registry").start()
    return server
