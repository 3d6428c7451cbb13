"""OpenTelemetry tracing end to end: real `k2` processes export to a loopback OTLP/HTTP receiver (this test decodes
the protobuf requests), and the parent links must tie one batch from `k2 load` through `k2 ingest` (trace context in
the Kafka record headers) and an API request to the query under it (trace context in the HTTP headers). With no
endpoint configured, `k2 query` imports no OpenTelemetry module at all."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from k2.kafka.broker import BrokerState, free_port
from k2.obs.tracing import requested
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades, write_generic_csv
from tests.test_cli import _topics_env, run_k2
from tests.test_replay import _land

DAY = dt.date(2026, 1, 5)
TRADES, CHUNK_ROWS = 4_000, 1_000  # several producer batches, so several producer traces


@dataclass(frozen=True)
class Received:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    links: tuple[tuple[str, str], ...]  # (trace id, span id)
    attributes: dict[str, object]


def _decode(body: bytes) -> list[Received]:
    request = ExportTraceServiceRequest.FromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(Received(
                    resource.get("service.name", ""), span.name, span.kind, span.trace_id.hex(), span.span_id.hex(),
                    span.parent_span_id.hex(), tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                    {a.key: getattr(a.value, a.value.WhichOneof("value") or "string_value") for a in span.attributes},
                ))
    return spans


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: POST /v1/traces with an ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
                with receiver._lock:
                    receiver.spans.extend(_decode(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def named(self, name: str) -> list[Received]:
        with self._lock:
            return [s for s in self.spans if s.name == name]

    def wait_for(self, found: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not found():
            assert time.monotonic() < deadline, f"spans not received; got {sorted({s.name for s in self.spans})}"
            time.sleep(0.05)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def _without_otel() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def _tracing_env(receiver: Receiver, service: str) -> dict[str, str]:
    # a short batch delay: the API server's spans arrive while it runs (the others are flushed at exit anyway)
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": service,
            "OTEL_BSP_SCHEDULE_DELAY": "100"}


def _chain(span: Received, by_id: dict[str, Received]) -> list[str]:
    """Names of the span's ancestors among the received spans, nearest first."""
    names = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        names.append(span.name)
    return names


def test_tracing_is_requested_by_an_otlp_endpoint_only() -> None:
    assert not requested({})
    assert requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318"})
    assert requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://localhost:4318/v1/traces"})
    assert not requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318", "OTEL_SDK_DISABLED": "true"})
    assert not requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318", "OTEL_TRACES_EXPORTER": "none"})


def test_a_batch_is_one_trace_from_load_to_commit_and_a_request_continues_the_callers(
    broker: BrokerState, home: Path, tmp_path: Path, receiver: Receiver,
) -> None:
    env = {**_without_otel(), **_topics_env(broker), "K2_CSV_CHUNK_ROWS": str(CHUNK_ROWS)}
    csv = tmp_path / "trades.csv"
    write_generic_csv(generate_trades(DAY, ["ALPHA", "BRAVO", "CHARL"], TRADES, seed=7), str(csv))
    loaded = run_k2("load", str(csv), home=home, env={**env, **_tracing_env(receiver, "k2-load")})
    assert loaded.returncode == 0, loaded.stderr
    ingested = run_k2("ingest", "--dataset", "trades", home=home, env={**env, **_tracing_env(receiver, "k2-ingest")})
    assert ingested.returncode == 0, ingested.stderr
    assert f"landed {TRADES:,} rows" in ingested.stdout, ingested.stdout

    produced = receiver.named("k2.produce")  # each process flushed its spans as it exited
    assert len(produced) >= TRADES // CHUNK_ROWS
    assert sum(int(str(s.attributes["messaging.batch.message_count"])) for s in produced) == TRADES
    assert {s.service for s in produced} == {"k2-load"} and {s.kind for s in produced} == {ProtoSpan.SPAN_KIND_PRODUCER}
    producer_spans = {(s.trace_id, s.span_id) for s in produced}
    consumed = receiver.named("k2.ingest.consume")
    assert consumed and {s.kind for s in consumed} == {ProtoSpan.SPAN_KIND_CONSUMER}
    # parent: the first record's producer span, through the Kafka headers; links: the batch's other producer spans
    for span in consumed:
        assert (span.trace_id, span.parent_id) in producer_spans, span
        assert set(span.links) <= producer_spans
    assert {(s.trace_id, s.parent_id) for s in consumed} | {link for s in consumed for link in s.links} == \
        producer_spans, "every producer batch is the parent of, or linked from, the batch that consumed it"
    by_id = {s.span_id: s for s in receiver.spans}
    commits = receiver.named("k2.ingest.commit")
    assert commits and sum(int(str(s.attributes["k2.rows"])) for s in commits) == TRADES
    for span in [*commits, *receiver.named("k2.ingest.decode")]:
        assert _chain(span, by_id)[:2] == ["k2.ingest.consume", "k2.produce"], span
        assert span.service == "k2-ingest"

    _request_under_a_callers_trace(env, home, receiver)


