"""The REST API over real HTTP (uvicorn on loopback) against the engine's own answers: paging returns every row once,
errors share one body with the right status, Arrow and Parquet bodies equal the JSON ones, concurrent requests are
safe, and the replay stream resumes from its cursor."""

from __future__ import annotations

import datetime as dt
import inspect
import io
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uvicorn
from fastapi import FastAPI

from k2.api.app import create_app
from k2.api.formats import ARROW, PARQUET
from k2.api.routes import analytics, lake, ticks
from k2.query.engine import QueryEngine
from k2.replay.engine import Replay, ReplayRequest
from k2.schemas import Dataset
from k2.settings import Settings
from tests.test_replay import _build

DAYS = {"start": "2026-03-01", "end": "2026-03-05"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    settings, _, _ = _build(tmp_path_factory.mktemp("api") / "home")
    # no broker: readiness says so; no rate limits (tests/test_ratelimit.py has theirs): the fuzzing here sends
    # hundreds of requests a second, and which of them a limit refused would depend on the machine's speed
    settings = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1", "api_rate_limit": "off"})
    with api_server(create_app(settings)) as base:
        yield base, settings


@contextmanager
def api_server(app: FastAPI) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port, in a thread: its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def get(base: str, path: str, params: dict[str, Any] | None = None,
        accept: str = "application/json") -> tuple[int, bytes, dict[str, str]]:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    request = urllib.request.Request(base + path + query, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def get_json(base: str, path: str, params: dict[str, Any] | None = None) -> tuple[int, Any]:
    status, data, _ = get(base, path, params)
    return status, json.loads(data)


def test_paging_returns_every_trade_once_in_order(served: tuple[str, Settings]) -> None:
    base, settings = served
    expected = QueryEngine(settings).trades(["AAA", "BBB"]).column("trade_id").to_pylist()
    params: dict[str, Any] = {"symbols": "AAA,BBB", "start": "2026-03-01", "end": "2026-03-05", "limit": 700}
    seen, pages = [], 0
    while True:
        status, page = get_json(base, "/v1/trades", params)
        assert status == 200, page
        seen += [row["trade_id"] for row in page["data"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        params["page_token"] = page["next_cursor"]
    assert seen == expected and pages == -(-len(expected) // 700)


def test_errors_share_one_body_and_status(served: tuple[str, Settings]) -> None:
    base, _ = served
    cases = [
        ("/v1/bars", {"symbols": "AAX"}, 404, "unknown_symbol", "AAA"),  # suggests the close symbol
        ("/v1/bars", {"symbols": "AAA", "interval": "7 fortnights"}, 400, "bad_query", "interval"),
        ("/v1/trades/last", {}, 422, "invalid_request", "at"),
        ("/v1/trades", {"start": "yesterday"}, 422, "invalid_request", "start"),
        ("/v1/trades", {"limit": 100_000}, 422, "invalid_request", "limit"),
        ("/v1/trades", {"start": "2026-01-01", "end": "2026-06-01"}, 400, "range_too_large", "days"),
        ("/v1/trades", {"start": "2026-03-03", "end": "2026-03-02"}, 400, "bad_query", "not before"),
        ("/v1/trades", {**DAYS, "page_token": "k2p1.bm9wZQ"}, 400, "bad_page_token", "next_cursor"),
        ("/v1/trades", {**DAYS, "snapshot_id": 42}, 404, "snapshot_not_found", "snapshots"),
        ("/v1/quotes", {"symbols": "AAA"}, 400, "range_required", "start and end"),
        ("/v1/nothing-here", {}, 404, "not_found", ""),
        ("/v1/replay", {"speed": "-3"}, 400, "bad_speed", "positive"),
    ]
    for path, params, status, code, hint in cases:
        got, body = get_json(base, path, params)
        assert got == status, (path, params, body)
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
        assert body["error"]["code"] == code and hint in body["error"]["message"], (path, body)
        assert "Traceback" not in json.dumps(body)


def test_a_token_from_another_query_is_refused(served: tuple[str, Settings]) -> None:
    base, _ = served
    _, first = get_json(base, "/v1/trades", {**DAYS, "symbols": "AAA", "limit": 10})
    status, body = get_json(base, "/v1/trades", {**DAYS, "symbols": "BBB", "limit": 10,
                                                  "page_token": first["next_cursor"]})
    assert status == 400 and body["error"]["code"] == "page_token_mismatch"


def test_arrow_and_parquet_bodies_equal_the_engine(served: tuple[str, Settings]) -> None:
    base, settings = served
    expected = QueryEngine(settings).bars(["AAA", "CCC"], "15m")
    params = {"symbols": "AAA,CCC", "interval": "15m"}
    status, data, headers = get(base, "/v1/bars", params, accept=ARROW)
    assert status == 200 and headers["content-type"] == ARROW
    assert pa.ipc.open_stream(data).read_all().equals(expected)
    status, data, _ = get(base, "/v1/bars", params, accept=PARQUET)
    assert status == 200 and pq.read_table(io.BytesIO(data)).equals(expected)
    _, body = get_json(base, "/v1/bars", params)
    assert [row["vwap"] for row in body["data"]] == [str(v) for v in expected.column("vwap").to_pylist()]


def test_concurrent_requests_answer_like_the_engine(served: tuple[str, Settings]) -> None:
    base, settings = served
    engine = QueryEngine(settings)
    jobs = []
    for i in range(24):
        symbol = ["AAA", "BBB", "CCC"][i % 3]
        if i % 3 == 0:
            jobs.append(("/v1/bars", {"symbols": symbol, "interval": "1h"},
                         [str(v) for v in engine.bars([symbol], "1h").column("close").to_pylist()], "close"))
        elif i % 3 == 1:
            at = "2026-03-03T15:00:00+00:00"
            last = engine.last(Dataset.TRADES, [symbol], dt.datetime.fromisoformat(at))
            jobs.append(("/v1/trades/last", {"symbols": symbol, "at": at}, last.column("trade_id").to_pylist(),
                         "trade_id"))
        else:
            jobs.append(("/v1/quotes", {**DAYS, "symbols": symbol, "limit": 50},
                         engine.quotes([symbol], limit=50).column("sequence").to_pylist(), "sequence"))

    def call(job: tuple[str, dict[str, Any], list[Any], str]) -> bool:
        path, params, want, column = job
        status, body = get_json(base, path, params)
        return status == 200 and [row[column] for row in body["data"]] == want

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(call, jobs * 2))


def test_routes_never_block_the_event_loop(served: tuple[str, Settings]) -> None:
    """Every /v1 route is a plain function: FastAPI runs it in its thread pool, never on the event loop."""
    from k2.api.routes import analytics, health, lake, stream, ticks

    routers = (ticks.router, analytics.router, lake.router, stream.router, health.router)
    endpoints = [route.endpoint for router in routers for route in router.routes]  # type: ignore[attr-defined]
    assert len(endpoints) >= 17 and not any(inspect.iscoroutinefunction(e) for e in endpoints)


def _sse(data: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    events, cursors = [], []
    for block in data.decode().split("\n\n"):
        if block.startswith("event: cursor"):
            cursors.append(json.loads(block.split("data: ", 1)[1]))
        elif block.startswith("data: "):
            events.append(json.loads(block[6:]))
    return events, cursors


def test_replay_streams_in_order_and_resumes_from_its_cursor(served: tuple[str, Settings]) -> None:
    base, settings = served
    expected = [row["sequence"] for row in Replay(settings, ReplayRequest(symbols=("BBB",))).events()]
    status, data, headers = get(base, "/v1/replay", {"symbols": "BBB", "limit": 300}, accept="text/event-stream")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    first, cursors = _sse(data)
    assert [e["sequence"] for e in first] == expected[:300]
    _, data, _ = get(base, "/v1/replay", {"cursor": cursors[-1]}, accept="text/event-stream")
    rest, _ = _sse(data)
    assert [e["sequence"] for e in first + rest] == expected


def test_health_metrics_and_openapi(served: tuple[str, Settings]) -> None:
    base, _ = served
    assert get_json(base, "/health/live") == (200, {"status": "ok", "checks": {}})
    status, body = get_json(base, "/health/ready")
    assert status == 503 and body["checks"]["catalog"] == "ok" and body["checks"]["kafka"].startswith("failed")
    get(base, "/v1/bars", {"symbols": "AAA", "interval": "1h"})
    assert get(base, "/wp-admin/setup.php")[0] == 404  # a scanner's path: one shared label value, not its own
    status, data, _ = get(base, "/metrics", accept="text/plain")
    text = data.decode()
    assert status == 200 and 'k2_api_request_seconds_count{method="GET",route="/v1/bars"}' in text
    assert 'k2_query_seconds_count{query="bars"}' in text and 'k2_api_responses_total{route="/v1/bars",status="200"}' \
        in text
    assert 'k2_api_responses_total{route="unmatched",status="404"}' in text and "wp-admin" not in text
    status, spec = get_json(base, "/openapi.json")
    paths = set(spec["paths"])
    assert {"/v1/trades", "/v1/quotes", "/v1/bars", "/v1/vwap", "/v1/summary", "/v1/asof", "/v1/trades/last",
            "/v1/quotes/last", "/v1/symbols", "/v1/reference", "/v1/corporate-actions", "/v1/snapshots",
            "/v1/quality", "/v1/replay", "/health/live", "/health/ready", "/metrics"} <= paths
    assert get(base, "/docs", accept="text/html")[0] == 200


def test_docs_api_md_is_generated_from_the_openapi_document(served: tuple[str, Settings]) -> None:
    from k2.api.docs import render

    written = Path(__file__).parent.parent.joinpath("docs", "api.md").read_text()
    assert written == render(create_app(served[1]).openapi()), "run: python -m k2.api.docs > docs/api.md"


def test_k2_serve_runs_several_workers_on_loopback(served: tuple[str, Settings]) -> None:
    import os
    import socket
    import subprocess
    import sys

    _, settings = served
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "K2_HOME": str(settings.home)}
    server = subprocess.Popen([sys.executable, "-m", "k2.cli", "serve", "--port", str(port), "--workers", "2"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base, deadline, status = f"http://127.0.0.1:{port}", time.monotonic() + 60, 0
        while time.monotonic() < deadline and status != 200:
            try:
                status, body = get_json(base, "/v1/symbols")
            except OSError:
                time.sleep(0.2)
        assert status == 200 and {row["symbol"] for row in body["data"]} == {"AAA", "BBB", "CCC"}
        with ThreadPoolExecutor(4) as pool:
            assert all(code == 200 for code, _ in pool.map(lambda _: get_json(base, "/health/live"), range(20)))
    finally:
        server.terminate()
        server.wait(30)


JSON_ROUTES = [
    ("/v1/trades", {**DAYS, "symbols": "AAA,BBB", "limit": 300}),
    ("/v1/quotes", {**DAYS, "symbols": "CCC", "limit": 300}),
    ("/v1/bars", {"symbols": "AAA,CCC", "interval": "5m"}),
    ("/v1/vwap", {"symbols": "AAA,BBB", "interval": "1h"}),
    ("/v1/summary", {"symbols": "AAA"}),
    ("/v1/trades/last", {"at": "2026-03-03T15:00:00.5Z"}),
    ("/v1/quotes/last", {"at": "2026-03-03T15:00:00Z"}),
    ("/v1/asof", {**DAYS, "symbols": "BBB"}),
    ("/v1/symbols", {}),
    ("/v1/snapshots", {"dataset": "trades"}),
]


@pytest.mark.parametrize(("path", "params"), JSON_ROUTES, ids=[p for p, _ in JSON_ROUTES])
def test_json_bodies_are_the_bytes_the_response_model_writes(served: tuple[str, Settings], path: str,
                                                             params: dict[str, Any]) -> None:
    """JSON is encoded column-wise (formats.json_body), not through the response model: byte for byte the same."""
    base, _ = served
    model = next(r.response_model for router in (ticks.router, analytics.router, lake.router)
                 for r in router.routes if "/v1" + getattr(r, "path", "") == path)
    status, arrow, headers = get(base, path, params, accept=ARROW)
    assert status == 200, arrow
    table = pa.ipc.open_stream(arrow).read_all()
    assert table.num_rows > 0  # an empty page would prove nothing
    status, body, _ = get(base, path, params)
    cursor = json.loads(body)["next_cursor"]
    assert cursor == headers.get("K2-Next-Cursor", headers.get("k2-next-cursor"))
    expected = model.model_validate({"data": table.to_pylist(), "next_cursor": cursor}).model_dump_json()
    assert body.decode() == expected


@pytest.mark.parametrize("small_rows", [0, 64], ids=["column-wise", "row-wise"])
def test_json_body_of_reference_data_is_the_response_model_s(small_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference data (empty in the served lake): null-able fields, dates, decimals, with and without values; both
    encoders (point answers are encoded row-wise, larger ones column-wise)."""
    from k2.api import formats

    monkeypatch.setattr(formats, "SMALL_ROWS", small_rows)
    from k2.api.formats import json_body
    from k2.kafka.producer import with_ingest_ts
    from k2.schemas import arrow_schema
    from k2.sources.generator import generate_reference

    instruments = with_ingest_ts(generate_reference(["AAA", "BBB"]))
    schema = arrow_schema(Dataset.REFERENCE)
    table = pa.table({name: instruments.column(name) if name in instruments.column_names else
                      pa.nulls(len(instruments), schema.field(name).type) for name in schema.names}, schema=schema)
    model = next(r.response_model for r in lake.router.routes if getattr(r, "path", "") == "/reference")
    expected = model.model_validate({"data": table.to_pylist(), "next_cursor": "x"}).model_dump_json()
    assert json_body(table, "x").decode() == expected


def _post_json(base: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_snapshot_tag_is_made_once_listed_and_never_moved(served: tuple[str, Settings]) -> None:
    base, _ = served
    _, history = get_json(base, "/v1/snapshots", {"dataset": "quotes"})
    first, newest = history["data"][-1]["snapshot_id"], history["data"][0]["snapshot_id"]
    status, made = _post_json(base, "/v1/snapshots/tags", {"dataset": "quotes", "snapshot_id": first,
                                                          "name": "api-test.1"})
    assert (status, made) == (201, {"dataset": "quotes", "snapshot_id": first, "name": "api-test.1"})
    _, listed = get_json(base, "/v1/snapshots", {"dataset": "quotes"})
    assert {s["snapshot_id"]: s["tags"] for s in listed["data"]}[first] == "api-test.1"
    assert all(s["compaction"] is None for s in listed["data"])  # appends only in this lake
    status, body = _post_json(base, "/v1/snapshots/tags", {"dataset": "quotes", "snapshot_id": newest,
                                                          "name": "api-test.1"})
    assert status == 409 and body["error"]["code"] == "conflict" and "already has" in body["error"]["message"]
    status, body = _post_json(base, "/v1/snapshots/tags", {"dataset": "quotes", "snapshot_id": 42, "name": "x"})
    assert status == 404 and body["error"]["code"] == "snapshot_not_found"
    status, body = _post_json(base, "/v1/snapshots/tags", {"dataset": "quotes", "snapshot_id": first,
                                                          "name": "no spaces please"})
    assert status == 400 and "letters, digits" in body["error"]["message"]
    # a time-travel query by the tagged snapshot answers as before
    assert get_json(base, "/v1/quotes", {**DAYS, "snapshot_id": first, "limit": 5})[0] == 200


def test_the_pipeline_routes_say_how_to_get_a_broker_when_there_is_none(tmp_path: Path) -> None:
    with api_server(create_app(Settings(home=tmp_path / "home", api_rate_limit="off"))) as base:
        for path in ("/v1/pipeline/lag", "/v1/pipeline/dead-letters"):
            status, body = get_json(base, path)
            assert status == 503 and body["error"]["code"] == "kafka_unavailable", body
            assert "k2 broker start" in body["error"]["message"] and "K2_KAFKA_BOOTSTRAP" in body["error"]["message"]