def _request_under_a_callers_trace(env: dict[str, str], home: Path, receiver: Receiver) -> None:
    """`k2 serve`: a request carrying a traceparent gets a server span in the caller's trace, and the engine's query
    a child span of it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "k2.cli", "serve", "--port", str(port)],
                              env={**env, "K2_HOME": str(home), **_tracing_env(receiver, "k2-api")},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_live(base, server)
        trace_id, caller_id = secrets.token_hex(16), secrets.token_hex(8)
        day = f"start={DAY}T00:00:00Z&end={DAY + dt.timedelta(days=1)}T00:00:00Z"
        request = urllib.request.Request(f"{base}/v1/trades?symbols=ALPHA&{day}&limit=10",
                                         headers={"traceparent": f"00-{trace_id}-{caller_id}-01"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
        receiver.wait_for(lambda: any(s.service == "k2-api" for s in receiver.named("k2.query.ticks")))
    finally:
        server.terminate()
        server.wait(timeout=30)
    served = [s for s in receiver.named("GET /v1/trades") if s.trace_id == trace_id]
    assert len(served) == 1, receiver.spans
    request_span = served[0]
    assert request_span.parent_id == caller_id and request_span.kind == ProtoSpan.SPAN_KIND_SERVER
    assert request_span.attributes["http.route"] == "/v1/trades"
    assert request_span.attributes["http.response.status_code"] == 200
    query = next(s for s in receiver.named("k2.query.ticks") if s.trace_id == trace_id)
    assert query.parent_id == request_span.span_id and query.service == "k2-api"


def _wait_until_live(base: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        assert time.monotonic() < deadline, "k2 serve did not start"
        try:
            with urllib.request.urlopen(f"{base}/health/live", timeout=5):
                return
        except OSError:
            time.sleep(0.1)


PROBE = ("import atexit, sys\n"
         "atexit.register(lambda: print('OTEL', ','.join(sorted(m for m in sys.modules if m.startswith("
         "'opentelemetry'))) or '-', file=sys.stderr))\n"
         "sys.argv = ['k2', 'query', 'trades', '-s', 'ALPHA', '-f', 'csv']\n"
         "from k2.cli.entry import main\n"
         "main()\n")


def _query(home: Path, env: dict[str, str]) -> set[str]:
    """The OpenTelemetry modules a `k2 query trades` process imported."""
    done = subprocess.run([sys.executable, "-c", PROBE], env={**env, "K2_HOME": str(home)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1 + 500
    modules = next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("OTEL "))
    return set() if modules == "-" else set(modules.split(","))


def test_k2_query_imports_no_opentelemetry_without_an_endpoint(settings: Settings, receiver: Receiver) -> None:
    _land(settings, Dataset.TRADES, generate_trades(DAY, ["ALPHA"], 500, seed=3), commits=1)
    assert _query(settings.home, _without_otel()) == set()

    traced = _query(settings.home, {**_without_otel(), "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
    assert "opentelemetry.sdk.trace" in traced  # the probe sees what tracing imports: its empty answer above counts
    spans = receiver.named("k2.query.ticks")
    assert len(spans) == 1 and spans[0].parent_id == "" and spans[0].service == "k2"
